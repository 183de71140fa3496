"""The GPU benchmark's own code, dry-run on the CPU:
stand-in CuPy, emulated kernels, PyTorch on the CPU.

This checks that the oracle check, the timing loop and the results table work before a
GPU session spends its minutes on them; the numbers it produces mean nothing.
"""
import sys
import time

import fake_cupy
import numpy as np
import pytest

from attention_scratch.backends.cuda import emulator as cuda_emulation
from attention_scratch.backends.cuda import gpu as cupy_gpu
from attention_scratch.bench import gpu as bench_gpu


def test_without_a_gpu_the_benchmark_says_why_and_exits_2(capsys, monkeypatch):
    monkeypatch.setattr(bench_gpu, "unavailable_reason", lambda: "no GPU here")
    assert bench_gpu.main(["--n", "64"]) == 2
    assert "no GPU here" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.usefixtures("cuda_emulation_library")
def test_dry_run_checks_times_and_renders(torch, monkeypatch, causal, dtype):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy.make_module())
    monkeypatch.setattr(cupy_gpu, "_launch", cuda_emulation._launch)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    row = bench_gpu.run_config(torch, sys.modules["cupy"], dtype, 32, 160, 2, causal, 1,
                               np.random.default_rng(0), device="cpu")
    assert row["checked"], row
    assert row["max_rel_err"] < (1e-5 if dtype == "float32" else 2e-3)
    assert row["ours_fwd"] > 0 and row["ours_bwd"] > 0 and row["math_fwd"] > 0
    table = bench_gpu.render([row], "# header")
    assert table.count(f"| {dtype} | 32 | 160 |") == 2
    if dtype == "float32":
        assert "float32 fwd" in bench_gpu.targets([row]) and "kernels" not in row
    else:  # every 16-bit forward kernel checked against the oracle, then timed
        assert set(row["kernels"]) == {"mma", "wmma", "scalar"}
        assert all(isinstance(t, float) and t > 0 for t in row["kernels"].values()), row["kernels"]
        assert bench_gpu.render_kernels([row]).count(f"| {dtype} | 32 | 160 | {causal} |") == 1


def test_the_time_of_a_call_includes_the_device_work_it_queued():
    """A fake device: each call returns at once and queues 1 ms of work, which sync() performs."""
    queue = []

    def sync():
        time.sleep(sum(queue))
        queue.clear()

    ms = bench_gpu.median_ms(lambda: queue.append(0.001), sync, repeats=3)
    assert 1.0 <= ms < 10.0, ms
    assert not queue, "the timer must leave no work queued behind"


@pytest.mark.usefixtures("cuda_emulation_library")
def test_a_wrong_kernel_fails_the_check_and_is_not_timed(torch, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy.make_module())
    monkeypatch.setattr(cupy_gpu, "_launch", cuda_emulation._launch)
    real = cupy_gpu.flash_attention

    def broken(*args, **kwargs):
        out, lse = real(*args, **kwargs)
        return out * 1.01, lse  # a 1 % error in the output

    monkeypatch.setattr(cupy_gpu, "flash_attention", broken)
    row = bench_gpu.run_config(torch, sys.modules["cupy"], "float32", 32, 96, 1, False, 1,
                               np.random.default_rng(0), device="cpu")
    assert not row["checked"] and "FAILED" in row["note"] and "ours_fwd" not in row
