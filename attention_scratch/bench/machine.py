"""The machine a benchmark ran on (chapter 12): processor, vector instructions, cores, BLAS.

The benchmark prints :func:`summary` above every table and stores :func:`describe` in its
JSON, so that a number never travels without the machine that made it. Needs neither
Numba nor SciPy (SciPy's BLAS is listed when SciPy is installed).
"""
import contextlib
import os
import platform
from pathlib import Path

# Vector instruction sets by the flag Linux lists in /proc/cpuinfo, widest first.
_ISA_FLAGS = (("avx512f", "avx512"), ("avx2", "avx2"), ("avx", "avx"), ("sse4_2", "sse4.2"),
              ("asimd", "neon"))


def _cpuinfo():
    """``(model, flags)`` from ``/proc/cpuinfo``; ``(None, set())`` where there is none."""
    model, flags = None, set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, flags


def cpu_model():
    """The processor's model name (``/proc/cpuinfo``, else ``platform.processor()``)."""
    model, _ = _cpuinfo()
    return model or platform.processor() or platform.machine() or "unknown CPU"


def vector_isa():
    """The widest vector instruction set the processor reports: ``"avx512"``, ``"avx2"``, ...

    ``"unknown"`` where the operating system does not list the flags (not Linux).
    """
    _, flags = _cpuinfo()
    return next((name for flag, name in _ISA_FLAGS if flag in flags), "unknown")


def fma():
    """Whether the processor has fused multiply-add instructions (``None``: not known)."""
    _, flags = _cpuinfo()
    return ("fma" in flags) if flags else None


def cores():
    """The cores this process may run on (its affinity mask where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def blas_libraries():
    """The loaded BLAS libraries: API, version, kernel ("architecture"), threads and file.

    Loads SciPy's BLAS first when SciPy is installed (the one Numba's ``np.dot`` calls),
    so that both NumPy's and SciPy's OpenBLAS are listed; ``[]`` without threadpoolctl.
    """
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    with contextlib.suppress(ImportError):
        import scipy.linalg.cython_blas  # noqa: F401
    keys = ("internal_api", "version", "architecture", "threading_layer", "num_threads",
            "filepath")
    return [{key: info.get(key) for key in keys} for info in threadpool_info()
            if info.get("user_api") == "blas"]


def describe():
    """One dict: ``cpu``, ``isa``, ``fma``, ``cores``, ``blas`` (:func:`blas_libraries`)."""
    return {"cpu": cpu_model(), "isa": vector_isa(), "fma": fma(), "cores": cores(),
            "blas": blas_libraries()}


def summary(info=None):
    """A one-line summary of :func:`describe`, for the top of a table."""
    info = describe() if info is None else info
    blas = "; ".join(f"{b['internal_api']} {b['version']} kernel {b['architecture']}, "
                     f"{b['num_threads']} threads" for b in info["blas"]) or "BLAS unknown"
    return (f"{info['cpu']}, {info['cores']} cores, {info['isa']}"
            f"{'+fma' if info.get('fma') else ''}; {blas}")
