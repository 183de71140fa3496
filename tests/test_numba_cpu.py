"""The Numba CPU backend: the same results as the NumPy reference, on the same grid as test_flash.py."""
import re

import numpy as np
import pytest

import attention_scratch as at
from attention_scratch.backends import unavailable_reason
from attention_scratch.testing import assert_close, attention_oracle, attention_oracle_backward

if unavailable_reason("numba") is not None:
    pytest.skip(unavailable_reason("numba"), allow_module_level=True)

import numba  # noqa: E402

from attention_scratch.backends.numba_exp import LOOP_FLAGS, exp_array, libm_exp_array  # noqa: E402
from attention_scratch.backends.numba_tiles import key_blocks, query_blocks  # noqa: E402
from attention_scratch.backends.numba_cpu import band_bounds  # noqa: E402
from attention_scratch.flash_tiles import key_block_range, mask_band, query_block_range  # noqa: E402

MASKS = [
    (False, "top_left", None),
    (True, "top_left", None),
    (True, "bottom_right", None),
    (False, "top_left", (3, 1)),
    (True, "bottom_right", (4, None)),
    (True, "bottom_right", (2, 0)),
    (False, "top_left", (None, 2)),
    (True, "top_left", (1, 3)),
]


def make_inputs(rng, L, S, E=5, Ev=7, hq=4, hkv=2, lead=(1,), dtype=np.float64):
    q = rng.standard_normal(lead + (hq, L, E)).astype(dtype)
    k = rng.standard_normal(lead + (hkv, S, E)).astype(dtype)
    v = rng.standard_normal(lead + (hkv, S, Ev)).astype(dtype)
    g = rng.standard_normal(lead + (hq, L, Ev)).astype(dtype)
    return q, k, v, g


def run(q, k, v, g, mask, bq, bk, backend, scale=None):
    causal, align, window = mask
    kw = dict(enable_gqa=q.shape[-3] != k.shape[-3], causal_align=align, window=window,
              block_q=bq, block_k=bk, scale=scale, backend=backend)
    out, lse = at.flash_attention(q, k, v, causal, return_lse=True, **kw)
    grads = at.flash_attention_backward(g, q, k, v, out, lse, causal, **kw)
    return out, lse, grads


def check_numba_equals_numpy(q, k, v, g, mask, bq, bk, **tol):
    got = run(q, k, v, g, mask, bq, bk, "numba")
    ref = run(q, k, v, g, mask, bq, bk, "numpy")
    where = f"block_q={bq}, block_k={bk}, mask={mask}, L={q.shape[-2]}, S={k.shape[-2]}"
    for name, a, b in zip(("out", "lse", "dQ", "dK", "dV"), (got[0], got[1], *got[2]), (ref[0], ref[1], *ref[2])):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{name}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        assert_close(a, b, what=f"{name}, numba vs numpy ({where})", **tol)


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("L,S", [(11, 13), (13, 13), (1, 13), (17, 5), (5, 17), (1, 1)])
def test_numba_equals_the_numpy_reference(rng, mask, L, S):
    q, k, v, g = make_inputs(rng, L, S)
    for bq, bk in ((1, 1), (3, 4), (4, 3), (16, 16), (64, 64)):
        check_numba_equals_numpy(q, k, v, g, mask, bq, bk, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mask", MASKS[:5])
def test_ragged_shapes_match_the_oracle(rng, mask):
    q, k, v, g = make_inputs(rng, 97, 131, E=59, Ev=37, hq=2, hkv=1)
    causal, align, window = mask
    out, lse, grads = run(q, k, v, g, mask, 16, 32, "numba")
    ref_out, ref_lse, _ = attention_oracle(q, k, v, is_causal=causal, causal_align=align, window=window)
    ref_grads = attention_oracle_backward(g, q, k, v, is_causal=causal, causal_align=align, window=window)
    assert_close(out, ref_out, what="output")
    assert_close(lse, ref_lse, what="lse")
    for name, a, b in zip(("dQ", "dK", "dV"), grads, ref_grads):
        assert_close(a, b, what=name)


def test_gqa_batch_axes_and_scale(rng):
    q, k, v, g = make_inputs(rng, 10, 12, hq=6, hkv=2, lead=(2, 3))
    check_numba_equals_numpy(q, k, v, g, (True, "top_left", None), 3, 5, rtol=1e-12, atol=1e-12)
    out, lse, grads = run(q, k, v, g, (True, "top_left", None), 3, 5, "numba", scale=0.3)
    ref_out, ref_lse, _ = attention_oracle(q, k, v, is_causal=True, scale=0.3)
    assert_close(out, ref_out, what="GQA output, scale=0.3")
    for a, b in zip(grads, attention_oracle_backward(g, q, k, v, is_causal=True, scale=0.3)):
        assert_close(a, b, what="GQA gradient, scale=0.3")
    q3, k3, v3, g3 = (a[0, 0] for a in (q, k, v, g))  # no batch axis: (H, L, E)
    check_numba_equals_numpy(q3, k3, v3, g3, (False, "top_left", (2, 2)), 4, 3, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("causal", [False, True])
def test_low_precision_error_is_at_most_twice_the_numpy_reference(rng, dtype, causal):
    q, k, v, g = make_inputs(rng, 70, 90, E=16, Ev=16, hq=2, hkv=2, dtype=dtype)
    mask = (causal, "top_left", None)
    got, ref = run(q, k, v, g, mask, 32, 16, "numba"), run(q, k, v, g, mask, 32, 16, "numpy")
    assert got[0].dtype == dtype and all(a.dtype == dtype for a in got[2])
    assert got[1].dtype == ref[1].dtype
    oracle = (attention_oracle(q, k, v, is_causal=causal)[0], *attention_oracle_backward(g, q, k, v, is_causal=causal))
    eps = np.finfo(dtype).eps
    for name, a, b, o in zip(("out", "dQ", "dK", "dV"), (got[0], *got[2]), (ref[0], *ref[2]), oracle):
        err = np.abs(a.astype(np.float64) - o).max()
        ref_err = np.abs(b.astype(np.float64) - o).max()
        assert err <= 2 * ref_err + eps, f"{name}: numba error {err:.3g} > 2 x numpy error {ref_err:.3g}"


def test_empty_rows_and_sequences(rng):
    q, k, v, g = make_inputs(rng, 9, 4, hq=2, hkv=2)
    out, lse, (dq, dk, dv) = run(q, k, v, g, (True, "bottom_right", None), 2, 3, "numba")
    empty = np.arange(9) < 5
    assert not any(np.isnan(a).any() for a in (out, lse, dq, dk, dv))
    assert np.all(out[..., empty, :] == 0) and np.all(np.isposinf(lse[..., empty]))
    assert np.all(dq[..., empty, :] == 0)
    for L, S in ((0, 5), (3, 0)):
        q, k, v, g = make_inputs(rng, L, S, hq=2, hkv=2)
        out, lse, (dq, dk, dv) = run(q, k, v, g, (True, "bottom_right", None), 4, 4, "numba")
        assert out.shape == (1, 2, L, 7) and np.all(out == 0) and np.all(np.isposinf(lse))
        assert dq.shape == q.shape and dk.shape == k.shape and np.all(dq == 0)


def test_nan_in_a_masked_position_does_not_leak(rng):
    q, k, v, g = make_inputs(rng, 8, 8, hq=1, hkv=1)
    k[..., 7, :] = np.nan  # with L = 7 the last key is masked for every row (causal, top-left)
    out, lse, (dq, dk, dv) = run(q[..., :7, :], k, v, g[..., :7, :], (True, "top_left", None), 4, 4, "numba")
    ref = run(q[..., :7, :], k[..., :7, :], v[..., :7, :], g[..., :7, :], (True, "top_left", None), 4, 4, "numpy")
    assert_close(out, ref[0], what="output with a NaN key in a masked position")
    assert_close(lse, ref[1], what="lse with a NaN key in a masked position")
    assert_close(dv[..., :7, :], ref[2][2], what="dV with a NaN key in a masked position")
    assert np.all(dk[..., 7, :] == 0) and np.all(dv[..., 7, :] == 0), "a key no row sees gets gradient 0"


@pytest.mark.parametrize("mask", [(False, "top_left", None), (True, "bottom_right", (5, 2))])
@pytest.mark.parametrize("hq,hkv", [(1, 1), (6, 2)])
def test_one_pass_and_two_pass_backward_agree(rng, mask, hq, hkv):
    from attention_scratch.backends import numba_cpu

    q, k, v, g = make_inputs(rng, 45, 38, E=8, Ev=6, hq=hq, hkv=hkv)
    causal, align, window = mask
    kw = dict(enable_gqa=hq != hkv, causal_align=align, window=window, block_q=8, block_k=4)
    out, lse = numba_cpu.flash_attention(q, k, v, causal, return_lse=True, **kw)
    one = numba_cpu.flash_attention_backward(g, q, k, v, out, lse, causal, **kw)
    two = numba_cpu.flash_attention_backward(g, q, k, v, out, lse, causal, two_pass=True, **kw)
    assert numba_cpu.dq_chunks(hkv, 10) > 1, "the one-pass kernel should use several dQ copies here"
    for name, a, b in zip(("dQ", "dK", "dV"), one, two):
        assert_close(a, b, rtol=1e-12, atol=1e-12, what=f"{name}: one pass vs two passes")


def test_results_do_not_depend_on_the_thread_count(rng):
    q, k, v, g = make_inputs(rng, 150, 170, E=16, Ev=8, hq=4, hkv=2, dtype=np.float32)
    before = numba.get_num_threads()
    try:
        runs = []
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            runs.append(run(q, k, v, g, (True, "top_left", None), 32, 32, "numba"))
    finally:
        numba.set_num_threads(before)
    first = runs[0]
    for other in runs[1:]:
        for a, b in zip((first[0], first[1], *first[2]), (other[0], other[1], *other[2])):
            assert np.array_equal(a, b), "results changed with the number of threads"


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("L,S,b", [(17, 23, 4), (23, 17, 5), (1, 9, 2), (16, 16, 16)])
def test_block_ranges_equal_the_numpy_schedule(mask, L, S, b):
    causal, align, window = mask
    band = mask_band(L, S, causal, align, window)
    lo, hi = band_bounds(band, L, S)
    for i0 in range(0, L, b):
        first, end = key_blocks(i0, min(i0 + b, L), S, b, lo, hi)
        assert range(first, end) == key_block_range(i0, min(i0 + b, L), S, b, band)
    for j0 in range(0, S, b):
        first, end = query_blocks(j0, min(j0 + b, S), L, b, lo, hi)
        assert range(first, end) == query_block_range(j0, min(j0 + b, S), L, b, band)


# The exponential.

def exp_errors(dtype, x):
    out = exp_array(x, np.empty_like(x))
    with np.errstate(over="ignore"):
        ref = np.exp(x.astype(np.float64))
    normal = (ref >= 2 * np.finfo(dtype).tiny) & (ref <= np.finfo(dtype).max)
    rel = np.abs(out[normal] - ref[normal]) / ref[normal]
    return out, ref, normal, rel.max() / np.finfo(dtype).eps


@pytest.mark.parametrize("dtype,bound", [(np.float32, 1.0), (np.float64, 2.0)])
def test_exp_error_over_the_whole_range(dtype, bound):
    hi = 90.0 if dtype == np.float32 else 712.0
    x = np.linspace(-hi - 20, hi, 1_000_003).astype(dtype)
    out, ref, normal, ulps = exp_errors(dtype, x)
    assert ulps <= bound, f"{np.dtype(dtype)} exp: max relative error {ulps:.2f} eps > {bound} eps"
    small = ~normal & (ref < 1)
    assert np.all((out[small] == 0) | (np.abs(out[small] - ref[small]) <= 2 * np.finfo(dtype).tiny))
    assert np.all(np.isposinf(out[ref > np.finfo(dtype).max]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_special_values(dtype):
    x = np.array([-np.inf, np.inf, np.nan, 0.0, -0.0, 1.0, -1.0], dtype=dtype)
    out = exp_array(x, np.empty_like(x))
    assert out[0] == 0 and np.isposinf(out[1]) and np.isnan(out[2])
    assert out[3] == 1 and out[4] == 1
    assert_close(out[5:], np.exp(x[5:]).astype(dtype), what="exp(±1)")


def assembly(dispatcher):
    """The machine code of a fresh, uncached compilation (cached code cannot be inspected)."""
    fresh = numba.njit(fastmath=LOOP_FLAGS)(dispatcher.py_func)
    sig = (numba.float32[::1], numba.float32[::1])
    fresh.compile(sig)
    return fresh.inspect_asm(sig)


def test_exp_loop_is_vectorised_and_calls_no_libm():
    asm = assembly(exp_array)
    assert re.search(r"vfmadd\w+\s+%[yz]mm", asm), "no SIMD fused multiply-add in the exp loop"
    assert "expf" not in asm
    assert "expf" in assembly(libm_exp_array)  # the baseline calls the C library, element by element
