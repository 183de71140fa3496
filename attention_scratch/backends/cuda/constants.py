"""The constants the CUDA kernels and the Python side share, read from ``flash_constants.cuh``.

Each number is written once, in the header the kernels include; this module parses its
``#define NAME <integer>`` lines, so the launch planning (:mod:`.driver`), the CPU
emulation and the NumPy model of the kernel (:mod:`.kernel_model`) cannot drift from
the kernels.
"""
import re
from pathlib import Path

HEADER = Path(__file__).resolve().parent / "flash_constants.cuh"


def read_constants(path=HEADER):
    """``{name: int}`` of every ``#define NAME <integer>`` line of ``path``."""
    return {name: int(value) for name, value in
            re.findall(r"^#define\s+(\w+)\s+(-?\d+)\b", Path(path).read_text(), re.M)}


_VALUES = read_constants()
FLASH_MAX_THREADS = _VALUES["FLASH_MAX_THREADS"]
FLASH_KC = _VALUES["FLASH_KC"]
FLASH_BWD_ROWS = _VALUES["FLASH_BWD_ROWS"]
MMA_WARPS = _VALUES["MMA_WARPS"]
MMA_MT = _VALUES["MMA_MT"]
MMA_BQ = _VALUES["MMA_BQ"]
MMA_BK_SMALL_D = _VALUES["MMA_BK_SMALL_D"]
MMA_BK_LARGE_D = _VALUES["MMA_BK_LARGE_D"]
WMMA_WARPS = _VALUES["WMMA_WARPS"]
WMMA_BQ = _VALUES["WMMA_BQ"]
WMMA_BK = _VALUES["WMMA_BK"]
