"""Programmable attention (chapter 16), Numba backend: the shared flex test bodies, agreement with
the NumPy reference, and the error for functions Numba cannot compile."""
import functools

import numpy as np
import pytest

import attention_scratch as at
from attention_scratch.backends import unavailable_reason

if unavailable_reason("numba") is not None:
    pytest.skip(unavailable_reason("numba"), allow_module_level=True)

import flex_backend_cases as cases

from attention_scratch import flex_mods
from attention_scratch.testing import assert_close

NUMBA = cases.Backend("Numba", functools.partial(at.flex_attention, backend="numba"),
                      functools.partial(at.flex_attention_backward, backend="numba"))


class TestNumba(cases.SharedFlexTests):
    """The shared flex bodies on the Numba kernels."""

    backend = NUMBA


def test_numba_equals_numpy_on_a_bigbird_mask(rng):
    """BigBird's random blocks, ALiBi, GQA, ragged tiles: Numba and NumPy agree to 1e-12."""
    L = S = 70
    q, k, v, g = cases.make_inputs(rng, B=2, hq=4, hkv=2, L=L, S=S)
    mod = flex_mods.bigbird(3, 2, 2, 8, -(-S // 8), rng)
    bm = at.create_block_mask(mod, None, None, L, S, BLOCK_SIZE=(8, 16))
    kw = {"score_mod": flex_mods.alibi(at.alibi_slopes(4), L, S), "block_mask": bm,
          "enable_gqa": True}
    results = []
    for backend in ("numpy", "numba"):
        out, lse = at.flex_attention(q, k, v, return_lse=True, backend=backend, **kw)
        results.append((out, lse, *at.flex_attention_backward(g, q, k, v, out, lse,
                                                              backend=backend, **kw)))
    for name, got, ref in zip(("out", "lse", "dQ", "dK", "dV"), results[1], results[0],
                              strict=True):
        assert_close(got, ref, rtol=1e-12, atol=1e-12, what=f"Numba vs NumPy, {name}")


def test_a_function_numba_cannot_compile_says_which_backend_to_use(rng):
    q, k, v, _ = cases.make_inputs(rng, L=8, S=8)
    lookup = {0: 1.0}  # a Python dict: NumPy can call it, Numba cannot compile it

    def python_only(score, b, h, q_idx, kv_idx):
        return score + lookup[0]

    with pytest.raises(TypeError, match="backend='numpy'"):
        at.flex_attention(q, k, v, score_mod=python_only, enable_gqa=True, backend="numba")
    out = at.flex_attention(q, k, v, score_mod=lambda s, b, h, qi, kv: s + np.tanh(s),
                            enable_gqa=True, backend="auto")
    assert out.shape == (2, 4, 8, 6)
