"""Progress bars for the long commands (training, benchmarks): on standard error, off when quiet."""
import sys

from tqdm import tqdm


def progress_bar(total, desc=None, unit="it", enabled=True, file=None):
    """A tqdm bar on ``file`` (standard error by default); a silent one when not ``enabled``."""
    return tqdm(total=total, desc=desc, unit=unit, file=file if file is not None else sys.stderr,
                disable=not enabled, mininterval=0.5)


def printer_beside(bar, out):
    """``out(line)``, lifting an active bar off the terminal while the line is written."""
    def write(line):
        if bar.disable:
            return out(line)
        with tqdm.external_write_mode():
            return out(line)

    return write
