"""The threads around the Numba kernels: BLAS held to one thread, OpenBLAS's idle workers
stopped."""
import os
import sys

import numpy as np
import pytest

pytest.importorskip("numba")
pytest.importorskip("threadpoolctl")

from threadpoolctl import threadpool_info

import attention_scratch as at
from attention_scratch.backends.numba import threads


def _os_threads():
    return len(os.listdir("/proc/self/task"))


def _pthreads_openblas_with_workers():
    return [i for i in threadpool_info() if i.get("internal_api") == "openblas"
            and i.get("threading_layer") == "pthreads" and i["num_threads"] > 1]


@pytest.fixture
def openblas_workers():
    """Skip unless a pthreads OpenBLAS with workers is loaded (SciPy's BLAS loaded first); Linux
    only, since the tests count the threads in /proc."""
    if not sys.platform.startswith("linux"):
        pytest.skip("counts threads in /proc")
    with threads.blas_one_thread(stop_workers=False):  # loads SciPy's BLAS too
        pass
    if not _pthreads_openblas_with_workers():
        pytest.skip("no OpenBLAS with pthreads workers is loaded here")


def test_blas_is_held_to_one_thread_inside_and_restored_after():
    with threads.blas_one_thread(stop_workers=False):  # loads SciPy's BLAS too
        pass
    before = {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    with threads.blas_one_thread():
        inside = {i["filepath"]: i["num_threads"] for i in threadpool_info()
                  if i["user_api"] == "blas"}
    after = {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    kernel_files = threads.kernel_blas_files()
    assert kernel_files and all(inside[f] == 1 for f in kernel_files)
    assert all(inside[f] == before[f] for f in inside if f not in kernel_files)
    assert after == before


def test_the_kernels_blas_is_scipys_own_where_scipy_ships_one():
    import scipy.linalg.cython_blas  # noqa: F401

    blas = [i["filepath"] for i in threadpool_info() if i["user_api"] == "blas"]
    scipys = [f for f in blas if threads._is_scipys_own(f)]
    assert threads.kernel_blas_files() == (scipys or blas)
    assert threads.kernel_blas_is_numpys() == (not scipys)


def test_which_blas_the_kernels_call_is_decided_once_per_process(monkeypatch):
    """Every kernel call asks; resolving the libraries' paths each time cost 0.12 ms a call."""
    answer = threads.kernel_blas_is_numpys()

    def resolve_again(filepath):
        raise AssertionError("the libraries' paths were resolved again")

    monkeypatch.setattr(threads, "_is_scipys_own", resolve_again)
    assert threads.kernel_blas_is_numpys() == answer
    with threads.blas_one_thread():
        pass


@pytest.mark.parametrize("switch", ["1", "0"])
def test_openblas_workers_are_stopped_unless_switched_off(openblas_workers, monkeypatch, switch):
    monkeypatch.setenv("ATTENTION_SCRATCH_BLAS_SHUTDOWN", switch)
    a = np.ones((512, 512), dtype=np.float32)
    a @ a  # NumPy's OpenBLAS now has its workers running
    running = _os_threads()
    with threads.blas_one_thread():
        inside = _os_threads()
    if switch == "1":
        assert inside < running
    else:
        assert inside == running
    np.testing.assert_allclose(a @ a, np.full_like(a, 512))  # OpenBLAS restarts its workers


def test_no_openblas_worker_is_left_spinning_after_a_kernel(openblas_workers):
    """Changing the thread count of a stopped OpenBLAS starts fresh workers, which would spin
    through whatever the program runs next: a kernel leaves the threads as it found them after
    a kernel, whatever NumPy did in between."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 1024, 64), dtype=np.float32) for _ in range(3))
    kernel = lambda: at.flash_attention(q, k, v, backend="numba", block_q=64, block_k=64)  # noqa: E731  (5e8 flops > STOP_MIN_FLOPS)
    kernel()
    after_a_kernel = _os_threads()
    a = np.ones((512, 512), dtype=np.float32)
    a @ a  # NumPy's OpenBLAS now has its workers running
    assert _os_threads() > after_a_kernel
    kernel()
    assert _os_threads() == after_a_kernel
    with threads.blas_one_thread(flops=threads.STOP_MIN_FLOPS):
        pass
    assert _os_threads() == after_a_kernel
    np.testing.assert_allclose(a @ a, np.full_like(a, 512))  # and OpenBLAS starts them again
    assert _os_threads() > after_a_kernel


def test_where_numpy_and_scipy_share_one_blas_it_is_held_stopped_and_stopped_again(
        openblas_workers, monkeypatch):
    """The conda case, made here by letting no library count as SciPy's own: every BLAS is the
    kernels', held to one thread, and stopped before the kernel and again after it."""
    blas = [i["filepath"] for i in threadpool_info() if i["user_api"] == "blas"]
    monkeypatch.setattr(threads, "_is_scipys_own", lambda filepath: False)
    monkeypatch.setattr(threads, "_state", {})  # the plan is made again, restored after the test
    assert threads.kernel_blas_is_numpys() and threads.kernel_blas_files() == blas
    threads.stop_idle_blas_workers()
    no_workers = _os_threads()
    a = np.ones((512, 512), dtype=np.float32)
    a @ a  # NumPy's OpenBLAS now has its workers running
    assert _os_threads() > no_workers
    before = {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    with threads.blas_one_thread(flops=threads.STOP_MIN_FLOPS):
        inside = {i["filepath"]: i["num_threads"] for i in threadpool_info()
                  if i["user_api"] == "blas"}
        threads_inside = _os_threads()
    assert inside == dict.fromkeys(blas, 1)
    assert threads_inside == no_workers  # stopped before the kernel
    assert {i["filepath"]: i["num_threads"] for i in threadpool_info()
            if i["user_api"] == "blas"} == before
    assert _os_threads() == no_workers  # lifting the limits started workers: stopped again


def test_kernels_after_stopped_workers_match_numpy_reference():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 96, 16), dtype=np.float32) for _ in range(3))
    for _ in range(2):  # twice: the second call finds OpenBLAS's workers restarted and stops them
        q @ k.transpose(0, 2, 1)
        got = at.flash_attention(q, k, v, is_causal=True, backend="numba")
        want = at.flash_attention(q, k, v, is_causal=True, backend="numpy")
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
