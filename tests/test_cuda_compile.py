"""Every CUDA source compiles with nvcc for sm_80 and sm_90
(runs wherever nvcc exists; no GPU needed)."""
import pytest

from attention_scratch.backends.cuda import compile_check


@pytest.mark.skipif(compile_check.nvcc_path() is None,
                    reason="nvcc is not on PATH: the CUDA sources are compiled in CI, "
                           "where the CUDA toolkit is installed")
def test_every_cuda_source_compiles_for_sm80_and_sm90(capsys):
    failures = compile_check.check_all(("sm_80", "sm_90"))
    assert not failures, "nvcc failed:\n" + "\n".join(log for *_, log in failures)
    assert len(compile_check.sources()) >= 3


@pytest.mark.skipif(compile_check.nvcc_path() is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_register_fragment_kernel_keeps_everything_in_registers(arch):
    """flash_fwd_mma exists to keep S, P and O in registers: ptxas must report no spills for any
    instantiation (the D = 128 kernel uses about 247 of the 255 registers a thread may have)."""
    report = compile_check.ptxas_report(compile_check.CUDA_DIR / "flash_fwd_mma.cu", arch)
    assert len(report) == 6, report  # {half, bfloat16} x D in {32, 64, 128}
    for name, registers, stores, loads in report:
        assert registers is not None and registers <= 255, (name, registers)
        assert stores == 0 and loads == 0, f"{name} spills {stores} B / {loads} B on {arch}"


def test_compile_check_reports_a_syntax_error(tmp_path, monkeypatch):
    if compile_check.nvcc_path() is None:
        pytest.skip("nvcc is not on PATH")
    broken = tmp_path / "broken.cu"
    broken.write_text("__global__ void k(float* x) { x[0] = 1.0f }\n")  # missing semicolon
    ok, _, log = compile_check.compile_one(broken, "sm_80", tmp_path)
    assert not ok and "error" in log


def test_every_kernel_compiles_through_cupys_nvrtc():
    """The CuPy backend's own compile path (NVRTC, name expressions, include paths);
    no GPU needed."""
    pytest.importorskip("cupy", reason="CuPy is not installed: the NVRTC compile check needs it")
    try:
        failures = compile_check.check_nvrtc()
    except RuntimeError as exc:  # libnvrtc cannot be loaded
        pytest.skip(f"NVRTC is not available: {exc}")
    assert not failures, "\n".join(err for _, err in failures)
