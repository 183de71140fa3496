"""Numba's on-disk cache of the kernels, kept in step with all of their sources (chapter 12).

``cache=True`` stores each compiled function in the ``__pycache__`` folder beside its source,
stamped with the time and size of that one file. The kernels inline functions of other files
(the exponential of :mod:`.exp`, the loops of :mod:`.tiles`, the block arithmetic of
:mod:`attention_scratch.bands`), and Numba does not look at those: after an edit of ``exp.py``
alone, the kernels of ``forward.py`` still load from the cache with the old exponential inside
(chapter 12's profile of a new polynomial measured the old one until the cache was removed).
:func:`drop_if_stale` removes the cached kernels of a folder whenever any of the sources has
changed since they were written; :mod:`.exp`, which every kernel module imports first, runs it
once per process before any kernel is loaded.
"""
import contextlib
import functools
import hashlib
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = (*sorted(HERE.glob("*.py")), HERE.parent.parent / "bands.py")
STAMP = "kernel-sources.sha256"


def sources_fingerprint(sources=SOURCES):
    """A hash of the names and contents of ``sources`` (by default: this folder's modules and
    ``bands.py``)."""
    digest = hashlib.sha256()
    for path in sources:
        digest.update(Path(path).name.encode() + b"\0" + Path(path).read_bytes())
    return digest.hexdigest()


def drop_if_stale(folder, fingerprint):
    """Remove Numba's cache files (``*.nbi``, ``*.nbc``) from ``folder`` unless its stamp says they
    were written from sources with ``fingerprint``; then stamp it. Returns whether it removed.

    Another process may do the same at the same moment: a file it has just removed, or one
    that is missing when Numba looks, only means one more compilation.
    """
    folder = Path(folder)
    stamp = folder / STAMP
    try:
        if stamp.read_text() == fingerprint:
            return False
    except OSError:
        pass  # no stamp yet
    for path in [*folder.glob("*.nbi"), *folder.glob("*.nbc")]:
        with contextlib.suppress(OSError):  # removed by another process, or a read-only folder
            path.unlink()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = stamp.with_name(f"{STAMP}.{os.getpid()}")
        partial.write_text(fingerprint)
        os.replace(partial, stamp)
    except OSError:
        pass  # a read-only install: Numba caches elsewhere, or not at all
    return True


@functools.cache
def ensure_fresh():
    """:func:`drop_if_stale` on this folder's ``__pycache__``, once per process."""
    return drop_if_stale(HERE / "__pycache__", sources_fingerprint())
