"""The threads around a Numba kernel: the kernels' BLAS held to one thread, OpenBLAS's idle
workers stopped, and nothing left spinning after it.

The Numba kernels run one work item per core and call BLAS from inside each item. Two
thread pools must then stay out of their way, and the kernel must not leave one in the
way of what the program runs next:

1. **BLAS's own threads.** An OpenBLAS that split every tile product over its own
   threads would fight the kernel's threads for the same cores, so for the duration of
   a kernel the BLAS that the kernels call is held to one thread (``threadpoolctl``).
   Numba's ``np.dot`` calls it through ``scipy.linalg.cython_blas``: with the wheels
   from PyPI that is SciPy's own OpenBLAS, apart from NumPy's (:func:`kernel_blas_files`).
2. **OpenBLAS workers still spinning.** After a multithreaded call (any ``a @ b`` in
   NumPy), OpenBLAS's worker threads busy-wait for the next one for about
   ``2**28`` processor cycles, a tenth of a second, before they sleep. Holding BLAS to
   one thread does not stop them: a kernel started in that window finds a core taken.
   On a 2-core machine that made the forward pass 1.4-1.9 times slower in a plain
   process (``benchmarks/openblas_spin.py``). ``make bench`` used to hide it with the
   environment variable ``OPENBLAS_THREAD_TIMEOUT``, which OpenBLAS reads once, when
   it is loaded; a library cannot set it for its user. So :func:`blas_one_thread` asks
   NumPy's OpenBLAS (each pthreads OpenBLAS that is not the kernels') to stop its worker
   threads (``blas_thread_shutdown_``, the function OpenBLAS itself runs before every
   ``fork``); OpenBLAS starts them again, lazily, at its next multithreaded call.
3. **Workers started by changing the limit.** Setting the thread count of an OpenBLAS
   whose workers were stopped starts fresh ones, and they spin for their tenth of a
   second. The first version stopped every OpenBLAS, the kernels' included, so lifting
   the limit after the kernel started workers that spun through whatever the program
   ran next: a PyTorch backward pass run right after the Numba backward took 1.1 to
   2 times as long as alone (2 cores, N = 1024 and 2048; ``benchmarks/openblas_spin.py
   --after``), and ``make bench``, which runs PyTorch right after the Numba kernel in
   every repetition, timed PyTorch slow. So the kernels' own OpenBLAS is only held to one
   thread, never stopped, and its sleeping workers stay asleep when the limit is lifted.
   Where the kernels' BLAS is NumPy's too (a conda environment: no library is SciPy's
   own), it must be stopped before the kernel, and it is stopped once more after the
   limit is lifted.

On the 2-core AMD EPYC of chapter 12 the whole of :func:`blas_one_thread`, entered and left,
costs 0.02 to 0.04 ms when NumPy's workers are already gone and about 0.1 ms right after a
NumPy product; the first version, which stopped and restarted both libraries, cost 0.25 ms on
a quiet machine and up to 2.4 ms on a busy one, because each stop waits for the fresh
threads to start (the conda case still pays one such cycle). A kernel of less work than
:data:`STOP_MIN_FLOPS` is not worth it: there the workers are left alone.

Stopping the workers is safe when no other thread of the process is inside OpenBLAS at
that moment, as for a ``fork``. A program that runs NumPy products in other threads
while it calls the Numba backend can switch it off with
``ATTENTION_SCRATCH_BLAS_SHUTDOWN=0`` (the kernels stay correct, only slower right
after a NumPy product). Workers of SciPy's OpenBLAS that spin after a multithreaded
SciPy product are not stopped: such products are rare next to NumPy's.
"""
import contextlib
import ctypes
import os
import threading
from pathlib import Path

_SWITCH = "ATTENTION_SCRATCH_BLAS_SHUTDOWN"
STOP_MIN_FLOPS = 1e8  # about a millisecond of kernel on two cores: below it, stopping costs more
_lock = threading.RLock()  # one kernel's limits at a time; nested use is fine
_state = {}  # "controller": threadpoolctl's controller; "shutdowns": the C functions


def _controller():
    """threadpoolctl's view of the loaded BLAS libraries, made once (SciPy's BLAS loaded
    first)."""
    if "controller" not in _state:
        import scipy.linalg.cython_blas  # noqa: F401  (load SciPy's BLAS before threadpoolctl looks)
        from threadpoolctl import ThreadpoolController

        _state["controller"] = ThreadpoolController()
    return _state["controller"]


def _is_scipys_own(filepath):
    """Whether a library file is SciPy's own copy of BLAS (in ``scipy.libs/`` or inside the
    package, as SciPy's wheels ship it)."""
    import scipy

    package = Path(scipy.__file__).resolve().parent
    path = Path(filepath).resolve()
    return package in path.parents or path.parent == package.parent / "scipy.libs"


def kernel_blas_files():
    """The files of the BLAS libraries the kernels call, which :func:`blas_one_thread` holds to
    one thread.

    Numba's ``np.dot`` calls BLAS through ``scipy.linalg.cython_blas``. With the wheels from
    PyPI that is SciPy's own OpenBLAS, a library apart from NumPy's; where no library is
    SciPy's own (a conda environment, where NumPy and SciPy share one), every BLAS library.
    """
    if "kernel_files" not in _state:
        files = [lib.filepath for lib in _controller().lib_controllers if lib.user_api == "blas"]
        _state["kernel_files"] = [f for f in files if _is_scipys_own(f)] or files
    return _state["kernel_files"]


def kernel_blas_is_numpys():
    """Whether the kernels' BLAS may be NumPy's too (no library is SciPy's own); decided once
    (resolving the libraries' paths takes 0.1 ms, more than the rest of a call's thread
    handling)."""
    if "shared" not in _state:
        _state["shared"] = not any(_is_scipys_own(f) for f in kernel_blas_files())
    return _state["shared"]


def _shutdown_functions():
    """``(blas_thread_shutdown_, held)`` of every loaded OpenBLAS that runs its own pthreads
    workers; ``held``: whether it is also one of :func:`kernel_blas_files`."""
    if "shutdowns" not in _state:
        functions = []
        for lib in _controller().lib_controllers:
            info = lib.info()
            if info.get("internal_api") != "openblas" or info.get("threading_layer") != "pthreads":
                continue  # an OpenMP build's workers belong to the OpenMP runtime
            try:
                function = ctypes.CDLL(info["filepath"]).blas_thread_shutdown_
            except (OSError, AttributeError):
                continue
            function.restype, function.argtypes = ctypes.c_int, []
            functions.append((function, info["filepath"] in kernel_blas_files()))
        _state["shutdowns"] = functions
    return _state["shutdowns"]


def shutdown_enabled():
    """Whether :func:`blas_one_thread` stops OpenBLAS's workers by default.

    On unless the environment variable ``ATTENTION_SCRATCH_BLAS_SHUTDOWN`` is ``0``.
    """
    return os.environ.get(_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def _stop(functions):
    for function in functions:
        function()
    return len(functions)


def stop_idle_blas_workers():
    """Stop the worker threads of every loaded pthreads OpenBLAS; returns how many libraries."""
    return _stop([function for function, _ in _shutdown_functions()])


@contextlib.contextmanager
def blas_one_thread(stop_workers=None, flops=None):
    """Hold the kernels' BLAS (:func:`kernel_blas_files`) to one thread and stop the workers of
    every other pthreads OpenBLAS (NumPy's), which may still spin after the caller's products.

    ``stop_workers`` says whether to stop them; by default they are stopped when
    :func:`shutdown_enabled` and the kernel's ``flops`` (if given) reach
    :data:`STOP_MIN_FLOPS`. The limit is set either way and undone on exit. Where the
    kernels' BLAS is NumPy's too, it is stopped before the kernel and again after.
    """
    if stop_workers is None:
        stop_workers = shutdown_enabled() and (flops is None or flops >= STOP_MIN_FLOPS)
    shared = kernel_blas_is_numpys()
    # a held library is not stopped, unless shared: lifting its limit would start fresh workers
    stop_before = [f for f, held in _shutdown_functions() if shared or not held]
    stop_after = [f for f, held in _shutdown_functions() if shared and held]
    with _lock:
        try:
            with _controller().select(filepath=kernel_blas_files()).limit(limits=1):
                if stop_workers:
                    _stop(stop_before)
                yield
        finally:
            if stop_workers:  # lifting a stopped library's limit started fresh workers
                _stop(stop_after)
