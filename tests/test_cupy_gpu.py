"""The CuPy backend (raw CUDA kernels) on a real GPU: the same test bodies as the other backends
(class TestCuPyGPU, from tests/flash_backend_cases.py), and the GPU's own tests.

Every test skips, with the reason, when CuPy or a CUDA GPU is missing. None of these
tests has run yet: the sessions that wrote the kernels had no GPU (benchmarks/gpu_results.md).
"""
import functools

import flash_backend_cases as cases
import numpy as np
import pytest

from attention_scratch.backends.cuda import gpu as cupy_gpu
from attention_scratch.testing import assert_close, attention_oracle

reason = cupy_gpu.unavailable_reason()
pytestmark = pytest.mark.skipif(reason is not None, reason=str(reason))


def _bf16(q, k, v, g, causal):
    import torch

    tq, tk, tv, tg = (torch.from_numpy(a).to("cuda", torch.bfloat16) for a in (q, k, v, g))
    out, lse = cupy_gpu.flash_attention(tq, tk, tv, causal, return_lse=True)
    grads = cupy_gpu.flash_attention_backward(tg, tq, tk, tv, out, lse, causal)
    def host(t):
        return t.float().cpu().numpy()

    return host(out), lse.cpu().numpy(), tuple(host(t) for t in grads)


GPU = cases.Backend("CuPy GPU", cupy_gpu.flash_attention, cupy_gpu.flash_attention_backward, _bf16)


def test_unavailable_reason_is_none_here():
    assert cupy_gpu.unavailable_reason() is None


class TestCuPyGPU(cases.SharedFlashTests):
    """The test bodies every backend runs (tests/flash_backend_cases.py), on the GPU."""

    backend = GPU
    tiled_examples = 40


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("E", [64, 128])
def test_float16_tensor_cores(rng, causal, E):
    cases.case_low_precision(GPU, rng, np.float16, causal, bq=64, bk=64, L=300, S=333, E=E)


@pytest.mark.parametrize("kernel", ["mma", "wmma", False])
@pytest.mark.parametrize("mask", cases.ALL_MASKS, ids=cases.ALL_MASK_IDS)
@pytest.mark.parametrize("L,S,E,Ev", cases.TENSOR_CORE_SHAPES)
def test_every_float16_forward_kernel_every_mask_and_shape(rng, kernel, mask, L, S, E, Ev):
    forward = functools.partial(cupy_gpu.flash_attention, tensor_cores=kernel)
    cases.case_float16_forward(f"GPU {kernel or 'scalar'} kernel", forward, rng, mask, L, S, E, Ev)


@pytest.mark.parametrize("kernel", ["mma", "wmma", False])
def test_float16_forward_kernels_ignore_nan_no_row_reaches(rng, kernel):
    cases.case_float16_nan_no_row_reaches(functools.partial(cupy_gpu.flash_attention,
                                                            tensor_cores=kernel), rng)


@pytest.mark.parametrize("causal", [False, True])
def test_bfloat16_through_torch(rng, causal):
    pytest.importorskip("torch")
    cases.case_bfloat16(GPU, rng, causal, L=200, S=230, E=64)


def test_same_result_as_numpy_flash_in_float32(rng):
    cases.case_matches_numpy_reference_in_float32(GPU, rng)


def test_cupy_arrays_stay_on_the_device(rng):
    import cupy

    q, k, v, _ = cases.make_inputs(rng, 40, 50, E=32, Ev=32, hq=2, hkv=2, dtype=np.float32)
    out, lse = cupy_gpu.flash_attention(*(cupy.asarray(a) for a in (q, k, v)), True,
                                        return_lse=True)
    assert isinstance(out, cupy.ndarray) and isinstance(lse, cupy.ndarray)
    ref, ref_lse, _ = attention_oracle(q, k, v, is_causal=True)
    assert_close(out, ref, what="CuPy in, CuPy out")
    assert_close(lse, ref_lse, what="CuPy in, CuPy out (lse)")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_large_causal_problem(rng, dtype):
    cases.case_low_precision(GPU, rng, dtype, True, bq=64, bk=64, L=2048, S=2048, E=128)
