"""Backend dispatch: names, errors, the "auto" choice, and lazy imports."""
import subprocess
import sys

import numpy as np
import pytest

import attention_scratch as at
from attention_scratch import backends
from attention_scratch.backends import BackendUnavailable, get_backend, resolve_name


def inputs(rng, L=6, S=7):
    return (rng.standard_normal((1, 2, L, 4)), rng.standard_normal((1, 2, S, 4)),
            rng.standard_normal((1, 2, S, 3)))


def numba_reason():
    return backends.unavailable_reason("numba")


@pytest.mark.parametrize("name", ["cuda", "Numba", "", None, 3])
def test_unknown_backend_is_a_value_error_listing_the_names(rng, name):
    q, k, v = inputs(rng)
    with pytest.raises(ValueError, match=r"backend must be one of 'numpy', 'numba', 'cupy', 'auto'"):
        at.flash_attention(q, k, v, backend=name)
    out, lse = at.flash_attention(q, k, v, return_lse=True)
    with pytest.raises(ValueError, match="backend"):
        at.flash_attention_backward(out, q, k, v, out, lse, backend=name)


def test_backend_unavailable_is_a_runtime_error():
    assert issubclass(BackendUnavailable, RuntimeError)


def test_cupy_without_cupy_kernels_or_gpu_says_what_is_needed(rng):
    if backends.unavailable_reason("cupy") is None:
        pytest.skip("CuPy and a GPU are usable here")
    q, k, v = inputs(rng)
    with pytest.raises(BackendUnavailable, match="(?i)cupy") as err:
        at.flash_attention(q, k, v, backend="cupy")
    assert "'cupy'" in str(err.value)
    with pytest.raises(BackendUnavailable, match="(?i)cupy"):
        at.flash_attention_backward(q[..., :3], q, k, v, q[..., :3], q[..., 0], backend="cupy")


def test_missing_cupy_module_gives_the_gpu_reason(monkeypatch):
    def fake_import(name):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(backends.importlib, "import_module", fake_import)
    reason = backends.unavailable_reason("cupy")
    assert "CuPy and a CUDA GPU" in reason


def test_numpy_and_auto_are_always_available():
    assert backends.unavailable_reason("numpy") is None
    assert backends.unavailable_reason("auto") is None
    assert set(backends.available_backends()) == {"numpy", "numba", "cupy"}


def test_auto_picks_numba_when_usable_else_numpy(rng, monkeypatch):
    q, k, v = inputs(rng)
    expected = "numba" if numba_reason() is None else "numpy"
    assert resolve_name("auto", q, k, v) == expected
    out = at.flash_attention(q, k, v, True, backend="auto")
    np.testing.assert_allclose(out, at.flash_attention(q, k, v, True), rtol=1e-12, atol=1e-12)


def test_an_unusable_numba_falls_back_in_auto_and_raises_when_named(rng, monkeypatch):
    from attention_scratch.backends import numba_cpu

    monkeypatch.setattr(numba_cpu, "unavailable_reason", lambda: "the 'numba' backend needs Numba")
    q, k, v = inputs(rng)
    assert resolve_name("auto", q, k, v) == "numpy"
    assert get_backend("auto", q, k, v) is None
    with pytest.raises(BackendUnavailable, match="backend 'numba' is unavailable: .*needs Numba"):
        at.flash_attention(q, k, v, backend="numba")


def test_numba_reason_names_the_missing_package(monkeypatch):
    from attention_scratch.backends import numba_cpu

    monkeypatch.setattr(numba_cpu, "_REQUIRED", numba_cpu._REQUIRED + (("no_such_pkg_xyz", "NoSuch"),))
    assert "NoSuch" in numba_cpu.unavailable_reason()


def test_importing_the_package_imports_neither_numba_nor_cupy():
    code = ("import sys, attention_scratch, attention_scratch.backends, "
            "attention_scratch.backends.numba_cpu as m; m.unavailable_reason(); "
            "print(sorted(x for x in ('numba', 'cupy', 'scipy') if x in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"imported at import time: {done.stdout}"


@pytest.mark.skipif(numba_reason() is not None, reason="Numba backend unavailable: see unavailable_reason")
def test_named_numba_backend_runs_and_rejects_gpu_like_input(rng):
    q, k, v = inputs(rng)
    out, lse = at.flash_attention(q, k, v, backend="numba", return_lse=True)
    ref, ref_lse = at.flash_attention(q, k, v, return_lse=True)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lse, ref_lse, rtol=1e-12, atol=1e-12)
