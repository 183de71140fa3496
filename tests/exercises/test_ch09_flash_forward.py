"""Graded tests for chapter 9: one forward tile, the final normalisation, tile classification.

The expected running state (m, l, acc) of a set of keys is derived from the float64 oracle's output
and log-sum-exp; every returned array is compared whole, with its shape and dtype
(``checks.check_close``). The grader fails any change of an argument in place (m, l, acc included).
"""
import contextlib
import itertools
import warnings

import numpy as np
import pytest

from attention_scratch.course.checks import check_close, expect_array, expect_tuple
from attention_scratch.bands import mask_band
from attention_scratch.testing import attention_oracle, reference_mask


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch09_flash_forward")


def empty_state(shape, ev, dtype=np.float64):
    return np.full(shape, -np.inf, dtype), np.zeros(shape, dtype), np.zeros(shape + (ev,), dtype)


def state_of(q, k, v, scale, keep=None):
    """The running state after every key of k, v: m = max kept score, l = Σ exp(s - m), acc = Σ exp(s - m)·v.

    Derived from the oracle: l = exp(lse - m) and acc = out·l; a row with no kept key has
    (-inf, 0, 0). Shapes: q (..., bq, E), k (..., S, E), v (..., S, Ev), leading axes broadcast.
    """
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    q = np.broadcast_to(q, lead + q.shape[-2:]).astype(np.float64)  # (..., bq, E)
    k = np.broadcast_to(k, lead + k.shape[-2:]).astype(np.float64)  # (..., S, E)
    v = np.broadcast_to(v, lead + v.shape[-2:]).astype(np.float64)  # (..., S, Ev)
    keep = np.ones((q.shape[-2], k.shape[-2]), bool) if keep is None else keep
    out, lse, _ = attention_oracle(q, k, v, attn_mask=keep, scale=scale)  # (..., bq, Ev), (..., bq)
    scores = np.where(keep, q @ np.swapaxes(k, -1, -2) * scale, -np.inf)  # (..., bq, S)
    m = scores.max(axis=-1)  # (..., bq)
    seen = np.isfinite(m)
    l = np.where(seen, np.exp(np.where(seen, lse - m, 0.0)), 0.0)  # (..., bq)
    return m, l, out * l[..., None]  # acc (..., bq, Ev)


def first_head(state):
    return tuple(a[0] for a in state)


@contextlib.contextmanager
def hinted(hint):
    """Call and check inside the block; a NumPy warning alone fails nothing.

    ``np.where`` evaluates both of its branches, so a right answer may warn about a
    branch it throws away: the results decide. When a check fails after NumPy
    warned, the message leads with ``hint`` and the warning, which say why.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        try:
            yield
        except AssertionError as error:
            warned = [w for w in caught if issubclass(w.category, RuntimeWarning)]
            if not warned:
                raise
            raise AssertionError(f"{hint} (NumPy warned: {warned[0].message})\n{error}") from None


STATE = ("m' = max(m, rowmax(S)) with S = q kᵀ·scale (masked scores -inf); P = exp(S - m'); "
         "l' = exp(m - m')·l + rowsum(P); acc' = exp(m - m')·acc + P v (not divided by l)")


def check_state(got, expected, when, dtype=None):
    m, l, acc = expect_tuple(got, 3, what="forward_tile's result (m, l, acc)")
    if dtype is not None:
        expected = tuple(e.astype(dtype) for e in expected)
    for name, a, e in zip("m l acc".split(), (m, l, acc), expected):
        expect_array(a, shape=e.shape, dtype=e.dtype, what=f"{name} {when}")
    check_close(m, expected[0], what=f"m {when}: {STATE}")
    check_close(l, expected[1], what=f"l {when}: {STATE}")
    check_close(acc, expected[2], what=f"acc {when}: {STATE}")


# Exercise 9.1 ------------------------------------------------------------------------------------


@pytest.mark.exercise("9.1")
def test_forward_tile_from_the_empty_state(ch, rng):
    q, k, v = rng.standard_normal((3, 4)), rng.standard_normal((5, 4)), rng.standard_normal((5, 2))
    got = ch.forward_tile(q, k, v, *empty_state((3,), 2), 0.5)
    check_state(got, first_head(state_of(q[None], k[None], v[None], 0.5)),
                "after one (3 queries, 5 keys) tile from the empty state (-inf, 0, 0), scale 0.5")


@pytest.mark.exercise("9.1")
def test_forward_tile_rescales_the_old_state(ch, rng):
    q, k, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 10, 4)), rng.standard_normal((2, 10, 3))
    k[0, 6:] *= 4.0  # head 0: the second tile raises the maximum of most rows; head 1: it usually does not
    before = state_of(q, k[:, :6], v[:, :6], 0.5)
    got = ch.forward_tile(q, k[:, 6:], v[:, 6:], *before, 0.5)
    check_state(got, state_of(q, k, v, 0.5), "after a second tile of 4 keys on the state of 6 keys (2 heads); "
                "when the maximum grows, the old l and acc are multiplied by exp(m_old - m_new)")


@pytest.mark.exercise("9.1")
def test_forward_tile_ragged_shapes_and_three_tiles_in_a_row(ch, rng):
    q, k, v = rng.standard_normal((3, 7)), rng.standard_normal((10, 7)) * 2, rng.standard_normal((10, 1))
    scale = 1 / np.sqrt(7)
    state = empty_state((3,), 1)
    for j0, j1 in ((0, 4), (4, 5), (5, 10)):  # tiles of 4, 1 and 5 keys, each on the state your function returned
        state = ch.forward_tile(q, k[j0:j1], v[j0:j1], *expect_tuple(state, 3, "forward_tile's result (m, l, acc)"),
                                scale)
        check_state(state, first_head(state_of(q[None], k[None, :j1], v[None, :j1], scale)),
                    f"after keys 0..{j1 - 1} in tiles of 4, 1 and 5 (E = 7, Ev = 1), each tile on your own state")


@pytest.mark.exercise("9.1")
def test_forward_tile_applies_keep_and_broadcasts_heads(ch, rng):
    q = rng.standard_normal((2, 3, 4, 5))  # (Hkv, G, bq, E)
    k, v = rng.standard_normal((2, 1, 6, 5)), rng.standard_normal((2, 1, 6, 2))  # one key head per group
    keep = np.tril(np.ones((4, 6), dtype=bool), 1)
    keep[0] = False  # the first row sees nothing on this tile
    with hinted("a row with every key masked computed -inf - (-inf): shift by 0 where the new maximum is -inf"):
        got = ch.forward_tile(q, k, v, *empty_state((2, 3, 4), 2), 0.4, keep)
        check_state(got, state_of(q, k, v, 0.4, keep),
                    "with a (4, 6) keep mask on a (Hkv=2, G=3) broadcast, from the empty state: the max is over the "
                    "kept scores only, and a row whose scores are all masked keeps m = -inf, l = 0, acc = 0")


@pytest.mark.exercise("9.1")
def test_forward_tile_masked_tile_after_seen_keys(ch, rng):
    q = rng.standard_normal((2, 4, 3))  # (H, bq, E)
    k, v = rng.standard_normal((2, 8, 3)), rng.standard_normal((2, 8, 2))
    first = np.ones((2, 4, 4), dtype=bool)
    first[:, 2:] = False  # rows 2, 3 see nothing in the first tile
    second = np.ones((2, 4, 4), dtype=bool)
    second[:, [0, 2]] = False  # rows 0 and 2 see nothing in the second tile
    second[1, 1, :2] = False
    before = state_of(q, k[:, :4], v[:, :4], 0.7, first)
    with hinted("a row with every key masked so far computed -inf - (-inf): shift by 0 where the new maximum "
                "is -inf"):
        got = ch.forward_tile(q, k[:, 4:], v[:, 4:], *before, 0.7, second)
        check_state(got, state_of(q, k, v, 0.7, np.concatenate([first, second], axis=-1)),
                    "with a per-head keep mask (2, 4, 4) on a state where rows 2-3 are still empty: a fully masked "
                    "tile leaves a row's state as it was, and an empty row takes its first kept keys")


@pytest.mark.exercise("9.1")
def test_forward_tile_keeps_float32(ch, rng):
    q, k, v = (rng.standard_normal(shape).astype(np.float32) for shape in ((2, 5, 8), (2, 9, 8), (2, 9, 4)))
    keep = np.tril(np.ones((5, 4), dtype=bool), -1)  # row 0 sees nothing
    before = tuple(a.astype(np.float32) for a in state_of(q, k[:, :5], v[:, :5], 0.35))
    got = ch.forward_tile(q, k[:, 5:], v[:, 5:], *before, 0.35, keep)
    check_state(got, state_of(q, k, v, 0.35, np.concatenate([np.ones((5, 5), bool), keep], axis=-1)),
                "for float32 q, k, v, m, l, acc (the results must stay float32)", dtype=np.float32)


@pytest.mark.exercise("9.1")
def test_forward_tile_lets_nan_reach_only_the_rows_that_may_see_it(ch, rng):
    q, k, v = rng.standard_normal((4, 3)), rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    keep = np.ones((4, 5), dtype=bool)
    keep[[0, 2], 2:4] = False  # rows 0 and 2 may not see keys 2 and 3; rows 1 and 3 see every key
    clean = state_of(q[None], k[None], v[None], 0.5, keep)  # what rows 0 and 2 must get whatever keys 2, 3 hold
    k_bad, v_bad = k.copy(), v.copy()
    k_bad[3, 0] = np.nan  # key 3: a NaN score for rows 1 and 3
    v_bad[2, 1] = np.nan  # key 2: a NaN value
    m, l, acc = expect_tuple(ch.forward_tile(q, k_bad, v_bad, *empty_state((4,), 2), 0.5, keep), 3,
                             what="forward_tile's result (m, l, acc)")
    for name, a, e in zip("m l acc".split(), (m, l, acc), first_head(clean)):
        expect_array(a, shape=e.shape, dtype=e.dtype, what=f"{name} with NaN in keys and values")
    if not (np.isnan(l[[1, 3]]).all() and np.isnan(acc[[1, 3]]).all()):
        raise AssertionError(
            "forward_tile: rows 1 and 3 may see key 3, whose score is NaN, so their l and acc must be NaN; got "
            f"l = {l[[1, 3]]}. NaN in what a row may see must reach it: never hide it with nan_to_num.")
    if np.isnan(acc[[0, 2]]).any() or np.isnan(l[[0, 2]]).any():
        raise AssertionError(
            "forward_tile: rows 0 and 2 may not see keys 2 and 3, which hold NaN, yet their state holds NaN: "
            "masked means absent. A masked weight P = 0 times a NaN value is still NaN in P @ v: keep NaN "
            "values that a row may not see out of that row's product.")
    rows = [0, 2]
    check_state((m[rows], l[rows], acc[rows]), tuple(a[rows] for a in first_head(clean)),
                "of rows 0 and 2, which may not see the NaN in keys 2 and 3: as if those keys were absent")
    v_only = v.copy()
    v_only[2, 1] = np.nan  # only a NaN value this time: row 1 sees it in its second output column only
    got = expect_tuple(ch.forward_tile(q, k, v_only, *empty_state((4,), 2), 0.5, keep), 3,
                       what="forward_tile's result (m, l, acc)")
    expected = state_of(q[None], k[None], v[None], 0.5, keep)
    want_acc = expected[2][0].copy()
    want_acc[[1, 3], 1] = np.nan
    check_state(got, (expected[0][0], expected[1][0], want_acc),
                "with a NaN in value row 2, column 1: rows 1 and 3, which may see key 2, get NaN in acc[:, 1] "
                "only; rows 0 and 2, which may not, get no NaN at all (mind 0 · NaN = NaN in P @ v)")


# Exercise 9.2 ------------------------------------------------------------------------------------

FINAL = "out = acc / l (each row by its own l) and lse = m + log(l), natural log"


def check_final(got, out, lse, when):
    got_out, got_lse = expect_tuple(got, 2, what="finalize_rows's result (out, lse)")
    expect_array(got_out, shape=np.shape(out), dtype=np.asarray(out).dtype, what=f"out {when}")
    expect_array(got_lse, shape=np.shape(lse), dtype=np.asarray(lse).dtype, what=f"lse {when}")
    check_close(got_out, out, what=f"out {when}: {FINAL}")
    check_close(got_lse, lse, what=f"lse {when}: {FINAL}")


@pytest.mark.exercise("9.2")
def test_finalize_rows_each_row_its_own_l(ch, rng):
    m, l, acc = rng.standard_normal(4), rng.uniform(1, 6, 4), rng.standard_normal((4, 4))
    check_final(ch.finalize_rows(m, l, acc), acc / l[:, None], m + np.log(l),
                "for l (4,) and acc (4, 4): row i of acc is divided by l[i] (l[..., None])")


@pytest.mark.exercise("9.2")
def test_finalize_rows_divides_once_and_stores_the_lse(ch, rng):
    m, l, acc = rng.standard_normal((2, 3, 5)), rng.uniform(1, 3, (2, 3, 5)), rng.standard_normal((2, 3, 5, 2))
    check_final(ch.finalize_rows(m, l, acc), acc / l[..., None], m + np.log(l),
                "for m, l (2, 3, 5) and acc (2, 3, 5, 2)")


@pytest.mark.exercise("9.2")
def test_finalize_rows_empty_rows(ch, rng):
    m = np.array([[-np.inf, 1.0, -np.inf], [0.5, -np.inf, 1000.0]])
    l = np.array([[0.0, 2.0, 0.0], [1.5, 0.0, 3.0]])
    acc = rng.standard_normal((2, 3, 3)) * (l > 0)[..., None]  # acc is 0 on empty rows
    safe = np.where(l > 0, l, 1.0)
    with hinted("an empty row (l = 0) divided 0 by 0 or took log(0): divide by np.where(l == 0, 1, l) and store "
                "lse = +inf where l == 0"):
        got = ch.finalize_rows(m, l, acc)
        check_final(got, acc / safe[..., None], np.where(l > 0, m + np.log(safe), np.inf),
                    "with empty rows (m = -inf, l = 0, acc = 0): an empty row (l = 0) gets output 0 and lse +inf")


@pytest.mark.exercise("9.2")
def test_finalize_rows_keeps_float32(ch, rng):
    m = rng.standard_normal((3, 4)).astype(np.float32)
    l = rng.uniform(1, 3, (3, 4)).astype(np.float32)
    l[1, 2], m[1, 2] = 0.0, -np.inf
    acc = (rng.standard_normal((3, 4, 2)) * (l > 0)[..., None]).astype(np.float32)
    safe = np.where(l > 0, l, 1.0).astype(np.float64)
    check_final(ch.finalize_rows(m, l, acc), (acc / safe[..., None]).astype(np.float32),
                np.where(l > 0, m + np.log(safe), np.inf).astype(np.float32),
                "for float32 m, l, acc (the results must stay float32)")


@pytest.mark.exercise("9.2")
def test_finalize_rows_keeps_a_nan_row_nan(ch, rng):
    m, l, acc = rng.standard_normal(3), rng.uniform(1, 3, 3), rng.standard_normal((3, 2))
    m[1], l[1], acc[1] = np.nan, np.nan, np.nan  # row 1 saw a NaN score
    m[2], l[2], acc[2] = -np.inf, 0.0, 0.0  # row 2 saw nothing
    got_out, got_lse = expect_tuple(ch.finalize_rows(m, l, acc), 2, what="finalize_rows's result (out, lse)")
    expect_array(got_lse, shape=(3,), dtype=np.float64, what="lse for a NaN row")
    if not np.isnan(got_lse[1]):
        raise AssertionError(
            f"finalize_rows: row 1's state is NaN (it saw a NaN score), so its lse must be NaN; got {got_lse[1]!r}. "
            "lse = +inf means 'saw nothing', a lie here that would give the row gradient 0 in the backward pass: "
            "tell the empty row by l == 0, not by l > 0, which is False for NaN too.")
    check_final((got_out, got_lse), np.array([acc[0] / l[0], [np.nan, np.nan], [0.0, 0.0]]),
                np.array([m[0] + np.log(l[0]), np.nan, np.inf]),
                "for rows (a real state, a NaN state, an empty state): NaN stays NaN, empty gives output 0 and lse "
                "+inf")


# Exercise 9.3 ------------------------------------------------------------------------------------


def kind_by_brute_force(i0, i1, j0, j1, band):
    lo, hi = band
    kept = [(lo is None or j - i >= lo) and (hi is None or j - i <= hi)
            for i in range(i0, i1) for j in range(j0, j1)]
    return "skip" if not any(kept) else "full" if all(kept) else "partial"


@pytest.mark.exercise("9.3")
@pytest.mark.parametrize("L,S,bq,bk,mask", [
    (13, 17, 3, 4, (False, "top_left", None)), (13, 17, 3, 4, (True, "top_left", None)),
    (13, 17, 3, 4, (True, "bottom_right", None)), (13, 17, 3, 4, (False, "top_left", (3, 1))),
    (13, 17, 3, 4, (True, "bottom_right", (4, None))), (13, 17, 3, 4, (False, "top_left", (None, 0))),
    (17, 11, 4, 3, (True, "top_left", None)), (17, 11, 4, 3, (True, "bottom_right", None)),
    (17, 11, 5, 2, (False, "top_left", (2, 2))), (9, 9, 4, 4, (True, "top_left", (3, None)))])
def test_tile_kind_agrees_with_the_mask(ch, L, S, bq, bk, mask):
    causal, align, window = mask
    keep = reference_mask(L, S, is_causal=causal, causal_align=align, window=window)
    band = mask_band(L, S, causal, align, window)
    for i0 in range(0, L, bq):
        for j0 in range(0, S, bk):
            i1, j1 = min(i0 + bq, L), min(j0 + bk, S)
            tile = keep[i0:i1, j0:j1]
            expected = "skip" if not tile.any() else "full" if tile.all() else "partial"
            got = ch.tile_kind(i0, i1, j0, j1, band)
            assert got == expected, (
                f"tile rows {i0}..{i1 - 1}, keys {j0}..{j1 - 1} of an (L={L}, S={S}) problem with band "
                f"(lo, hi) = {band} (is_causal={causal}, causal_align={align!r}, window={window}): got {got!r}, "
                f"expected {expected!r}; j - i runs from j0 - (i1 - 1) to (j1 - 1) - i0 in this tile")


@pytest.mark.exercise("9.3")
@pytest.mark.parametrize("band", [(None, None), (None, 0), (None, -2), (0, None), (2, None), (-1, 1), (0, 0),
                                  (-3, 2), (1, 4)])
def test_tile_kind_every_small_tile(ch, band):
    for i0, i1, j0, j1 in itertools.product(range(6), range(1, 7), range(6), range(1, 7)):
        if i0 >= i1 or j0 >= j1 or i1 - i0 > 3 or j1 - j0 > 3:
            continue
        expected = kind_by_brute_force(i0, i1, j0, j1, band)
        got = ch.tile_kind(i0, i1, j0, j1, band)
        assert got == expected, (
            f"tile rows {i0}..{i1 - 1}, keys {j0}..{j1 - 1} with band (lo, hi) = {band} (keep (i, j) when "
            f"lo <= j - i <= hi; None = unlimited): got {got!r}, expected {expected!r}; j - i runs from "
            f"j0 - (i1 - 1) = {j0 - i1 + 1} to (j1 - 1) - i0 = {j1 - 1 - i0} in this tile")
