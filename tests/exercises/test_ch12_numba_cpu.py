"""Graded tests for chapter 12: a vectorised exponential, the parallel tile loop, the dQ pass.

The exercise functions are plain Python; the tests have the student's process
compile them with Numba as the library does (harness_ch12.py, a few seconds per
exercise) and judge the arrays and facts it sends back.
"""
import numpy as np
import pytest

from attention_scratch.backends import unavailable_reason
from attention_scratch.testing import assert_close

if unavailable_reason("numba") is not None:
    pytest.skip(unavailable_reason("numba"), allow_module_level=True)

from attention_scratch.backends.numba_cpu import band_bounds  # noqa: E402
from attention_scratch.flash import flash_attention, flash_attention_backward  # noqa: E402
from attention_scratch.flash_tiles import mask_band  # noqa: E402

HARNESS = "tests/exercises/harness_ch12.py"


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch12_numba_cpu")


# Exercise 12.1 -----------------------------------------------------------------------------------


@pytest.mark.exercise("12.1")
def test_exp_is_accurate_over_the_whole_float32_range(ch):
    x = np.linspace(-86.5, 88.7, 400_001).astype(np.float32)
    got = ch.harness(f"{HARNESS}:exp_values", ch.exp_f32, x)
    ref = np.exp(x.astype(np.float64))
    rel = np.abs(got.astype(np.float64) - ref) / ref
    worst = int(np.argmax(rel))
    eps = np.finfo(np.float32).eps
    assert rel[worst] <= 2 * eps, (
        f"relative error {rel[worst]:.3g} ({rel[worst] / eps:.1f} eps) at x = {x[worst]!r}: got "
        f"{got[worst]!r}, expected {ref[worst]:.9g}. Check the range reduction (r = x - n ln2 with "
        f"|r| <= ln2/2) and the polynomial (degree 7).")


@pytest.mark.exercise("12.1")
def test_exp_special_values(ch):
    x = np.array([-np.inf, -1000.0, -100.0, 0.0, 1.0, 89.0, 1000.0, np.inf, np.nan], dtype=np.float32)
    got = ch.harness(f"{HARNESS}:exp_values", ch.exp_f32, x)
    expected = np.array([0.0, 0.0, 0.0, 1.0, np.e, np.inf, np.inf, np.inf, np.nan], dtype=np.float32)
    for xi, g, e in zip(x, got, expected):
        ok = (np.isnan(g) and np.isnan(e)) or g == e or abs(g - e) <= 2e-7 * abs(e)
        assert ok, f"exp({xi}) gave {g!r}, expected {e!r} (-inf and x < XMIN give 0, x > XMAX gives inf, NaN stays NaN)"


@pytest.mark.exercise("12.1")
def test_exp_stays_in_float32_and_vectorises(ch):
    facts = ch.harness(f"{HARNESS}:exp_code_facts", ch.exp_f32)
    ret = facts["return_type"]
    assert ret == "float32", (f"exp_f32 returns {ret} for a float32 argument: a Python float "
                              "constant promoted the arithmetic to float64; wrap constants in np.float32")
    assert not facts["calls_libm_exp"], "the loop still calls the C library's exp"
    assert facts["vector_fma"], "the loop did not become SIMD code (no vector FMA)"


# Exercise 12.2 -----------------------------------------------------------------------------------


def run_forward(ch, q, k, v, causal, align, window, bq, bk, scale=0.4):
    """The student's parallel loop on the kernel layout: (out, lse, number of parallel loops)."""
    L, S = q.shape[1], k.shape[1]
    lo, hi = band_bounds(mask_band(L, S, causal, align, window), L, S)
    return ch.harness(f"{HARNESS}:forward", ch.forward_parallel, q, k, v, scale, lo, hi, bq, bk)


@pytest.mark.exercise("12.2")
@pytest.mark.parametrize("causal,align,window,bq,bk", [(False, "top_left", None, 4, 5),
                                                       (True, "bottom_right", None, 3, 4),
                                                       (True, "top_left", (3, 1), 5, 2)])
def test_parallel_loop_matches_the_reference_with_gqa(ch, rng, causal, align, window, bq, bk):
    q, k, v = rng.standard_normal((6, 13, 8)), rng.standard_normal((2, 17, 8)), rng.standard_normal((2, 17, 5))
    out, lse, _ = run_forward(ch, q, k, v, causal, align, window, bq, bk)
    assert not np.isnan(out).any(), (f"{int(np.isnan(out).any(-1).sum())} of {out.shape[0] * out.shape[1]} "
                                     "rows were never written: does the loop visit every (head, query block)?")
    ref, ref_lse = flash_attention(q, k, v, causal, scale=0.4, enable_gqa=True, causal_align=align,
                                   window=window, return_lse=True)
    assert_close(out, ref, what=f"out with 6 query heads over 2 key/value heads (head h reads h // 3), "
                 f"block_q={bq}, L=13")
    assert_close(lse, ref_lse, what="lse")


@pytest.mark.exercise("12.2")
def test_parallel_loop_is_a_prange(ch, rng):
    q, k, v = rng.standard_normal((2, 8, 4)), rng.standard_normal((2, 8, 4)), rng.standard_normal((2, 8, 4))
    _, _, parallel_loops = run_forward(ch, q, k, v, True, "top_left", None, 4, 4)
    assert parallel_loops >= 1, "Numba found no parallel loop: use numba.prange"


# Exercise 12.3 -----------------------------------------------------------------------------------


@pytest.mark.exercise("12.3")
@pytest.mark.parametrize("causal,align,window,bq,bk", [(False, "top_left", None, 4, 5),
                                                       (True, "bottom_right", None, 3, 4),
                                                       (True, "bottom_right", (2, 0), 5, 3)])
def test_dq_pass_matches_the_reference(ch, rng, causal, align, window, bq, bk):
    L, S = 11, 9  # L > S with bottom-right alignment leaves the first rows with nothing to attend to
    q, k, v = rng.standard_normal((1, L, 6)), rng.standard_normal((1, S, 6)), rng.standard_normal((1, S, 4))
    g = rng.standard_normal((1, L, 4))
    kw = dict(causal_align=align, window=window, scale=0.5)
    out, lse = flash_attention(q, k, v, causal, return_lse=True, **kw)
    ref_dq = flash_attention_backward(g, q, k, v, out, lse, causal, **kw)[0]
    d = (g * out).sum(-1)  # (1, L): D = rowsum(dO ∘ O)
    lo, hi = band_bounds(mask_band(L, S, causal, align, window), L, S)
    dq = ch.harness(f"{HARNESS}:dq_blocks", ch.dq_query_block, q[0], k[0], v[0], g[0], lse[0], d[0], 0.5,
                    lo, hi, bq, bk)
    assert not np.isnan(dq).any(), "dq holds NaN: rows with lse = +inf must get 0, and every row must be written"
    assert_close(dq, ref_dq[0], what=f"dQ (block_q={bq}, block_k={bk}, mask causal={causal} {align} "
                 f"window={window}); remember the final factor scale")
