"""The CUDA flash kernels executed on the CPU by the emulation harness (no GPU involved).

backends/cuda/*.cu are compiled with g++ against cuda/emulation/cuda_emulation.h; every
CUDA thread runs as a fiber. These tests run the kernel code itself (indexing, masks,
block skipping, online softmax, the tensor-core tile logic, the backward atomics) on small
shapes and compare with the float64 oracle. They do not show that the kernels are fast,
nor that they are free of races a real GPU could expose: see tests/test_cupy_gpu.py.
"""
import functools

import flash_backend_cases as cases
import numpy as np
import pytest

from attention_scratch.backends.cuda import driver as cuda_driver
from attention_scratch.backends.cuda import emulator as cuda_emulation
from attention_scratch.testing import assert_close

reason = cuda_emulation.unavailable_reason()
pytestmark = [pytest.mark.skipif(reason is not None, reason=str(reason)),
              pytest.mark.usefixtures("cuda_emulation_library")]

SMEM = 99 * 1024  # the opt-in shared memory of an sm_86/sm_89 GPU: the smallest of the targets


def _bf16(q, k, v, g, causal, tensor_cores=True):
    out, lse = cuda_emulation.flash_attention(q, k, v, causal, return_lse=True, bfloat16=True,
                                              tensor_cores=tensor_cores, smem_limit=SMEM)
    grads = cuda_emulation.flash_attention_backward(g, q, k, v, out, lse, causal, bfloat16=True,
                                                    smem_limit=SMEM)
    return out, lse, grads


EMULATED = cases.Backend(
    "CUDA emulation",
    functools.partial(cuda_emulation.flash_attention, tensor_cores=True, smem_limit=SMEM),
    functools.partial(cuda_emulation.flash_attention_backward, smem_limit=SMEM),
    _bf16,
)
# 48 KiB, the budget without opt-in: forces smaller tiles than asked for in the float64 cases.
SMALL_SMEM = cases.Backend(
    "CUDA emulation, 48 KiB shared memory",
    functools.partial(cuda_emulation.flash_attention, smem_limit=48 * 1024),
    functools.partial(cuda_emulation.flash_attention_backward, smem_limit=48 * 1024),
)


class TestCudaEmulation(cases.SharedFlashTests):
    """The test bodies every backend runs (tests/flash_backend_cases.py),
    on the emulated kernels."""

    backend = EMULATED
    tiled_examples = 15

    # Each emulated launch costs milliseconds: narrower ragged and shape grids than the shared ones.
    @pytest.mark.parametrize("mask", cases.MASKS, ids=cases.MASK_IDS)
    @pytest.mark.parametrize("bq,bk", [(7, 13), (64, 64), (128, 256)])
    def test_ragged_shapes(self, rng, mask, bq, bk):
        cases.case_ragged(EMULATED, rng, mask, bq, bk, hq=1)

    @pytest.mark.parametrize("mask", cases.ALL_MASKS, ids=cases.ALL_MASK_IDS)
    @pytest.mark.parametrize("L,S", [(5, 17), (17, 5), (1, 1), (17, 1)])
    def test_shapes_and_masks(self, rng, mask, L, S):
        cases.case_shapes_and_masks(EMULATED, rng, mask, L, S)


def test_tiles_reduced_to_fit_48_kib(rng):
    cases.case_ragged(SMALL_SMEM, rng, (True, "bottom_right", (40, None)), 128, 256)


TENSOR_CORE_KERNELS = pytest.mark.parametrize("kernel", cuda_driver.TENSOR_CORE_KERNELS)


def _tensor_core_backend(kernel):
    return cases.Backend(f"CUDA emulation, {kernel} kernel",
                         functools.partial(cuda_emulation.flash_attention, tensor_cores=kernel,
                                           smem_limit=SMEM), EMULATED.backward)


@TENSOR_CORE_KERNELS
@pytest.mark.parametrize("causal", [False, True])
def test_float16_tensor_core_kernel(rng, causal, kernel):
    # block 64x64, E=64: a tensor-core forward (the backward always runs the scalar kernel)
    cases.case_low_precision(_tensor_core_backend(kernel), rng, np.float16, causal, bq=64, bk=64,
                             L=80, S=100, E=64)


@TENSOR_CORE_KERNELS
@pytest.mark.parametrize("causal", [False, True])
def test_bfloat16_tensor_core_kernel(rng, causal, kernel):
    run = functools.partial(_bf16, tensor_cores=kernel)
    cases.case_bfloat16(cases.Backend(f"CUDA emulation, {kernel}", None, None, run), rng, causal,
                        L=70, S=90, E=40)


@TENSOR_CORE_KERNELS
@pytest.mark.parametrize("mask", cases.ALL_MASKS, ids=cases.ALL_MASK_IDS)
@pytest.mark.parametrize("L,S,E,Ev", cases.TENSOR_CORE_SHAPES)
def test_tensor_core_kernels_every_mask_and_shape(rng, kernel, mask, L, S, E, Ev):
    assert cuda_driver.forward_plan("float16", L, S, E, Ev, 64, 64, SMEM,
                                    tensor_cores=kernel)["kernel"] == f"flash_fwd_{kernel}"
    forward = functools.partial(cuda_emulation.flash_attention, tensor_cores=kernel,
                                smem_limit=SMEM)
    cases.case_float16_forward(f"emulated {kernel}", forward, rng, mask, L, S, E, Ev)


@TENSOR_CORE_KERNELS
def test_tensor_core_kernels_ignore_nan_in_a_key_and_value_no_row_reaches(rng, kernel):
    forward = functools.partial(cuda_emulation.flash_attention, tensor_cores=kernel,
                                smem_limit=SMEM)
    cases.case_float16_nan_no_row_reaches(forward, rng)


def test_same_result_as_numpy_flash_in_float32(rng):
    cases.case_matches_numpy_reference_in_float32(EMULATED, rng)


def test_head_dims_of_every_bucket(rng):
    for E in (1, 32, 33, 100, 129, 256):
        q, k, v, g = cases.make_inputs(rng, 5, 9, E=E, Ev=max(1, E // 2), hq=1, hkv=1)
        cases.check_against_oracle(EMULATED, q, k, v, g, (True, "top_left", None), 4, 4)


def test_batch_heads_split_into_several_launches(rng, monkeypatch):
    # The grid's y extent (batch * heads) is capped at 65535 per launch; shrink the cap to 2.
    monkeypatch.setattr(cuda_driver, "GRID_Y_MAX", 2)
    q, k, v, g = cases.make_inputs(rng, 6, 7, hq=6, hkv=3, lead=(1,))
    cases.check_against_oracle(EMULATED, q, k, v, g, (True, "bottom_right", None), 4, 4)


def test_errors_match_the_numpy_reference(rng):
    q, k, v, _ = cases.make_inputs(rng, 4, 5, hq=4, hkv=2)
    with pytest.raises(ValueError, match="enable_gqa"):
        cuda_emulation.flash_attention(q, k, v)
    with pytest.raises(ValueError, match="block_q"):
        cuda_emulation.flash_attention(q, k, v, enable_gqa=True, block_q=0)
    with pytest.raises(ValueError, match="causal_align"):
        cuda_emulation.flash_attention(q, k, v, enable_gqa=True, causal_align="middle")
    with pytest.raises(ValueError, match="head dims up to 256"):
        cuda_emulation.flash_attention(*cases.make_inputs(rng, 2, 2, E=300, hq=1, hkv=1)[:3])


def test_harness_detects_a_shared_memory_overrun(rng, monkeypatch):
    # If the driver under-allocated shared memory, the emulation must fail, not pass silently.
    monkeypatch.setattr(cuda_driver, "forward_smem_bytes", lambda bk, D, acc: bk * (D + 1) * acc)
    q, k, v, _ = cases.make_inputs(rng, 4, 8, hq=1, hkv=1)
    with pytest.raises(RuntimeError, match="failed with code 2"):
        cuda_emulation.flash_attention(q, k, v, block_q=4, block_k=4)


@pytest.mark.parametrize("tag", cuda_driver.TAGS)
@pytest.mark.parametrize("E", [16, 64, 100, 128, 256])
def test_plans_fit_the_hardware_limits(tag, E):
    for bq, bk in ((1, 1), (64, 64), (256, 256), (1000, 7)):
        for smem in (48 * 1024, 99 * 1024):
            fwd = cuda_driver.forward_plan(tag, 4096, 4096, E, E, bq, bk, smem, tensor_cores=True)
            bwd = cuda_driver.backward_plan(tag, 4096, 4096, E, E, bq, bk, smem)
            for plan in (fwd, bwd):
                assert plan["threads"] <= cuda_driver.MAX_THREADS and plan["threads"] % 32 == 0
                assert plan["smem"] <= smem
                fixed = {"flash_fwd_mma": cuda_driver.mma_tiles(plan["D"]),
                         "flash_fwd_wmma": (64, 64)}.get(plan["kernel"])
                assert (plan["bq"], plan["bk"]) == fixed if fixed else (1 <= plan["bq"] <= bq
                                                                        and 1 <= plan["bk"] <= bk)
            tensor_cores = tag in ("float16", "bfloat16") and E <= 128 and (bq, bk) == (64, 64)
            D = cuda_driver.head_dim_bucket(E, E)
            assert (fwd["kernel"] == "flash_fwd_mma") == (tensor_cores
                                                          and cuda_driver.mma_smem_bytes(D) <= smem)
            wmma = cuda_driver.forward_plan(tag, 4096, 4096, E, E, bq, bk, smem,
                                            tensor_cores="wmma")
            assert (wmma["kernel"] == "flash_fwd_wmma") == (tensor_cores
                                                            and cuda_driver.wmma_smem_bytes(D)
                                                            <= smem)
            assert wmma["smem"] <= smem


# The CuPy backend's own Python code, run on the CPU: a NumPy stand-in for CuPy
# (tests/fake_cupy.py) and the emulation for the kernel launches. This checks the glue
# (conversions, dtype tags, layouts, launch arguments), not CUDA.

@pytest.fixture
def cupy_glue(monkeypatch):
    import sys

    import fake_cupy

    from attention_scratch.backends.cuda import gpu as cupy_gpu

    monkeypatch.setitem(sys.modules, "cupy", fake_cupy.make_module())
    monkeypatch.setattr(cupy_gpu, "_launch", cuda_emulation._launch)
    return cases.Backend("cupy_gpu glue on the emulation", cupy_gpu.flash_attention,
                         cupy_gpu.flash_attention_backward)


def test_cupy_backend_glue_numpy_in_numpy_out(cupy_glue, rng):
    assert type(cupy_glue.forward(*cases.make_inputs(rng, 3, 4, hq=1, hkv=1)[:3])) is np.ndarray
    cases.case_batch_axes_gqa_scale(cupy_glue, rng)
    cases.case_empty_rows(cupy_glue, rng)
    cases.case_ragged(cupy_glue, rng, (True, "bottom_right", (40, None)), 16, 32, hq=2)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("cc,kernel", [("86", "flash_fwd_mma"), ("75", "flash_fwd_wmma")])
def test_cupy_backend_glue_picks_the_tensor_core_kernel_of_the_device(rng, causal, cc, kernel,
                                                                      monkeypatch):
    import sys

    import fake_cupy

    from attention_scratch.backends.cuda import gpu as cupy_gpu

    monkeypatch.setitem(sys.modules, "cupy", fake_cupy.make_module(compute_capability=cc))
    monkeypatch.setattr(cupy_gpu, "_launch", cuda_emulation._launch)
    monkeypatch.setattr(cupy_gpu, "_LIMITS", {})
    seen = []
    monkeypatch.setattr(cuda_driver, "forward_plan", _recording(cuda_driver.forward_plan, seen))
    glue = cases.Backend("cupy_gpu glue", cupy_gpu.flash_attention,
                         cupy_gpu.flash_attention_backward)
    cases.case_low_precision(glue, rng, np.float16, causal, bq=64, bk=64, L=70, S=90, E=32)
    assert [launch["kernel"] for launch in seen] == [kernel]


@pytest.mark.parametrize("tag,cc,requested,expected",
                         [("float16", 90, "auto", "mma"), ("bfloat16", 80, "auto", "mma"),
                          ("float16", 75, "auto", "wmma"), ("bfloat16", 75, "auto", False),
                          ("float16", 61, "auto", False), ("float32", 90, "auto", False),
                          ("float16", 90, "wmma", "wmma"), ("float16", 90, False, False),
                          ("float64", 90, "mma", False)])
def test_tensor_core_kernel_choice(tag, cc, requested, expected):
    from attention_scratch.backends.cuda import gpu as cupy_gpu

    assert cupy_gpu.tensor_core_kernel(tag, cc, requested) == expected


def test_a_tensor_core_kernel_that_failed_to_compile_is_not_chosen_again(monkeypatch):
    from attention_scratch.backends.cuda import gpu as cupy_gpu

    monkeypatch.setattr(cupy_gpu, "FAILED_TENSOR_CORE_KERNELS", {"mma": "crt/mma.h not found"})
    assert cupy_gpu.tensor_core_kernel("float16", 90) == "wmma"
    assert cupy_gpu.tensor_core_kernel("bfloat16", 90) is False
    assert cupy_gpu.tensor_core_kernel("float16", 90, "mma") is False


def test_tensor_core_kernel_choice_rejects_unknown_names():
    from attention_scratch.backends.cuda import gpu as cupy_gpu

    with pytest.raises(ValueError, match="tensor_cores"):
        cupy_gpu.tensor_core_kernel("float16", 90, "hmma")
    with pytest.raises(ValueError, match="tensor_cores"):
        cuda_driver.forward_plan("float16", 8, 8, 64, 64, 64, 64, tensor_cores="hmma")


def test_cupy_backend_glue_device_arrays_stay_device_arrays(cupy_glue, rng):
    import cupy  # the stand-in installed by the fixture

    q, k, v, g = (cupy.asarray(a) for a in cases.make_inputs(rng, 5, 6, hq=2, hkv=2,
                                                             dtype=np.float32))
    out, lse = cupy_glue.forward(q, k, v, True, return_lse=True)
    grads = cupy_glue.backward(g, q, k, v, out, lse, True)
    assert all(type(a) is cupy.ndarray for a in (out, lse, *grads))
    assert out.dtype == np.float32 and lse.dtype == np.float32


def _recording(plan, seen):
    def wrapped(*args, **kwargs):
        seen.append(plan(*args, **kwargs))
        return seen[-1]
    return wrapped


def test_cupy_backend_glue_torch_cpu_tensors_come_back_as_torch_tensors(cupy_glue, rng, torch):
    q, k, v, g = (torch.from_numpy(a) for a in cases.make_inputs(rng, 5, 6, hq=2, hkv=1))
    out, lse = cupy_glue.forward(q, k, v, True, enable_gqa=True, return_lse=True)
    grads = cupy_glue.backward(g, q, k, v, out, lse, True, enable_gqa=True)
    assert all(isinstance(a, torch.Tensor) for a in (out, lse, *grads))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    assert_close(out.numpy(), ref.numpy(), what="glue output vs torch SDPA")


@pytest.mark.parametrize("cc,kernel", [("86", "flash_fwd_mma"), ("75", "flash_fwd_wmma")])
def test_cupy_backend_falls_back_to_the_scalar_kernel_when_tensor_cores_do_not_compile(rng,
                                                                                       monkeypatch,
                                                                                       cc, kernel):
    import sys

    import fake_cupy

    from attention_scratch.backends.cuda import gpu as cupy_gpu

    def launch(name, *args):
        if name == kernel:
            raise cupy_gpu.KernelCompileError(f"compiling {kernel}<__half, 64> failed: "
                                              "a header was not found")
        return cuda_emulation._launch(name, *args)

    monkeypatch.setitem(sys.modules, "cupy", fake_cupy.make_module(compute_capability=cc))
    monkeypatch.setattr(cupy_gpu, "_LIMITS", {})
    monkeypatch.setattr(cupy_gpu, "_launch", launch)
    monkeypatch.setattr(cupy_gpu, "FAILED_TENSOR_CORE_KERNELS", {})
    glue = cases.Backend("cupy_gpu glue", cupy_gpu.flash_attention,
                         cupy_gpu.flash_attention_backward)
    with pytest.warns(UserWarning, match="using the scalar kernel"):
        cases.case_low_precision(glue, rng, np.float16, True, bq=64, bk=64, L=40, S=50, E=32)


ASAN_SCRIPT = """
import numpy as np
from attention_scratch.backends.cuda import emulator as ce
rng = np.random.default_rng(0)
for dtype, tc, E, L, S in ((np.float64, False, 59, 37, 41), (np.float32, False, 256, 9, 20),
                           (np.float16, "mma", 40, 70, 90), (np.float16, "mma", 128, 65, 130),
                           (np.float16, "wmma", 40, 70, 90), (np.float16, "wmma", 128, 65, 130)):
    q = rng.standard_normal((1, 2, L, E)).astype(dtype)
    k, v = (rng.standard_normal((1, 1, S, e)).astype(dtype) for e in (E, E - 3))
    g = rng.standard_normal((1, 2, L, E - 3)).astype(dtype)
    for bq, bk in ((64, 64), (7, 13)):
        kw = dict(enable_gqa=True, block_q=bq, block_k=bk, smem_limit=99 * 1024)
        out, lse = ce.flash_attention(q, k, v, True, return_lse=True, tensor_cores=tc, **kw)
        ce.flash_attention_backward(g, q, k, v, out, lse, True, **kw)
print("asan-clean")
"""


@pytest.mark.slow
def test_no_out_of_bounds_access_under_address_sanitizer(tmp_path):
    # Reading past the end of q, k or v would go unnoticed in a plain run; ASan reports it.
    import os
    import subprocess
    import sys

    libasan = subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True,
                             text=True).stdout.strip()
    if not os.path.isabs(libasan):
        pytest.skip("g++ has no AddressSanitizer runtime")
    env = dict(os.environ, LD_PRELOAD=libasan,
               ASAN_OPTIONS="detect_leaks=0:detect_stack_use_after_return=0",
               ATTENTION_SCRATCH_EMULATION_CXXFLAGS="-fsanitize=address -fno-omit-frame-pointer -g",
               ATTENTION_SCRATCH_CACHE=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", ASAN_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)
    assert "asan-clean" in done.stdout, done.stderr[-3000:]
    assert "ERROR: AddressSanitizer" not in done.stderr, done.stderr[-3000:]


def test_the_constants_are_written_once_in_the_header_the_kernels_include():
    """constants.py reads flash_constants.cuh; no kernel source defines one of its names again."""
    from attention_scratch.backends.cuda import constants

    values = constants.read_constants()
    assert values["MMA_BQ"] == 16 * values["MMA_MT"] * values["MMA_WARPS"]
    assert values["WMMA_BQ"] == 16 * values["WMMA_WARPS"]
    assert cuda_driver.mma_tiles(128) == (values["MMA_BQ"], values["MMA_BK_LARGE_D"])
    assert cuda_driver.mma_tiles(64) == (values["MMA_BQ"], values["MMA_BK_SMALL_D"])
    for source in sorted(constants.HEADER.parent.glob("*.cu")):
        text = source.read_text()
        assert '#include "flash_constants.cuh"' in text, source.name
        for name in values:
            assert f"#define {name} " not in text, f"{source.name} defines {name} again"
