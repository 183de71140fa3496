"""Graded tests for chapter 4: the scaled scores, dropout on the weights, the gradient of the scores."""
import copy

import numpy as np
import pytest

from attention_scratch.testing import assert_close, assert_shape, attention_oracle, attention_oracle_backward


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch04_scaled_dot_product")


# Exercise 4.1 ------------------------------------------------------------------------------------


@pytest.mark.exercise("4.1")
def test_scaled_scores_one_head(ch, rng):
    q, k = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    s = ch.scaled_scores(q, k, 0.5)
    assert_shape(s, (3, 5), "scores of 3 queries and 5 keys")
    assert_close(s[1, 2], 0.5 * q[1] @ k[2], what="score of query 1 and key 2: (q · k) · scale")
    assert_close(s, q @ k.T * 0.5, what="scaled scores")


@pytest.mark.exercise("4.1")
def test_scaled_scores_broadcast_leading_axes(ch, rng):
    q, k = rng.standard_normal((2, 3, 6, 4)), rng.standard_normal((2, 1, 5, 4))
    s = ch.scaled_scores(q, k, 1 / np.sqrt(4))
    assert_shape(s, (2, 3, 6, 5), "scores with leading axes (2, 3) and (2, 1)")
    assert_close(s[1, 2], q[1, 2] @ k[1, 0].T / 2, what="scores of batch 1, head 2 (key head broadcast)")


# Exercise 4.2 ------------------------------------------------------------------------------------


@pytest.mark.exercise("4.2")
def test_dropout_draws_one_uniform_array_and_rescales(ch, rng):
    w = rng.random((4, 50))
    state = copy.deepcopy(rng)
    dropped, keep = ch.dropout_weights(w, 0.3, rng)
    expected_keep = state.random(w.shape) >= 0.3
    assert keep.dtype == bool, "keep must be a boolean mask"
    assert np.array_equal(keep, expected_keep), \
        "keep must be rng.random(weights.shape) >= p (one draw, so the backward pass can redraw it)"
    assert_close(dropped, np.where(expected_keep, w / 0.7, 0.0),
                 what="dropped weights: survivors divided by (1 - p), the rest 0")


@pytest.mark.exercise("4.2")
def test_dropout_keeps_the_expectation(ch, rng):
    w = np.full((200, 200), 0.25)
    dropped, keep = ch.dropout_weights(w, 0.2, rng)
    assert abs(keep.mean() - 0.8) < 0.01, f"fraction kept {keep.mean():.3f}, expected about 1 - p = 0.8"
    assert abs(dropped.mean() - 0.25) < 0.01, "the mean weight must stay unchanged (inverted dropout)"
    all_dropped, _ = ch.dropout_weights(w[:3], 1.0, rng)
    assert not np.isnan(all_dropped).any() and np.all(all_dropped == 0), "p = 1 must give zeros, not NaN"


# Exercise 4.3 ------------------------------------------------------------------------------------


@pytest.mark.exercise("4.3")
def test_scores_gradient_gives_the_oracle_gradients(ch, rng):
    q, k, v = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 6, 3)), rng.standard_normal((2, 6, 4))
    g = rng.standard_normal((2, 5, 4))
    _, _, p = attention_oracle(q, k, v, scale=0.7)
    ds = ch.scores_gradient(g, v, p)
    assert_shape(ds, (2, 5, 6), "dS for 5 queries and 6 keys")
    dq, dk, _ = attention_oracle_backward(g, q, k, v, scale=0.7)
    assert_close(ds @ k * 0.7, dq, what="dQ = dS K · scale built from your dS "
                 "(did you subtract rowsum(dP ∘ P) along the key axis?)")
    assert_close(np.swapaxes(ds, -1, -2) @ q * 0.7, dk, what="dK = dSᵀ Q · scale built from your dS")


@pytest.mark.exercise("4.3")
def test_scores_gradient_is_zero_where_masked_and_rows_sum_to_zero(ch, rng):
    q, k, v = rng.standard_normal((1, 4, 3)), rng.standard_normal((1, 5, 3)), rng.standard_normal((1, 5, 2))
    mask = np.tril(np.ones((4, 5), bool))
    _, _, p = attention_oracle(q, k, v, mask)
    ds = ch.scores_gradient(rng.standard_normal((1, 4, 2)), v, p)[0]
    assert np.all(ds[~mask] == 0), "masked scores (P = 0) must get gradient exactly 0"
    assert_close(ds.sum(-1), np.zeros(4), what="each row of dS sums to 0 (softmax is shift invariant)")
