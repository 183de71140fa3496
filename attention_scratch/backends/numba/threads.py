"""The threads around a Numba kernel: BLAS held to one thread, OpenBLAS's idle workers stopped
before and after.

The Numba kernels run one work item per core and call BLAS from inside each item. Two
thread pools must then stay out of their way, and the kernel must not leave one in the
way of what the program runs next:

1. **BLAS's own threads.** An OpenBLAS that split every tile product over its own
   threads would fight the kernel's threads for the same cores, so for the duration of
   a kernel every loaded BLAS library is held to one thread (``threadpoolctl``).
2. **OpenBLAS workers still spinning.** After a multithreaded call (any ``a @ b`` in
   NumPy), OpenBLAS's worker threads busy-wait for the next one for about
   ``2**28`` processor cycles, a tenth of a second, before they sleep. Holding BLAS to
   one thread does not stop them: a kernel started in that window finds a core taken.
   On a 2-core machine that made the forward pass 1.5-1.9 times slower in a plain
   process (``benchmarks/openblas_spin.py``). ``make bench`` used to hide it with the
   environment variable ``OPENBLAS_THREAD_TIMEOUT``, which OpenBLAS reads once, when
   it is loaded; a library cannot set it for its user. So, after limiting the
   threads, :func:`blas_one_thread` asks each OpenBLAS built on pthreads to stop its
   worker threads (``blas_thread_shutdown_``, the function OpenBLAS itself runs before
   every ``fork``); OpenBLAS starts them again, lazily, at its next multithreaded call.

The order matters: limiting the threads after the shutdown would start the workers
again (OpenBLAS re-creates its pool on the first call after a shutdown, and the limit
is such a call), and the new workers would spin through the kernel.

3. **Workers started by lifting the limit.** Lifting the limit after the kernel is
   again such a call: OpenBLAS starts fresh workers, and they spin for their tenth of
   a second through whatever the program runs next. A PyTorch backward pass run right
   after the Numba backward took 1.3 to 1.6 times as long as alone (2 cores, N = 2048;
   ``benchmarks/openblas_spin.py``), and ``make bench``, which runs PyTorch right after
   the Numba kernel in every repetition, timed PyTorch slow. So the workers are stopped
   once more after the limit is lifted; OpenBLAS starts them at the next NumPy product
   that wants them, as it would after a ``fork``.

Stopping costs a few hundred microseconds on a quiet machine (the stop after the kernel
waits for the workers that lifting the limit started), and milliseconds on a busy one.
A kernel of less work than :data:`STOP_MIN_FLOPS` is not worth it: there the workers
are left alone.

Stopping the workers is safe when no other thread of the process is inside OpenBLAS at
that moment, as for a ``fork``. A program that runs NumPy products in other threads
while it calls the Numba backend can switch it off with
``ATTENTION_SCRATCH_BLAS_SHUTDOWN=0`` (the kernels stay correct, only slower right
after a NumPy product).
"""
import contextlib
import ctypes
import os
import threading

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


def _shutdown_functions():
    """``blas_thread_shutdown_`` of every loaded OpenBLAS that runs its own pthreads workers."""
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
            functions.append(function)
        _state["shutdowns"] = functions
    return _state["shutdowns"]


def shutdown_enabled():
    """Whether :func:`blas_one_thread` stops OpenBLAS's workers by default.

    On unless the environment variable ``ATTENTION_SCRATCH_BLAS_SHUTDOWN`` is ``0``.
    """
    return os.environ.get(_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def stop_idle_blas_workers():
    """Stop the worker threads of every loaded pthreads OpenBLAS; returns how many libraries."""
    functions = _shutdown_functions()
    for function in functions:
        function()
    return len(functions)


@contextlib.contextmanager
def blas_one_thread(stop_workers=None, flops=None):
    """Hold every loaded BLAS library to one thread and stop OpenBLAS's spinning workers,
    before the kernel and again after it.

    ``stop_workers`` says whether to stop them; by default they are stopped when
    :func:`shutdown_enabled` and the kernel's ``flops`` (if given) reach
    :data:`STOP_MIN_FLOPS`. The limit is set either way and undone on exit.
    """
    if stop_workers is None:
        stop_workers = shutdown_enabled() and (flops is None or flops >= STOP_MIN_FLOPS)
    with _lock:
        try:
            with _controller().limit(limits=1, user_api="blas"):
                if stop_workers:
                    stop_idle_blas_workers()
                yield
        finally:
            if stop_workers:  # lifting the limit started fresh workers: they would spin on
                stop_idle_blas_workers()
