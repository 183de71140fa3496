"""Graded tests for chapter 10: D, the weights recomputed from the lse, and dS.

Expected values come from the float64 oracle (its weights P, output and log-sum-exp, and its
backward pass); every returned array is compared whole, with its shape and dtype
(``checks.check_close``). Tiles are cut out of larger problems, as the flash backward pass sees them.
"""
import contextlib
import warnings

import numpy as np
import pytest

from attention_scratch.course.checks import check_close
from attention_scratch.testing import attention_oracle, attention_oracle_backward


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch10_flash_backward")


def problem(rng, shape=(2, 6, 8, 4, 3), **mask):
    """q, k, v, dO and the oracle's out, lse, P, scaled scores and dP for heads H, L queries, S keys."""
    H, L, S, E, Ev = shape
    q, k, v = rng.standard_normal((H, L, E)), rng.standard_normal((H, S, E)), rng.standard_normal((H, S, Ev))
    g = rng.standard_normal((H, L, Ev))
    out, lse, p = attention_oracle(q, k, v, **mask)  # (H, L, Ev), (H, L), (H, L, S)
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(E)  # (H, L, S)
    dp = g @ np.swapaxes(v, -1, -2)  # (H, L, S)
    return dict(q=q, k=k, v=v, g=g, out=out, lse=lse, p=p, scores=scores, dp=dp)


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


# Exercise 10.1 -----------------------------------------------------------------------------------

D_TERM = "D[..., i] = Σ_v dO[..., i, v]·O[..., i, v], the sum over the last axis (Ev), one number per row"


@pytest.mark.exercise("10.1")
def test_d_term_equals_rowsum_of_p_times_dp(ch, rng):
    x = problem(rng)
    check_close(ch.d_term(x["g"], x["out"]), (x["p"] * x["dp"]).sum(-1),
                what=f"D for grad_out and out of shape (2, 6, 3): {D_TERM}; it equals rowsum(P ∘ dP)")


@pytest.mark.exercise("10.1")
def test_d_term_with_batch_and_head_axes(ch, rng):
    g, out = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((2, 3, 5, 4))
    check_close(ch.d_term(g, out), np.einsum("bhlv,bhlv->bhl", g, out),
                what=f"D for grad_out and out of shape (2, 3, 5, 4) (B, H, L, Ev): {D_TERM}")
    g, out = rng.standard_normal((6, 6)), rng.standard_normal((6, 6))
    check_close(ch.d_term(g, out), np.einsum("lv,lv->l", g, out),
                what=f"D for grad_out and out of shape (6, 6) (L = Ev): {D_TERM}")
    g, out = rng.standard_normal((4, 1)), rng.standard_normal((4, 1))
    check_close(ch.d_term(g, out), g[:, 0] * out[:, 0], what=f"D for Ev = 1: {D_TERM}")
    g, out = rng.standard_normal((2, 1, 3)), rng.standard_normal((2, 1, 3))
    check_close(ch.d_term(g, out), np.einsum("hlv,hlv->hl", g, out),
                what=f"D for grad_out and out of shape (2, 1, 3) (one query, L = 1): shape (2, 1), only the Ev "
                f"axis removed (sum(axis=-1); np.squeeze would drop L too): {D_TERM}")


@pytest.mark.exercise("10.1")
def test_d_term_keeps_float32(ch, rng):
    g, out = rng.standard_normal((3, 7, 5)), rng.standard_normal((3, 7, 5))
    check_close(ch.d_term(g.astype(np.float32), out.astype(np.float32)),
                np.einsum("hlv,hlv->hl", g.astype(np.float32).astype(np.float64),
                          out.astype(np.float32).astype(np.float64)).astype(np.float32),
                what=f"D for float32 grad_out and out (the result must stay float32): {D_TERM}")


# Exercise 10.2 -----------------------------------------------------------------------------------

PROBS = "P = exp(scores - lse[..., None]) with the lse of the whole row; 0 where keep is False"


@pytest.mark.exercise("10.2")
def test_recompute_probs_of_one_tile(ch, rng):
    x = problem(rng, shape=(1, 7, 9, 4, 3), is_causal=True, causal_align="bottom_right")
    keep = np.tril(np.ones((7, 9), dtype=bool), 2)  # bottom-right causal: j <= i + S - L
    tile = (slice(None), slice(2, 6), slice(3, 7))  # rows 2..5, keys 3..6: a square 4 x 4 tile
    check_close(ch.recompute_probs(x["scores"][tile], x["lse"][:, 2:6], keep[2:6, 3:7]), x["p"][tile],
                what=f"weights of the tile rows 2..5, keys 3..6 (a piece of each row, so its rows need not sum "
                f"to 1; lse[..., None] (1, 4, 1) against scores (1, 4, 4)): {PROBS}")


@pytest.mark.exercise("10.2")
def test_recompute_probs_gives_the_attention_weights(ch, rng):
    x = problem(rng, is_causal=True)
    keep = np.tril(np.ones((6, 8), dtype=bool))
    check_close(ch.recompute_probs(x["scores"], x["lse"], keep), x["p"],
                what=f"weights of whole rows (2 heads, 6 queries, 8 keys, causal keep mask): {PROBS}")


@pytest.mark.exercise("10.2")
def test_recompute_probs_without_a_mask_and_with_a_broadcast_mask(ch, rng):
    q, k = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((2, 3, 6, 4))  # (B, H, L, E), (B, H, S, E)
    v = rng.standard_normal((2, 3, 6, 2))
    _, lse, p = attention_oracle(q, k, v)
    scores = q @ np.swapaxes(k, -1, -2) / 2.0  # (B, H, L, S)
    check_close(ch.recompute_probs(scores, lse), p,
                what=f"weights with keep=None (a full tile), scores (2, 3, 5, 6): {PROBS}")
    keep = rng.random((2, 1, 5, 6)) < 0.7  # one mask per batch, shared by the heads
    keep[..., 0] = True
    _, lse, p = attention_oracle(q, k, v, attn_mask=keep)
    check_close(ch.recompute_probs(scores, lse, keep), p,
                what=f"weights with a keep mask of shape (2, 1, 5, 6) broadcast over the heads: {PROBS}")


@pytest.mark.exercise("10.2")
def test_recompute_probs_empty_rows_are_zero(ch, rng):
    x = problem(rng, shape=(2, 7, 4, 3, 2), is_causal=True, causal_align="bottom_right")  # rows 0-2 see nothing
    keep = np.tril(np.ones((7, 4), dtype=bool), -3)
    with hinted("a row with lse = +inf computed inf - inf: its weights must be 0 (exp(score - inf) is already 0 "
                "once masked scores are -inf)"):
        got = ch.recompute_probs(x["scores"], x["lse"], keep)
        check_close(got, x["p"], what=f"weights with rows 0-2 empty (lse = +inf): all 0 there, no NaN; {PROBS}")
    lse = np.array([[np.inf, 0.7, np.inf]])
    with hinted("a row with lse = +inf gave a warning: its weights must be 0"):
        got = ch.recompute_probs(np.zeros((1, 3, 2)), lse)
        check_close(got, np.where(np.isinf(lse), 0.0, np.exp(-lse))[..., None] * np.ones(2),
                    what=f"weights with keep=None on rows whose lse is +inf: 0 there, no NaN; {PROBS}")


@pytest.mark.exercise("10.2")
def test_recompute_probs_masked_nan_and_inf_scores_never_reach_the_result(ch, rng):
    x = problem(rng, shape=(1, 5, 6, 4, 2), is_causal=True)
    keep = np.tril(np.ones((5, 6), dtype=bool))
    scores = x["scores"].copy()
    scores[0, 1, 4] = np.nan  # a NaN key that row 1 may not see
    scores[0, 2, 5] = np.inf  # an infinite score, masked too
    check_close(ch.recompute_probs(scores, x["lse"], keep), x["p"],
                what="weights where masked scores hold NaN and +inf (masked means absent: choose with "
                f"np.where, since 0·NaN and 0·inf are NaN): {PROBS}")


@pytest.mark.exercise("10.2")
def test_recompute_probs_keeps_float32(ch, rng):
    x = problem(rng, is_causal=True)
    keep = np.tril(np.ones((6, 8), dtype=bool))
    scores, lse = x["scores"].astype(np.float32), x["lse"].astype(np.float32)
    expected = np.where(keep, np.exp(scores.astype(np.float64) - lse.astype(np.float64)[..., None]), 0.0)
    check_close(ch.recompute_probs(scores, lse, keep), expected.astype(np.float32),
                what=f"weights from float32 scores and lse (the result must stay float32): {PROBS}")


@pytest.mark.exercise("10.2")
def test_recompute_probs_of_large_scores(ch, rng):
    scores = rng.standard_normal((2, 3, 4)) + 800.0  # (H, bq, bk): ordinary scores, far from 0
    lse = np.log(np.exp(scores - 800.0).sum(-1)) + 800.0  # (H, bq)
    expected = np.exp(scores - 800.0) / np.exp(scores - 800.0).sum(-1, keepdims=True)
    check_close(ch.recompute_probs(scores, lse), expected,
                what=f"weights for scores near 800 and their lse: compute exp(scores - lse[..., None]) in one "
                f"piece; exp(scores) / exp(lse) overflows to inf / inf = NaN (exp(800) is inf): {PROBS}")


@pytest.mark.exercise("10.2")
def test_recompute_probs_lets_a_kept_nan_score_show(ch, rng):
    x = problem(rng, shape=(1, 5, 6, 4, 2), is_causal=True)
    keep = np.tril(np.ones((5, 6), dtype=bool))
    scores = x["scores"].copy()
    scores[0, 3, 1] = np.nan  # a NaN score that row 3 may see
    expected = x["p"].copy()
    expected[0, 3, 1] = np.nan
    check_close(ch.recompute_probs(scores, x["lse"], keep), expected,
                what="weights where row 3 may see a NaN score (key 1): that weight is NaN (never hide it with "
                f"nan_to_num or np.where(np.isnan(...))), the rest as usual: {PROBS}")


# Exercise 10.3 -----------------------------------------------------------------------------------

DS = "dS = P ∘ (dP - D[..., None]) with the given D (one number per row, for the whole row)"


def expected_ds(x):
    """The oracle's softmax backward: P ∘ (dP - rowsum(P ∘ dP)), over whole rows."""
    return x["p"] * (x["dp"] - (x["p"] * x["dp"]).sum(-1, keepdims=True))


@pytest.mark.exercise("10.3")
def test_dscores_of_one_tile(ch, rng):
    x = problem(rng, shape=(1, 7, 9, 4, 3), is_causal=True)
    d = (x["g"] * x["out"]).sum(-1)  # (H, L): D of the whole rows
    tile = (slice(None), slice(1, 5), slice(2, 6))  # rows 1..4, keys 2..5: a square 4 x 4 tile
    check_close(ch.dscores(x["p"][tile], x["dp"][tile], d[:, 1:5]), expected_ds(x)[tile],
                what=f"dS of the tile rows 1..4, keys 2..5 (d (1, 4) holds D of the whole rows: use it, do not "
                f"recompute it from the tile; d[..., None] (1, 4, 1) against p (1, 4, 4)): {DS}")


@pytest.mark.exercise("10.3")
def test_dscores_matches_the_softmax_backward(ch, rng):
    x = problem(rng)
    d = (x["g"] * x["out"]).sum(-1)  # (H, L)
    ds = ch.dscores(x["p"], x["dp"], d)
    check_close(ds, expected_ds(x), what=f"dS of whole rows (2 heads, 6 queries, 8 keys): {DS}")
    dq, dk, _ = attention_oracle_backward(x["g"], x["q"], x["k"], x["v"])
    check_close(ds @ x["k"] / 2.0, dq, what="dQ = dS K · scale built from your dS, against the oracle's gradient")


@pytest.mark.exercise("10.3")
def test_dscores_with_batch_axes_and_empty_rows(ch, rng):
    q = rng.standard_normal((2, 3, 6, 4))  # (B, H, L, E)
    k, v = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 5))
    g = rng.standard_normal((2, 3, 6, 5))
    out, _, p = attention_oracle(q, k, v, is_causal=True, causal_align="bottom_right")  # rows 0-1 empty
    dp = g @ np.swapaxes(v, -1, -2)  # (B, H, L, S)
    x = dict(p=p, dp=dp)
    check_close(ch.dscores(p, dp, (g * out).sum(-1)), expected_ds(x),
                what=f"dS with batch and head axes (2, 3, 6, 4), rows 0-1 empty (P = 0, D = 0 there): {DS}")


@pytest.mark.exercise("10.3")
def test_dscores_keeps_float32(ch, rng):
    x = problem(rng)
    p, dp = x["p"].astype(np.float32), x["dp"].astype(np.float32)
    d = (x["g"] * x["out"]).sum(-1).astype(np.float32)
    expected = p.astype(np.float64) * (dp.astype(np.float64) - d.astype(np.float64)[..., None])
    check_close(ch.dscores(p, dp, d), expected.astype(np.float32),
                what=f"dS from float32 p, dp, d (the result must stay float32): {DS}")


@pytest.mark.exercise("10.3")
def test_dscores_keeps_masked_nan_out_and_lets_seen_nan_show(ch, rng):
    x = problem(rng, shape=(1, 5, 6, 4, 2), is_causal=True)
    d = (x["g"] * x["out"]).sum(-1)  # (H, L)
    dp = x["dp"].copy()
    dp[0, 1, 4] = np.nan  # row 1 may not see key 4 (P = 0 there): a NaN value of that key must not reach dS
    dp[0, 3, 2] = np.nan  # row 3 may see key 2 (P > 0): its NaN reaches dS
    ds = ch.dscores(x["p"], dp, d)
    expected = expected_ds(x)
    expected[0, 3, 2] = np.nan
    if isinstance(ds, np.ndarray) and ds.shape == expected.shape and np.isnan(ds[0, 1, 4]):
        raise AssertionError(
            "dscores: dS[0, 1, 4] is NaN, but row 1 may not see key 4 (P = 0 there): the NaN in dP there comes "
            "from a key the row may not see and must not reach it. 0 · NaN is NaN: where P is 0, choose 0 with "
            "np.where instead of multiplying by P.")
    check_close(ds, expected,
                what=f"dS where dP holds NaN at a masked entry (row 1, key 4: dS must be exactly 0) and at a seen "
                f"entry (row 3, key 2: dS is NaN, never hidden): {DS}")
