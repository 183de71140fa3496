"""The Numba CPU backend: the shared backend test bodies, and Numba's own tests.

class TestNumba runs the bodies every backend runs against the float64 oracle
(tests/flash_backend_cases.py). Here besides: Numba equals the NumPy reference to 1e-12,
one-pass and two-pass backward agree, results do not depend on the thread count, the
block ranges equal the NumPy schedule, and the vectorised exp is accurate.
"""
import dataclasses
import functools
import re

import numpy as np
import pytest

import attention_scratch as at
from attention_scratch.backends import unavailable_reason
from attention_scratch.testing import assert_close, attention_oracle, attention_oracle_backward

if unavailable_reason("numba") is not None:
    pytest.skip(unavailable_reason("numba"), allow_module_level=True)

import flash_backend_cases as cases
import numba
from flash_backend_cases import make_inputs

from attention_scratch.backends.numba.exp import (
    LOOP_FLAGS,
    exp_array,
    libm_exp_array,
    shifted_exp_array,
    tile_exp_array,
)
from attention_scratch.backends.numba.flex import online_softmax_tile
from attention_scratch.backends.numba.forward import online_softmax_rows
from attention_scratch.backends.numba.tiles import (
    VECTOR_MAXIMUM,
    key_blocks,
    mask_tile,
    query_blocks,
    row_max,
    tile_is_full,
)
from attention_scratch.bands import integer_band, mask_band
from attention_scratch.testing import reference_mask

NUMPY = cases.Backend("NumPy", functools.partial(at.flash_attention, backend="numpy"),
                      functools.partial(at.flash_attention_backward, backend="numpy"))
NUMBA = cases.Backend("Numba", functools.partial(at.flash_attention, backend="numba"),
                      functools.partial(at.flash_attention_backward, backend="numba"))
# The same kernels, whose every oracle check also asks for the NumPy reference's numbers to 1e-12.
NUMBA_AS_NUMPY = dataclasses.replace(NUMBA, same_as=NUMPY)


class TestNumba(cases.SharedFlashTests):
    """The test bodies every backend runs (tests/flash_backend_cases.py), on the Numba backend."""

    backend = NUMBA
    tiled_examples = 25

    @pytest.fixture(autouse=True)
    def one_thread_on_the_many_small_cases(self, request):
        """The grids that call the kernels hundreds of times on tiny shapes run on one thread.

        With several threads each call pays a parallel-region wake-up (milliseconds on a busy
        machine), which made these grids slower than all the Numba tests before them. The
        threaded kernels stay covered: test_numba_equals_the_numpy_reference, the ragged and
        low-precision bodies run on every thread, and test_results_do_not_depend_on_the_thread_count
        checks that one thread and all threads give the same bits.
        """
        if request.function.__name__ not in ONE_THREAD:
            yield
            return
        before = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            yield
        finally:
            numba.set_num_threads(before)


ONE_THREAD = {"test_every_block_size", "test_every_pair_of_block_sizes", "test_shapes_and_masks",
              "test_tiled_equals_dense_for_any_block_size",
              "test_gradients_match_central_differences"}


def run(q, k, v, g, mask, bq, bk, backend, scale=None):
    return cases.run({"numba": NUMBA, "numpy": NUMPY}[backend], q, k, v, g, mask, bq, bk,
                     scale=scale)


# Numba against the NumPy reference: the same tiles, so the same numbers to 1e-12.

def check_numba_equals_numpy(q, k, v, g, mask, bq, bk):
    out, lse, grads = run(q, k, v, g, mask, bq, bk, "numba")
    cases.check_same_as(NUMBA_AS_NUMPY, (out, lse, *grads), run(q, k, v, g, mask, bq, bk, "numpy"),
                        f"block_q={bq}, block_k={bk}, mask={mask}, "
                        f"L={q.shape[-2]}, S={k.shape[-2]}")


@pytest.mark.parametrize("mask", cases.ALL_MASKS, ids=cases.ALL_MASK_IDS)
@pytest.mark.parametrize("L,S", [(11, 13), (13, 13), (1, 13), (17, 5), (5, 17), (1, 1)])
def test_numba_equals_the_numpy_reference(rng, mask, L, S):
    # check_against_oracle: the oracle, and (same_as) the NumPy reference to 1e-12;
    # GQA heads (4, 2).
    blocks = ((1, 1), (3, 4), (4, 3), (16, 16), (64, 64))
    cases.case_shapes_and_masks(NUMBA_AS_NUMPY, rng, mask, L, S, blocks=blocks, hq=4, hkv=2)


def test_gqa_and_batch_axes_equal_the_numpy_reference(rng):
    q, k, v, g = make_inputs(rng, 10, 12, hq=6, hkv=2, lead=(2, 3))
    check_numba_equals_numpy(q, k, v, g, (True, "top_left", None), 3, 5)
    q3, k3, v3, g3 = (a[0, 0] for a in (q, k, v, g))  # no batch axis: (H, L, E)
    check_numba_equals_numpy(q3, k3, v3, g3, (False, "top_left", (2, 2)), 4, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("causal", [False, True])
def test_low_precision_error_is_at_most_twice_the_numpy_reference(rng, dtype, causal):
    q, k, v, g = make_inputs(rng, 70, 90, E=16, Ev=16, hq=2, hkv=2, dtype=dtype)
    mask = (causal, "top_left", None)
    got, ref = run(q, k, v, g, mask, 32, 16, "numba"), run(q, k, v, g, mask, 32, 16, "numpy")
    assert got[0].dtype == dtype and all(a.dtype == dtype for a in got[2])
    assert got[1].dtype == ref[1].dtype
    oracle = (attention_oracle(q, k, v, is_causal=causal)[0],
              *attention_oracle_backward(g, q, k, v, is_causal=causal))
    eps = np.finfo(dtype).eps
    for name, a, b, o in zip(("out", "dQ", "dK", "dV"), (got[0], *got[2]), (ref[0], *ref[2]),
                             oracle, strict=True):
        err = np.abs(a.astype(np.float64) - o).max()
        ref_err = np.abs(b.astype(np.float64) - o).max()
        assert err <= 2 * ref_err + eps, (f"{name}: numba error {err:.3g} > 2 x numpy "
                                          f"error {ref_err:.3g}")


# The backward recomputes the probabilities exactly as the forward computed the scores
# (the same scaled-query tiles, the same products, the same exponential).

@pytest.mark.parametrize("two_pass", [False, True])
def test_large_logits_the_rows_of_p_still_sum_to_one(rng, two_pass):
    """float32, L = S = 8, E = 16, scale 1e4: every row of P is one-hot, so with dO = 1 every
    column sum of dV is L. It was 7.9937: the backward's scores differed from the forward's."""
    from attention_scratch.backends.numba import cpu as numba_cpu

    q, k, v, _ = make_inputs(rng, 8, 8, E=16, Ev=16, hq=1, hkv=1, dtype=np.float32)
    out, lse = numba_cpu.flash_attention(q, k, v, scale=1e4, return_lse=True)
    _, _, dv = numba_cpu.flash_attention_backward(np.ones_like(out), q, k, v, out, lse, scale=1e4,
                                                  two_pass=two_pass)
    assert_close(dv.sum(axis=-2), np.full(dv.shape[:-2] + (16,), 8.0), rtol=1e-6, atol=0,
                 what="column sums of dV at scale 1e4")


@pytest.mark.parametrize("scale", [0.25, 1.0, 10.0, 100.0, 1e4, 1e30, 1e36])
@pytest.mark.parametrize("causal", [False, True])
def test_float32_error_within_twice_the_numpy_reference_at_every_logit_scale(rng, scale, causal):
    """Up to float32 overflow (|scores| ~ 1e37 here) the Numba kernels are as accurate as the NumPy
    reference in float32 (docs/design.md §5), worst case against worst case over eight inputs.

    One input is not enough: the kernels' score products (register tiles) round differently from
    BLAS's, and at large logits the largest error of one output is a lottery over which scores
    round which way (at scale 10, causal, the ratio to the reference ran from 0.5 to 2.9 over
    twenty seeds; the worst cases over the seeds differed by 12%)."""
    eps = np.finfo(np.float32).eps
    names = ("out", "lse", "dQ", "dK", "dV")
    worst = {name: [0.0, 0.0, 0.0] for name in names}  # numba error, numpy error, |oracle|
    for _ in range(8):
        q, k, v, g = make_inputs(rng, 40, 50, E=16, Ev=16, hq=2, hkv=1, dtype=np.float32)
        mask = (causal, "top_left", None)
        got, ref = (run(q, k, v, g, mask, 16, 16, b, scale=scale) for b in ("numba", "numpy"))
        ro, rl, _ = attention_oracle(q, k, v, is_causal=causal, scale=scale)
        oracle = (ro, rl, *attention_oracle_backward(g, q, k, v, is_causal=causal, scale=scale))
        for name, a, b, o in zip(names, (got[0], got[1], *got[2]), (ref[0], ref[1], *ref[2]),
                                 oracle, strict=True):
            assert np.isfinite(a).all(), f"{name} at scale {scale:g}: not finite"
            for i, x in enumerate((np.abs(a.astype(np.float64) - o).max(),
                                   np.abs(b.astype(np.float64) - o).max(), np.abs(o).max())):
                worst[name][i] = max(worst[name][i], x)
    for name, (err, ref_err, size) in worst.items():
        assert err <= 2 * ref_err + eps * size, \
            f"{name} at scale {scale:g}: numba error {err:.3g} > 2 x numpy error {ref_err:.3g}"


@pytest.mark.parametrize("seed", [1, 5])
def test_float32_causal_gradients_within_twice_dense(seed):
    """The issue's case, (5, 2, 200, 128) causal float32:
    dQ's error was 4.5x dense float32 (seed 5)."""
    rng = np.random.default_rng(seed)
    q, k, v, g = (rng.standard_normal((5, 2, 200, 128)).astype(np.float32) for _ in range(4))
    out, lse = at.flash_attention(q, k, v, True, return_lse=True, backend="numba")
    grads = at.flash_attention_backward(g, q, k, v, out, lse, True, backend="numba")
    cases.check_low_precision("Numba (5, 2, 200, 128)", out, lse, grads, q, k, v, g, True,
                              np.float32, np.finfo(np.float32).eps)


def test_same_result_as_numpy_flash_in_float32(rng):
    cases.case_matches_numpy_reference_in_float32(NUMBA, rng)


@pytest.mark.parametrize("mask", [(False, "top_left", None), (True, "bottom_right", (5, 2))])
@pytest.mark.parametrize("hq,hkv", [(1, 1), (6, 2)])
def test_one_pass_and_two_pass_backward_agree(rng, mask, hq, hkv):
    from attention_scratch.backends.numba import backward as numba_backward
    from attention_scratch.backends.numba import cpu as numba_cpu

    q, k, v, g = make_inputs(rng, 45, 38, E=8, Ev=6, hq=hq, hkv=hkv)
    causal, align, window = mask
    kw = dict(enable_gqa=hq != hkv, causal_align=align, window=window, block_q=8, block_k=4)
    out, lse = numba_cpu.flash_attention(q, k, v, causal, return_lse=True, **kw)
    one = numba_cpu.flash_attention_backward(g, q, k, v, out, lse, causal, **kw)
    two = numba_cpu.flash_attention_backward(g, q, k, v, out, lse, causal, two_pass=True, **kw)
    assert numba_backward.dq_chunks(hkv, 10) > 1, "the one-pass kernel should use several dQ copies"
    for name, a, b in zip(("dQ", "dK", "dV"), one, two, strict=True):
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
        for a, b in zip((first[0], first[1], *first[2]), (other[0], other[1], *other[2]),
                        strict=True):
            assert np.array_equal(a, b), "results changed with the number of threads"


@pytest.mark.parametrize("mask", cases.ALL_MASKS, ids=cases.ALL_MASK_IDS)
@pytest.mark.parametrize("L,S,b", [(17, 23, 4), (23, 17, 5), (1, 9, 2), (16, 16, 16)])
def test_block_ranges_are_the_tiles_the_mask_keeps_something_in(mask, L, S, b):
    """The compiled block ranges visit exactly the tiles holding a key some of
    their rows may see."""
    causal, align, window = mask
    lo, hi = integer_band(mask_band(L, S, causal, align, window), L, S)
    keep = reference_mask(L, S, is_causal=causal, causal_align=align, window=window)  # (L, S)
    for i0 in range(0, L, b):
        tiles = [c for c in range(-(-S // b)) if keep[i0:i0 + b, c * b:(c + 1) * b].any()]
        first, end = key_blocks(i0, min(i0 + b, L), S, b, lo, hi)
        assert list(range(first, end)) == tiles, (mask, i0)
        for c in tiles:
            full = tile_is_full(i0, min(i0 + b, L), c * b, min(S, (c + 1) * b), lo, hi)
            assert full == bool(keep[i0:i0 + b, c * b:(c + 1) * b].all()), (mask, i0, c)
    for j0 in range(0, S, b):
        tiles = [r for r in range(-(-L // b)) if keep[r * b:(r + 1) * b, j0:j0 + b].any()]
        first, end = query_blocks(j0, min(j0 + b, S), L, b, lo, hi)
        assert list(range(first, end)) == tiles, (mask, j0)


# The exponential.

def exp_errors(dtype, x, loop=exp_array):
    out = loop(x, np.empty_like(x))
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


@pytest.mark.parametrize("dtype,bound", [(np.float32, 2.0), (np.float64, 2.0)])
def test_the_kernels_exp_is_accurate_and_gives_0_and_inf_at_its_ends(dtype, bound):
    """tile_exp: within 2 eps wherever the result is a normal float below 2^(n_max - 1/2) (float32:
    the degree-5 minimax polynomial, 0.8 eps, plus rounding); exactly 0 below the clamp, +inf
    above, NaN kept, subnormals close."""
    n_min, n_max = (-127, 128) if dtype == np.float32 else (-1023, 1024)
    ln2 = np.log(2.0)
    x = np.linspace((n_min - 3) * ln2, (n_max + 3) * ln2, 1_000_003).astype(dtype)
    out, ref, normal, _ = exp_errors(dtype, x, tile_exp_array)
    inside = normal & (x.astype(np.float64) < (n_max - 0.5) * ln2 - 1e-3)
    rel = np.abs(out[inside] - ref[inside]) / ref[inside]
    assert rel.max() / np.finfo(dtype).eps <= bound, f"max relative error {rel.max():.3g}"
    assert np.all(np.isposinf(out[x.astype(np.float64) >= (n_max - 0.5) * ln2 + 1e-3]))
    assert np.all(out[x.astype(np.float64) <= (n_min + 0.5) * ln2 - 1e-3] == 0)
    small = ~normal & (ref < 1)  # between the clamp and the smallest normal: 0 or close
    assert np.all(np.abs(out[small] - ref[small]) <= 2 * np.finfo(dtype).tiny)
    special = np.array([-np.inf, np.inf, np.nan, 0.0, -0.0, -1e30], dtype=dtype)
    got = tile_exp_array(special, np.empty_like(special))
    assert got[0] == 0 and np.isposinf(got[1]) and np.isnan(got[2])
    assert got[3] == 1 and got[4] == 1 and got[5] == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_forward_exp_equals_the_kernels_exp_wherever_it_may_be_called(dtype):
    """shifted_exp, the online softmax's exponential, is tile_exp without the upper clamp: for
    every x <= 0, -inf and NaN it gives tile_exp's bits."""
    n_min = -127 if dtype == np.float32 else -1023
    x = np.linspace((n_min - 3) * np.log(2.0), 0.0, 1_000_003).astype(dtype)
    x = np.concatenate([x, np.array([-np.inf, np.nan, -0.0, -1e30, -np.finfo(dtype).tiny], dtype)])
    got = shifted_exp_array(x, np.empty_like(x))
    want = tile_exp_array(x, np.empty_like(x))
    assert np.array_equal(got, want, equal_nan=True)
    assert got[-5] == 0 and np.isnan(got[-4]) and got[-3] == 1 and got[-1] == 1


def test_mask_tile_fills_exactly_the_entries_outside_the_band(rng):
    """The two runs per row that mask_tile fills are the entries with j - i outside [lo, hi],
    in both layouts, for tiles anywhere against bands of any width."""
    for _ in range(2000):
        rows, cols = (int(n) for n in rng.integers(1, 12, 2))
        i0, j0 = (int(n) for n in rng.integers(0, 30, 2))
        lo = int(rng.integers(-40, 20))
        hi = lo + int(rng.integers(0, 40))
        key_major = bool(rng.integers(0, 2))
        tile = np.zeros((rows, cols))
        mask_tile(tile, key_major, i0, j0, lo, hi, 1.0)
        a, b = np.arange(rows)[:, None], np.arange(cols)[None, :]  # tile row, column
        offset = (j0 + a) - (i0 + b) if key_major else (j0 + b) - (i0 + a)  # (rows, cols): j - i
        expected = ((offset < lo) | (offset > hi)).astype(float)
        assert np.array_equal(tile, expected), (rows, cols, i0, j0, lo, hi, key_major)


def assembly(dispatcher, sig=(numba.float32[::1], numba.float32[::1])):
    """The machine code of a fresh, uncached compilation (cached code cannot be inspected)."""
    fresh = numba.njit(fastmath=LOOP_FLAGS)(dispatcher.py_func)
    fresh.compile(sig)
    return fresh.inspect_asm(sig)


def test_tile_loops_store_without_masks():
    """The running maximum and the mask are written with plain stores: a masked store
    (vmaskmovps) made the max loop of a 256 x 256 tile as slow as its exponentials on AMD Zen."""
    vec, tile = numba.float32[::1], numba.float32[:, ::1]
    for kernel, sig in ((online_softmax_tile, (tile, vec, vec, vec, vec)),
                        (online_softmax_rows, (tile, numba.int64, vec, vec, vec, vec))):
        softmax = assembly(kernel, sig)
        assert re.search(r"v\w+ps\s+.*%[yz]mm", softmax), f"{kernel.__name__} is not vectorised"
        assert "vmaskmov" not in softmax, f"{kernel.__name__} stores through a mask"
    masking = assembly(mask_tile, (tile, numba.boolean, numba.int64, numba.int64, numba.int64,
                                   numba.int64, numba.float32))
    assert "vmaskmov" not in masking, "mask_tile stores through a mask"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_max_is_a_vectorised_maximum_that_keeps_nan(rng, dtype):
    """row_max reduces in SIMD lanes (llvm.maximum) and still returns NaN for a NaN anywhere:
    at the start, in a lane, in the scalar tail, or as the starting value."""
    kind = numba.float32 if dtype == np.float32 else numba.float64
    asm = assembly(row_max, (kind[::1], kind))
    vector = re.search(r"vmaxp[sd]\s+.*%[yz]mm", asm)
    # Numba 0.60/0.61 (LLVM 14/15) cannot compile llvm.maximum: row_max is scalar there
    assert vector if VECTOR_MAXIMUM else "fmaximum" not in asm, "row_max does not reduce in vectors"
    for n in (0, 1, 7, 8, 9, 31, 256, 259):
        row = rng.standard_normal(n).astype(dtype)
        start = dtype(rng.standard_normal())
        assert row_max(row, start) == max([start, *row])
        assert row_max(row, dtype(-np.inf)) == (row.max() if n else -np.inf)
        assert np.isnan(row_max(row, dtype(np.nan)))
        for where in {0, n // 2, n - 1} if n else ():
            with_nan = row.copy()
            with_nan[where] = np.nan
            assert np.isnan(row_max(with_nan, start)), (n, where)
    assert row_max(np.full(5, -np.inf, dtype), dtype(-np.inf)) == -np.inf


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_online_softmax_rows_folds_a_tile_as_the_formulas_say(rng, dtype):
    """One query-major tile folded into a running state: row 0 has seen no key and its tile is
    all -inf (stays empty: p = 0, l = 0), row 1 saw keys but this tile is masked out (alpha 1),
    row 2 holds a NaN (its sum turns NaN, no other row's does), the rest are ordinary. Only the
    first ``n_cols`` columns are scores: the three after them (NaN here) are neither read nor
    written."""
    bq, bk = 6, 21
    wide = np.full((bq, bk + 3), np.nan, dtype)  # (bq, bk + 3): room the kernel must not touch
    t = wide[:, :bk]
    t[:] = rng.standard_normal((bq, bk)).astype(dtype) * 4
    t[0] = t[1] = -np.inf
    t[2, 5] = np.nan
    t[4, :3] = -np.inf
    m = np.array([-np.inf, 2.0, 0.5, -np.inf, 9.0, 1.0], dtype)
    l = np.array([0.0, 3.0, 1.5, 0.0, 2.0, 4.0], dtype)
    expect_t, expect_m, expect_l = t.copy(), m.copy(), l.copy()
    expect_alpha = np.ones(bq, dtype)
    for r in range(bq):
        new_max = np.max([m[r], *t[r]])  # NaN if the row holds one
        shift = new_max if new_max > -np.inf else 0.0
        expect_alpha[r] = np.exp(m[r] - shift)
        expect_t[r] = np.exp(t[r] - shift)
        expect_m[r] = new_max
        expect_l[r] = l[r] * expect_alpha[r] + expect_t[r].sum()
    alpha, shift = np.empty(bq, dtype), np.empty(bq, dtype)
    online_softmax_rows(wide, bk, m, l, alpha, shift)
    assert np.isnan(wide[:, bk:]).all(), "online_softmax_rows wrote past n_cols"
    eps = np.finfo(dtype).eps
    for got, want in ((t, expect_t), (m, expect_m), (l, expect_l), (alpha, expect_alpha)):
        assert_close(got, want, rtol=8 * eps, atol=0)
    assert np.isnan(l[2]) and np.isfinite(np.delete(l, 2)).all()
    assert (t[0] == 0).all() and l[0] == 0 and alpha[1] == 1


def test_exp_loop_is_vectorised_and_calls_no_libm():
    asm = assembly(exp_array)
    assert re.search(r"vfmadd\w+\s+%[yz]mm", asm), "no SIMD fused multiply-add in the exp loop"
    assert "expf" not in asm
    # the baseline calls the C library, element by element
    assert "expf" in assembly(libm_exp_array)


@pytest.mark.parametrize("heads,block", [(1, 64), (1, 16), (8, 16)])
def test_a_call_keeps_its_scratch_and_never_returns_it(rng, heads, block):
    """The entry points pack into scratch kept per thread (backends/numba/workspace.py): a second
    call reuses it, and changes nothing the first call returned (with one key block the one-pass
    backward has a single copy of dQ, which must be copied out, not returned)."""
    from attention_scratch.backends.numba import cpu as numba_cpu
    from attention_scratch.backends.numba import workspace

    workspace.release()
    first = make_inputs(rng, 40, 40, E=16, Ev=16, hq=heads, hkv=heads, dtype=np.float32)
    second = make_inputs(rng, 40, 40, E=16, Ev=16, hq=heads, hkv=heads, dtype=np.float32)
    results = []
    for q, k, v, g in (first, second):
        out, lse = numba_cpu.flash_attention(q, k, v, True, return_lse=True, block_q=block,
                                             block_k=block)
        grads = numba_cpu.flash_attention_backward(g, q, k, v, out, lse, True, block_q=block,
                                                   block_k=block)
        results.append([a.copy() for a in (out, lse, *grads)] + [out, lse, *grads])
        if len(results) == 1:
            held = workspace.held_bytes()
            assert held > 0
    assert workspace.held_bytes() == held, "the second call (same shapes) allocated new scratch"
    kept, returned = results[0][:5], results[0][5:]
    for name, a, b in zip(("out", "lse", "dQ", "dK", "dV"), kept, returned, strict=True):
        assert np.array_equal(a, b), f"{name} of the first call changed during the second"
    workspace.release()
    assert workspace.held_bytes() == 0
