"""Graded tests for chapter 15: layer normalisation forward and backward, a KV-cache decoding step."""
import numpy as np
import pytest

from attention_scratch.testing import assert_close, assert_shape, numerical_gradient
from attention_scratch.transformer import TinyTransformer


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch15_tiny_transformer")


# Exercise 15.1 ------------------------------------------------------------------------------------


@pytest.mark.exercise("15.1")
def test_layer_norm_forward(ch, rng):
    x = rng.standard_normal((2, 3, 5)) * 3 + 1
    gamma, beta = rng.standard_normal(5), rng.standard_normal(5)
    y, (x_hat, inv_std) = ch.layer_norm(x, gamma, beta, eps=1e-5)
    assert_shape(y, (2, 3, 5), "y for x of shape (2, 3, 5)")
    assert_shape(inv_std, (2, 3, 1), "inv_std (keep the normalised axis with keepdims=True)")
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    assert_close(inv_std, 1 / np.sqrt(var + 1e-5),
                 what="inv_std = 1/sqrt(var + eps) with the biased variance (mean of squares, not n - 1)")
    assert_close(x_hat, (x - mu) / np.sqrt(var + 1e-5), what="x_hat")
    assert_close(y, gamma * x_hat + beta, what="y = gamma * x_hat + beta")


@pytest.mark.exercise("15.1")
def test_layer_norm_of_a_constant_row(ch):
    y, (x_hat, _) = ch.layer_norm(np.full((1, 4), 7.0), np.ones(4), np.full(4, 0.5))
    assert not np.isnan(y).any(), "a constant row gave NaN: did you add eps inside the square root?"
    assert_close(y, np.full((1, 4), 0.5), what="a constant row normalises to beta")


# Exercise 15.2 ------------------------------------------------------------------------------------


def _reference_forward(x, gamma, beta, eps=1e-5):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return gamma * x_hat + beta, (x_hat, 1 / np.sqrt(var + eps))


@pytest.mark.exercise("15.2")
def test_layer_norm_backward_parameters(ch, rng):
    x, gamma, beta = rng.standard_normal((4, 6)), rng.standard_normal(6), rng.standard_normal(6)
    g = rng.standard_normal((4, 6))
    _, cache = _reference_forward(x, gamma, beta)
    dx, dgamma, dbeta = ch.layer_norm_backward(g, cache, gamma)
    assert_shape(dgamma, (6,), "dgamma (sum over every axis but the last)")
    assert_close(dbeta, g.sum(0), what="dbeta = sum of grad_out over the rows")
    assert_close(dgamma, (g * cache[0]).sum(0), what="dgamma = sum of grad_out * x_hat over the rows")


@pytest.mark.exercise("15.2")
def test_layer_norm_backward_input_against_finite_differences(ch, rng):
    x, gamma, beta = rng.standard_normal((2, 3, 5)), rng.standard_normal(5), rng.standard_normal(5)
    g = rng.standard_normal((2, 3, 5))
    _, cache = _reference_forward(x, gamma, beta)
    dx, _, _ = ch.layer_norm_backward(g, cache, gamma)
    numeric = numerical_gradient(lambda z: np.sum(_reference_forward(z, gamma, beta)[0] * g), x)
    assert_close(dx, numeric, rtol=1e-6, atol=1e-8,
                 what="dx against central differences (the mean and the variance depend on x too)")


# Exercise 15.3 ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return TinyTransformer(11, d_model=16, num_heads=4, num_layers=2, hidden=32, max_len=10,
                           rng=np.random.default_rng(15))


@pytest.mark.exercise("15.3")
def test_decode_step_of_a_prompt(ch, model, rng):
    ids = rng.integers(0, 11, size=(3, 6))
    caches = model.new_caches()
    logits = ch.decode_step(model, ids, caches)
    full, _ = model.forward(ids)
    assert_shape(logits, (3, 11), "logits of the last new token")
    assert_close(logits, full[:, -1], what="decode_step on an empty cache = the last logits of forward")
    assert caches[0].length == 6 and caches[1].length == 6, "every block's cache must hold the 6 tokens"


@pytest.mark.exercise("15.3")
def test_decode_steps_continue_from_the_cache(ch, model, rng):
    ids = rng.integers(0, 11, size=(2, 10))
    caches = model.new_caches()
    ch.decode_step(model, ids[:, :4], caches)
    full, _ = model.forward(ids)
    for t in range(4, 10):
        logits = ch.decode_step(model, ids[:, t:t + 1], caches)
        assert_close(logits, full[:, t], what=f"logits of token {t} decoded with the cache "
                     "(is the position offset the cache length?)")
