"""Backend dispatch: names, errors, the "auto" choice, lazy imports, and the backend protocol."""
import importlib
import inspect
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
    with pytest.raises(ValueError,
                       match=r"backend must be one of 'numpy', 'numba', 'cupy', 'auto'"):
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
    with pytest.raises(BackendUnavailable, match=r"(?i)cupy") as err:
        at.flash_attention(q, k, v, backend="cupy")
    assert "'cupy'" in str(err.value)
    with pytest.raises(BackendUnavailable, match=r"(?i)cupy"):
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
    from attention_scratch.backends.numba import cpu as numba_cpu

    monkeypatch.setattr(numba_cpu, "unavailable_reason", lambda: "the 'numba' backend needs Numba")
    q, k, v = inputs(rng)
    assert resolve_name("auto", q, k, v) == "numpy"
    assert get_backend("auto", q, k, v) is None
    with pytest.raises(BackendUnavailable, match=r"backend 'numba' is unavailable: .*needs Numba"):
        at.flash_attention(q, k, v, backend="numba")


def test_numba_reason_names_the_missing_package(monkeypatch):
    from attention_scratch.backends.numba import cpu as numba_cpu

    monkeypatch.setattr(numba_cpu, "_REQUIRED", numba_cpu._REQUIRED
                        + (("no_such_pkg_xyz", "NoSuch"),))
    assert "NoSuch" in numba_cpu.unavailable_reason()


def test_importing_the_package_imports_neither_numba_nor_cupy():
    code = ("import sys, attention_scratch, attention_scratch.backends, "
            "attention_scratch.backends.numba.cpu as m; m.unavailable_reason(); "
            "print(sorted(x for x in ('numba', 'cupy', 'scipy') if x in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"imported at import time: {done.stdout}"


@pytest.mark.skipif(numba_reason() is not None,
                    reason="Numba backend unavailable: see unavailable_reason")
def test_named_numba_backend_runs_and_rejects_gpu_like_input(rng):
    q, k, v = inputs(rng)
    out, lse = at.flash_attention(q, k, v, backend="numba", return_lse=True)
    ref, ref_lse = at.flash_attention(q, k, v, return_lse=True)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lse, ref_lse, rtol=1e-12, atol=1e-12)


def _matches(function, protocol_method):
    """Problems of ``function``'s signature against the protocol's (no ``self``);
    [] when it matches."""
    want = list(inspect.signature(protocol_method).parameters.values())[1:]
    have = list(inspect.signature(function).parameters.values())
    problems = []
    for w, h in zip(want, have, strict=False):  # a length mismatch is reported below
        if (w.name, w.kind, w.default) != (h.name, h.kind, h.default):
            problems.append(f"{h} where the protocol has {w}")
    if len(have) < len(want):
        problems.append(f"missing {[w.name for w in want[len(have):]]}")
    for extra in have[len(want):]:  # a backend's own options: keyword-only, with a default
        if (extra.kind is not inspect.Parameter.KEYWORD_ONLY
                or extra.default is inspect.Parameter.empty):
            problems.append(f"extra parameter {extra} must be keyword-only with a default")
    return problems


BACKEND_MODULES = ["attention_scratch.backends.numba.cpu", "attention_scratch.backends.cuda.gpu",
                   "attention_scratch.backends.cuda.emulator"]


@pytest.mark.parametrize("name", BACKEND_MODULES + ["numpy reference"])
def test_every_backend_has_the_signatures_of_the_protocol(name):
    from attention_scratch import flash
    from attention_scratch.backends.protocol import FlashBackend

    if name == "numpy reference":
        module = type("NumPy", (), {
            "flash_attention": flash.flash_attention_numpy,
            "flash_attention_backward": flash.flash_attention_backward_numpy})
        methods = ("flash_attention", "flash_attention_backward")
    else:
        module = importlib.import_module(name)  # imports without Numba or CuPy
        assert isinstance(module, FlashBackend), f"{name} lacks a function of the protocol"
        methods = ("unavailable_reason", "flash_attention", "flash_attention_backward", "tile_plan")
    for method in methods:
        problems = _matches(getattr(module, method), getattr(FlashBackend, method))
        assert not problems, f"{name}.{method}: " + "; ".join(problems)


def test_the_public_functions_have_the_protocol_signatures_plus_backend():
    from attention_scratch.backends.protocol import FlashBackend

    for public, method in ((at.flash_attention, "flash_attention"),
                           (at.flash_attention_backward, "flash_attention_backward")):
        params = list(inspect.signature(public).parameters.values())
        assert params[-1].name == "backend"
        assert not _matches(_without_last(public), getattr(FlashBackend, method))


def _without_last(function):
    """``function`` seen without its last parameter (``backend``)."""
    signature = inspect.signature(function)
    def stub():
        pass

    stub.__signature__ = signature.replace(parameters=list(signature.parameters.values())[:-1])
    return stub


def test_a_backend_with_another_signature_is_caught():
    from attention_scratch.backends.protocol import FlashBackend

    def positional_block_sizes(query, key, value, is_causal=False, scale=None, enable_gqa=False,
                               causal_align="top_left", window=None, block_q=64, block_k=64,
                               return_lse=False):
        pass

    assert _matches(positional_block_sizes, FlashBackend.flash_attention)
