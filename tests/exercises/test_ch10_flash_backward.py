"""Graded tests for chapter 10: D, the weights recomputed from the lse, and dS."""
import numpy as np
import pytest

from attention_scratch.testing import assert_close, assert_shape, attention_oracle, warnings_as_failures


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch10_flash_backward")


def problem(rng, causal=True):
    q, k, v = rng.standard_normal((2, 6, 4)), rng.standard_normal((2, 8, 4)), rng.standard_normal((2, 8, 3))
    g = rng.standard_normal((2, 6, 3))
    out, lse, p = attention_oracle(q, k, v, is_causal=causal)
    scores = q @ np.swapaxes(k, -1, -2) / 2.0
    return q, k, v, g, out, lse, p, scores


@pytest.mark.exercise("10.1")
def test_d_term_equals_rowsum_of_p_times_dp(ch, rng):
    q, k, v, g, out, lse, p, _ = problem(rng)
    d = ch.d_term(g, out)
    assert_shape(d, (2, 6), "D for grad_out and out of shape (2, 6, 3)")
    dp = g @ np.swapaxes(v, -1, -2)  # (2, 6, 8)
    assert_close(d, (p * dp).sum(-1), what="D = rowsum(dO * O), which equals rowsum(P * dP)")


@pytest.mark.exercise("10.2")
def test_recompute_probs_gives_the_attention_weights(ch, rng):
    q, k, v, g, out, lse, p, scores = problem(rng)
    keep = np.tril(np.ones((6, 8), dtype=bool))
    got = ch.recompute_probs(scores, lse, keep)
    assert_shape(got, p.shape, "recomputed weights")
    assert_close(got, p, what="exp(scores - lse) with masked entries set to 0")


@pytest.mark.exercise("10.2")
def test_recompute_probs_empty_rows_are_zero(ch):
    scores = np.array([[1.0, 2.0], [0.5, -1.0]])
    lse = np.array([np.inf, np.log(np.exp(0.5) + np.exp(-1.0))])
    with warnings_as_failures("a row with lse = +inf computed inf - inf: its weights must be 0 "
                              "(exp(score - inf) is already 0 once masked scores are -inf)"):
        got = ch.recompute_probs(scores, lse, np.array([[False, False], [True, True]]))
    assert not np.isnan(got).any(), "a row with lse = +inf gave NaN; its weights must be 0"
    assert_close(got[0], np.zeros(2), what="weights of the empty row")
    assert_close(got[1].sum(), np.float64(1.0), what="weights of a full row sum to 1")


@pytest.mark.exercise("10.3")
def test_dscores_matches_the_softmax_backward(ch, rng):
    q, k, v, g, out, lse, p, _ = problem(rng, causal=False)
    dp = g @ np.swapaxes(v, -1, -2)  # (2, 6, 8)
    d = (g * out).sum(-1)
    got = ch.dscores(p, dp, d)
    assert_shape(got, p.shape, "dS")
    expected = p * (dp - (p * dp).sum(-1, keepdims=True))
    assert_close(got, expected, what="dS = P * (dP - D): subtract D inside, then multiply by P")
