"""Graded tests for chapter 9: one forward tile, the final normalisation, tile classification."""
import numpy as np
import pytest

from attention_scratch.testing import (assert_close, assert_shape, attention_oracle, reference_mask,
                                       warnings_as_failures)
from attention_scratch.flash_tiles import mask_band


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch09_flash_forward")


def empty_state(shape, ev):
    return np.full(shape, -np.inf), np.zeros(shape), np.zeros(shape + (ev,))


# Exercise 9.1 ------------------------------------------------------------------------------------


@pytest.mark.exercise("9.1")
def test_forward_tile_from_the_empty_state(ch, rng):
    q, k, v = rng.standard_normal((3, 4)), rng.standard_normal((5, 4)), rng.standard_normal((5, 2))
    m, l, acc = ch.forward_tile(q, k, v, *empty_state((3,), 2), 0.5)
    scores = q @ k.T * 0.5
    assert_shape(acc, (3, 2), "acc for a (3, 4) query block and a (5, 2) value block")
    assert_close(m, scores.max(1), what="m after one tile: the row max of the scaled scores")
    p = np.exp(scores - scores.max(1, keepdims=True))
    assert_close(l, p.sum(1), what="l after one tile: the sum of exp(score - m)")
    assert_close(acc, p @ v, what="acc after one tile: unnormalised (do not divide by l)")


@pytest.mark.exercise("9.1")
def test_forward_tile_two_tiles_give_attention(ch, rng):
    q, k, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 10, 4)), rng.standard_normal((2, 10, 3))
    k[:, 6:] *= 4.0  # the second tile raises the maximum, so the first must be rescaled
    state = empty_state((2, 3), 3)
    state = ch.forward_tile(q, k[:, :6], v[:, :6], *state, 0.5)
    m, l, acc = ch.forward_tile(q, k[:, 6:], v[:, 6:], *state, 0.5)
    ref, _, _ = attention_oracle(q, k, v, scale=0.5)
    assert_close(acc / l[..., None], ref, what="acc / l after two tiles (did you rescale the old "
                 "l and acc by exp(m_old - m_new)?)")


@pytest.mark.exercise("9.1")
def test_forward_tile_applies_keep_and_broadcasts_heads(ch, rng):
    q = rng.standard_normal((2, 3, 4, 5))  # (Hkv, G, bq, E)
    k, v = rng.standard_normal((2, 1, 6, 5)), rng.standard_normal((2, 1, 6, 2))
    keep = np.tril(np.ones((4, 6), dtype=bool), 1)
    keep[0] = False  # the first row sees nothing on this tile
    with warnings_as_failures("a row with every key masked computed -inf - (-inf): shift by 0 where "
                              "the new maximum is -inf"):
        m, l, acc = ch.forward_tile(q, k, v, *empty_state((2, 3, 4), 2), 0.4, keep)
    assert not np.isnan(acc).any() and not np.isnan(l).any(), "a fully masked row gave NaN"
    assert np.all(np.isneginf(m[..., 0])) and np.all(l[..., 0] == 0) and np.all(acc[..., 0, :] == 0), \
        "a row with every key masked must keep m = -inf, l = 0, acc = 0"
    ref, _, _ = attention_oracle(q, np.broadcast_to(k, (2, 3, 6, 5)), np.broadcast_to(v, (2, 3, 6, 2)),
                                 attn_mask=keep, scale=0.4)
    assert_close(acc[..., 1:, :] / l[..., 1:, None], ref[..., 1:, :],
                 what="acc / l with a keep mask on a (Hkv=2, G=3) broadcast")


# Exercise 9.2 ------------------------------------------------------------------------------------


@pytest.mark.exercise("9.2")
def test_finalize_rows_divides_once_and_stores_the_lse(ch, rng):
    m, l, acc = rng.standard_normal(4), rng.uniform(1, 3, 4), rng.standard_normal((4, 2))
    out, lse = ch.finalize_rows(m, l, acc)
    assert_close(out, acc / l[:, None], what="out = acc / l")
    assert_close(lse, m + np.log(l), what="lse = m + log(l) (natural log)")


@pytest.mark.exercise("9.2")
def test_finalize_rows_empty_rows(ch):
    with warnings_as_failures("an empty row (l = 0) divided 0 by 0 or took log(0): divide by "
                              "np.where(l > 0, l, 1) and store lse = +inf where l == 0"):
        out, lse = ch.finalize_rows(np.array([-np.inf, 1.0]), np.array([0.0, 2.0]), np.zeros((2, 3)))
    assert not np.isnan(out).any(), "an empty row (l = 0) gave NaN output; it must be 0"
    assert_close(out, np.zeros((2, 3)), what="output of an empty row")
    assert_close(lse, np.array([np.inf, 1.0 + np.log(2.0)]),
                 what="lse: +inf for the empty row, m + log(l) otherwise")


# Exercise 9.3 ------------------------------------------------------------------------------------


@pytest.mark.exercise("9.3")
@pytest.mark.parametrize("mask", [(False, "top_left", None), (True, "top_left", None),
                                  (True, "bottom_right", None), (False, "top_left", (3, 1)),
                                  (True, "bottom_right", (4, None)), (False, "top_left", (None, 0))])
def test_tile_kind_agrees_with_the_mask(ch, mask):
    causal, align, window = mask
    L, S, bq, bk = 13, 17, 3, 4
    keep = reference_mask(L, S, is_causal=causal, causal_align=align, window=window)
    band = mask_band(L, S, causal, align, window)
    for i0 in range(0, L, bq):
        for j0 in range(0, S, bk):
            i1, j1 = min(i0 + bq, L), min(j0 + bk, S)
            tile = keep[i0:i1, j0:j1]
            expected = "skip" if not tile.any() else "full" if tile.all() else "partial"
            got = ch.tile_kind(i0, i1, j0, j1, band)
            assert got == expected, (f"tile rows {i0}..{i1 - 1}, keys {j0}..{j1 - 1} with band {band}: "
                                     f"got {got!r}, expected {expected!r}")
