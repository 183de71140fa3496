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


def test_blas_is_held_to_one_thread_inside_and_restored_after():
    with threads.blas_one_thread(stop_workers=False):  # loads SciPy's BLAS too
        pass
    before = {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    with threads.blas_one_thread():
        inside = {i["filepath"]: i["num_threads"] for i in threadpool_info()
                  if i["user_api"] == "blas"}
    after = {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    assert inside and all(n == 1 for n in inside.values())
    assert after == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")
@pytest.mark.parametrize("switch", ["1", "0"])
def test_openblas_workers_are_stopped_unless_switched_off(monkeypatch, switch):
    with threads.blas_one_thread(stop_workers=False):  # loads SciPy's BLAS too
        pass
    if not _pthreads_openblas_with_workers():
        pytest.skip("no OpenBLAS with pthreads workers is loaded here")
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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")
def test_no_openblas_worker_is_left_spinning_after_a_kernel():
    """Lifting the limit after the kernel starts fresh OpenBLAS workers, which would spin
    through whatever the program runs next: they are stopped again."""
    with threads.blas_one_thread(stop_workers=False):  # loads SciPy's BLAS too
        pass
    if not _pthreads_openblas_with_workers():
        pytest.skip("no OpenBLAS with pthreads workers is loaded here")
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 1024, 64), dtype=np.float32) for _ in range(3))
    at.flash_attention(q, k, v, backend="numba", block_q=64, block_k=64)  # Numba's own threads
    a = np.ones((512, 512), dtype=np.float32)
    a @ a  # NumPy's OpenBLAS now has its workers running
    running = _os_threads()
    threads.stop_idle_blas_workers()
    without_workers = _os_threads()
    assert without_workers < running
    a @ a  # they are back
    with threads.blas_one_thread(flops=threads.STOP_MIN_FLOPS):
        pass
    assert _os_threads() == without_workers
    a @ a
    at.flash_attention(q, k, v, backend="numba", block_q=64, block_k=64)  # 5e8 > STOP_MIN_FLOPS
    assert _os_threads() == without_workers
    np.testing.assert_allclose(a @ a, np.full_like(a, 512))  # and OpenBLAS starts them again
    assert _os_threads() == running


def test_kernels_after_stopped_workers_match_numpy_reference():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 96, 16), dtype=np.float32) for _ in range(3))
    for _ in range(2):  # twice: the second call finds OpenBLAS's workers restarted and stops them
        q @ k.transpose(0, 2, 1)
        got = at.flash_attention(q, k, v, is_causal=True, backend="numba")
        want = at.flash_attention(q, k, v, is_causal=True, backend="numpy")
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
