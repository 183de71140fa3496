"""Graded tests for chapter 14: the elu + 1 feature map, one recurrent linear-attention step,
positive random features."""
import warnings

import numpy as np
import pytest

from attention_scratch.testing import assert_close, assert_shape


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch14_efficient_variants")


# Exercise 14.1 ------------------------------------------------------------------------------------


@pytest.mark.exercise("14.1")
def test_elu_feature_map_values(ch):
    x = np.array([-3.0, -0.5, 0.0, 0.5, 2.0])
    expected = np.array([np.exp(-3.0), np.exp(-0.5), 1.0, 1.5, 3.0])
    assert_close(ch.elu_feature_map(x), expected,
                 what="elu(x) + 1 at x = -3, -0.5, 0, 0.5, 2 (x + 1 for x > 0, exp(x) otherwise)")


@pytest.mark.exercise("14.1")
def test_elu_feature_map_large_inputs_and_dtype(ch):
    x = np.array([[-1000.0, 1000.0], [-20.0, 20.0]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            y = ch.elu_feature_map(x)
        except RuntimeWarning as w:
            raise AssertionError(f"elu_feature_map warned for x = ±1000: {w} "
                                 "(evaluate exp only where x <= 0)") from None
    assert y.dtype == np.float32, f"dtype changed from float32 to {y.dtype}"
    assert_shape(y, (2, 2), "feature map of a (2, 2) array")
    assert_close(y, np.array([[0.0, 1001.0], [np.exp(-20.0), 21.0]], dtype=np.float32),
                 what="elu(x) + 1 for large |x|")


# Exercise 14.2 ------------------------------------------------------------------------------------


@pytest.mark.exercise("14.2")
def test_linear_attention_step_first_token(ch, rng):
    fq, fk, v = rng.uniform(0.1, 1, 3), rng.uniform(0.1, 1, 3), rng.standard_normal(2)
    out, state, z = ch.linear_attention_step(fq, fk, v, np.zeros((3, 2)), np.zeros(3), eps=0.0)
    assert_shape(state, (3, 2), "state after one step (F = 3, Ev = 2)")
    assert_close(state, np.outer(fk, v), what="state after one step: φ(k) v^T")
    assert_close(z, fk, what="normalizer after one step: φ(k)")
    assert_close(out, v, what="the first output attends only to its own value (weight 1)")


@pytest.mark.exercise("14.2")
def test_linear_attention_steps_equal_the_parallel_form(ch, rng):
    B, N, F, Ev = 2, 7, 4, 3
    fq, fk = rng.uniform(0.1, 2, (B, N, F)), rng.uniform(0.1, 2, (B, N, F))
    v = rng.standard_normal((B, N, Ev))
    state, z = np.zeros((B, F, Ev)), np.zeros((B, F))
    before = state.copy()
    outs = []
    for t in range(N):
        out, new_state, z = ch.linear_attention_step(fq[:, t], fk[:, t], v[:, t], state, z)
        if t == 0:
            assert_close(state, before, what="the state passed in (modified in place: return a new array)")
        state = new_state
        outs.append(out)
    weights = np.tril(np.einsum("blf,bsf->bls", fq, fk))  # (B, N, N): causal weights φ(q_i)·φ(k_j)
    expected = weights @ v / (weights.sum(-1, keepdims=True) + 1e-6)
    assert_close(np.stack(outs, axis=1), expected,
                 what="outputs of 7 steps against causal linear attention (batch of 2)")


# Exercise 14.3 ------------------------------------------------------------------------------------


@pytest.mark.exercise("14.3")
def test_positive_random_features_formula(ch, rng):
    x, omega = rng.standard_normal((2, 5, 3)) * 0.5, rng.standard_normal((8, 3))
    phi = ch.positive_random_features(x, omega)
    assert_shape(phi, (2, 5, 8), "features of x (2, 5, 3) with omega (8, 3)")
    expected = np.exp(x @ omega.T - 0.5 * (x ** 2).sum(-1, keepdims=True)) / np.sqrt(8)
    assert_close(phi, expected, what="exp(x·ω - |x|²/2) / sqrt(m) (did you divide by sqrt(m), not m?)")


@pytest.mark.exercise("14.3")
def test_positive_random_features_estimate_the_softmax_kernel(ch, rng):
    q, k = rng.standard_normal((2, 4)) * 0.3, rng.standard_normal((3, 4)) * 0.3
    omega = rng.standard_normal((50_000, 4))
    estimate = ch.positive_random_features(q, omega) @ ch.positive_random_features(k, omega).T
    assert_close(estimate, np.exp(q @ k.T), rtol=3e-2, atol=0,
                 what="φ(q)·φ(k) with 50 000 features against exp(q·k)")


@pytest.mark.exercise("14.3")
def test_positive_random_features_stabilizers(ch, rng):
    x, omega = rng.standard_normal((2, 6, 4)) * 30, rng.standard_normal((16, 4))
    row = ch.positive_random_features(x, omega, "row")
    assert np.isfinite(row).all(), "stabilize='row' still overflowed"
    assert_close(row.max(axis=-1), np.full((2, 6), 0.25),
                 what="with stabilize='row' the largest feature of each row is exp(0)/sqrt(16)")
    small = x / 30
    plain = ch.positive_random_features(small, omega)
    row_small = ch.positive_random_features(small, omega, "row")
    assert_close(row_small / row_small.sum(-1, keepdims=True), plain / plain.sum(-1, keepdims=True),
                 what="'row' only rescales each row")
    every = ch.positive_random_features(small, omega, "all")
    assert_close(every.max(axis=(-2, -1)), np.full(2, 0.25),
                 what="with stabilize='all' the largest feature of each (N, m) matrix is exp(0)/sqrt(16)")
    assert_close(every / plain, np.broadcast_to((every / plain)[:, :1, :1], plain.shape),
                 what="'all' divides a whole (N, m) matrix by one constant")
