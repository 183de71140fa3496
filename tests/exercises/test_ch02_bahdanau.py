"""Graded tests for chapter 2: the additive score, the VJP of attention pooling, a GRU step."""
import numpy as np
import pytest

from attention_scratch.testing import assert_close, assert_shape, numerical_gradient


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch02_bahdanau")


def softmax(e):
    z = np.exp(e - e.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


# Exercise 2.1 ------------------------------------------------------------------------------------


@pytest.mark.exercise("2.1")
def test_additive_score_against_the_loops(ch, rng):
    q, k, v = rng.standard_normal((2, 4)), rng.standard_normal((2, 5, 4)), rng.standard_normal(4)
    scores, hidden = ch.additive_score(q, k, v)
    assert_shape(scores, (2, 5), "scores for B=2 queries against S=5 keys")
    assert_shape(hidden, (2, 5, 4), "the hidden layer tanh(q + k_j)")
    expected = np.array([[v @ np.tanh(q[b] + k[b, j]) for j in range(5)] for b in range(2)])
    assert_close(scores, expected, what="e_j = v·tanh(q + k_j) (did you add q to every key row?)")
    assert_close(hidden, np.tanh(q[:, None] + k), what="hidden layer")


@pytest.mark.exercise("2.1")
def test_additive_score_with_an_extra_query_axis(ch, rng):
    q, k, v = rng.standard_normal((2, 3, 6)), rng.standard_normal((2, 1, 5, 6)), rng.standard_normal(6)
    scores, _ = ch.additive_score(q, k, v)
    assert_shape(scores, (2, 3, 5), "scores for (B=2, L=3) queries; use ... so leading axes broadcast")
    assert_close(scores, np.tanh(q[:, :, None] + k) @ v, what="scores with a query axis")


# Exercise 2.2 ------------------------------------------------------------------------------------


@pytest.mark.exercise("2.2")
def test_pooling_backward_matches_finite_differences(ch, rng):
    e, values, g = rng.standard_normal((3, 6)), rng.standard_normal((3, 6, 2)), rng.standard_normal((3, 2))
    d_scores, d_values = ch.attention_pooling_backward(g, softmax(e), values)
    assert_shape(d_scores, (3, 6), "dL/dscores")
    assert_shape(d_values, (3, 6, 2), "dL/dvalues")

    def loss_e(x):
        return float(np.sum(np.einsum("bs,bsd->bd", softmax(x), values) * g))

    def loss_v(x):
        return float(np.sum(np.einsum("bs,bsd->bd", softmax(e), x) * g))

    assert_close(d_scores, numerical_gradient(loss_e, e), rtol=1e-6, atol=1e-9,
                 what="dL/dscores (remember the softmax VJP: α ∘ (g - Σ α g))")
    assert_close(d_values, numerical_gradient(loss_v, values), rtol=1e-6, atol=1e-9,
                 what="dL/dvalues = α_j · dL/dc")


@pytest.mark.exercise("2.2")
def test_pooling_backward_gives_masked_positions_zero(ch, rng):
    weights = np.array([[0.5, 0.5, 0.0, 0.0]])
    values, g = rng.standard_normal((1, 4, 3)), rng.standard_normal((1, 3))
    d_scores, d_values = ch.attention_pooling_backward(g, weights, values)
    assert np.all(d_scores[:, 2:] == 0) and np.all(d_values[:, 2:] == 0), \
        "masked positions (weight 0) must get zero gradient"


# Exercise 2.3 ------------------------------------------------------------------------------------


def reference_gru(x_proj, h, W_h, b_h):
    H = h.shape[1]
    hh = h @ W_h + b_h
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    r = sig(x_proj[:, :H] + hh[:, :H])
    z = sig(x_proj[:, H:2 * H] + hh[:, H:2 * H])
    n = np.tanh(x_proj[:, 2 * H:] + r * hh[:, 2 * H:])
    return (1 - z) * n + z * h, r, z, n, hh[:, 2 * H:]


@pytest.mark.exercise("2.3")
def test_gru_step_against_the_equations(ch, rng):
    H = 3
    args = (rng.standard_normal((2, 3 * H)), rng.standard_normal((2, H)),
            rng.standard_normal((H, 3 * H)), rng.standard_normal(3 * H))
    got = ch.gru_step(*args)
    assert isinstance(got, tuple) and len(got) == 5, "return (h_new, r, z, n, hh_n)"
    ref = reference_gru(*args)
    for name, a, b in zip(["h_new", "r (reset gate)", "z (update gate)", "n (candidate)", "hh_n"], got, ref):
        assert_close(a, b, what=name)


@pytest.mark.exercise("2.3")
def test_gru_step_gate_order_and_update_direction(ch, rng):
    """With a huge update-gate bias, z = 1 and the state is copied unchanged."""
    H = 2
    x_proj, h = np.zeros((1, 3 * H)), rng.standard_normal((1, H))
    W_h, b_h = np.zeros((H, 3 * H)), np.zeros(3 * H)
    b_h[H:2 * H] = 50.0
    h_new = ch.gru_step(x_proj, h, W_h, b_h)[0]
    assert_close(h_new, h, rtol=1e-9, atol=1e-12,
                 what="h_new when z = 1 (h' = (1 - z) n + z h; the update gate is the middle block)")
