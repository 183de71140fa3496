"""Graded tests for chapter 15: layer normalisation forward and backward, a KV-cache decoding step.

Every returned array is checked whole against a float64 reference written here, with the
reference's shape, dtype and tolerance (:mod:`attention_scratch.course.checks`).
"""
import numpy as np
import pytest

from attention_scratch.course.checks import check_close, expect_tuple
from attention_scratch.testing import numerical_gradient
from attention_scratch.transformer import TinyTransformer


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch15_tiny_transformer")


def _layer_norm(x, gamma, beta, eps=1e-5):
    """The reference forward pass in float64: ``(y, (x_hat, inv_std))``. Shapes: (..., D) -> (..., D)."""
    x, gamma, beta = (np.asarray(a, dtype=np.float64) for a in (x, gamma, beta))
    mu = x.mean(axis=-1, keepdims=True)  # (..., 1)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)  # (..., 1): biased, two passes
    inv_std = 1.0 / np.sqrt(var + eps)  # (..., 1)
    x_hat = (x - mu) * inv_std  # (..., D)
    return gamma * x_hat + beta, (x_hat, inv_std)


# Exercise 15.1 ------------------------------------------------------------------------------------


def _check_forward(got, x, gamma, beta, eps, dtype, said, rtol=None, atol=None):
    y, cache = expect_tuple(got, 2, what=f"layer_norm {said}: (y, cache)")
    x_hat, inv_std = expect_tuple(cache, 2, what=f"the cache of layer_norm {said}: (x_hat, inv_std)")
    y_ref, (x_hat_ref, inv_std_ref) = _layer_norm(x, gamma, beta, eps)
    check_close(inv_std, inv_std_ref.astype(dtype), rtol=rtol, atol=atol,
                what=f"inv_std {said}: 1/sqrt(var + eps), eps inside the square root, var the biased "
                     "variance mean((x - mu)²) over the last axis (not n - 1), kept as (..., 1) with keepdims")
    check_close(x_hat, x_hat_ref.astype(dtype), rtol=rtol, atol=atol,
                what=f"x_hat {said}: (x - mu) * inv_std, mu the mean of each row (last axis)")
    check_close(y, y_ref.astype(dtype), rtol=rtol, atol=atol, what=f"y {said}: gamma * x_hat + beta")


@pytest.mark.exercise("15.1")
def test_layer_norm_forward(ch, rng):
    x = rng.standard_normal((2, 3, 5)) * 3 + 1
    gamma, beta = rng.standard_normal(5), rng.standard_normal(5)
    _check_forward(ch.layer_norm(x, gamma, beta), x, gamma, beta, 1e-5, np.float64,
                   "of x (2, 3, 5) with the default eps = 1e-5")


@pytest.mark.exercise("15.1")
@pytest.mark.parametrize("shape", [(4, 6), (7,)])
def test_layer_norm_with_a_large_eps(ch, rng, shape):
    x = rng.standard_normal(shape) * 0.5 - 2  # variance about 0.25: eps = 0.5 weighs as much as the variance
    gamma, beta = rng.uniform(0.5, 2, shape[-1]), rng.standard_normal(shape[-1])
    _check_forward(ch.layer_norm(x, gamma, beta, eps=0.5), x, gamma, beta, 0.5, np.float64,
                   f"of x {shape} with eps = 0.5")


@pytest.mark.exercise("15.1")
def test_layer_norm_of_a_constant_row(ch, rng):
    x = np.stack([np.full(4, 7.0), rng.standard_normal(4)])  # row 0 has variance 0
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    _check_forward(ch.layer_norm(x, gamma, beta), x, gamma, beta, 1e-5, np.float64,
                   "of a constant row, which must give beta, not NaN (eps inside the square root keeps "
                   "1/sqrt(0 + eps) finite), and a random row")


@pytest.mark.exercise("15.1")
def test_layer_norm_of_rows_with_a_large_mean(ch, rng):
    x = rng.standard_normal((4, 3, 16)) + 1e6  # a mean a million times the spread
    gamma, beta = rng.standard_normal(16), rng.standard_normal(16)
    _check_forward(ch.layer_norm(x, gamma, beta), x, gamma, beta, 1e-5, np.float64,
                   "of rows 1e6 + N(0, 1) (subtract the mean, then square: mean(x²) - mu² cancels "
                   "1e12 against 1e12 and loses the variance's digits)", rtol=1e-7, atol=1e-7)


@pytest.mark.exercise("15.1")
def test_layer_norm_keeps_float32(ch, rng):
    x = (rng.standard_normal((3, 4, 8)) * 2 + 0.5).astype(np.float32)
    gamma, beta = rng.standard_normal(8).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    _check_forward(ch.layer_norm(x, gamma, beta, 1e-3), x, gamma, beta, 1e-3, np.float32,
                   "of float32 x (3, 4, 8), gamma and beta, eps = 1e-3 (float32 in, float32 out)")


# Exercise 15.2 ------------------------------------------------------------------------------------


def _layer_norm_grads(grad_out, x, gamma, eps):
    """Reference gradients through the Jacobian of each row, written out (float64).

    ``d x_hat_i / d x_j = inv_std (δ_ij - 1/D - x_hat_i x_hat_j / D)``; ``dx = Jᵀ (gamma * grad_out)``.
    Shapes: (..., D), (..., D), (D,) -> (..., D), (D,), (D,).
    """
    grad_out = np.asarray(grad_out, np.float64)
    _, (x_hat, inv_std) = _layer_norm(x, gamma, np.zeros_like(gamma), eps)
    D = x_hat.shape[-1]
    jacobian = inv_std[..., None] * (np.eye(D) - 1.0 / D - x_hat[..., :, None] * x_hat[..., None, :] / D)  # (..., D, D)
    dx = np.einsum("...ij,...i->...j", jacobian, grad_out * np.asarray(gamma, np.float64))  # (..., D)
    rows = tuple(range(grad_out.ndim - 1))
    return dx, (grad_out * x_hat).sum(axis=rows), grad_out.sum(axis=rows)


def _check_backward(ch, x, gamma, eps, grad_out, dtype, said):
    _, cache = _layer_norm(x, gamma, np.zeros_like(gamma), eps)
    cache = tuple(c.astype(dtype) for c in cache)
    got = ch.layer_norm_backward(grad_out, cache, gamma)
    dx, dgamma, dbeta = expect_tuple(got, 3, what=f"layer_norm_backward {said}: (dx, dgamma, dbeta)")
    dx_ref, dgamma_ref, dbeta_ref = _layer_norm_grads(grad_out, x, gamma, eps)
    check_close(dbeta, dbeta_ref.astype(dtype),
                what=f"dbeta {said}: grad_out summed over every axis but the last, shape (D,)")
    check_close(dgamma, dgamma_ref.astype(dtype),
                what=f"dgamma {said}: grad_out * x_hat summed over every axis but the last, shape (D,) "
                     "(gamma itself does not appear)")
    check_close(dx, dx_ref.astype(dtype),
                what=f"dx {said}: inv_std * (g - mean(g) - x_hat * mean(g * x_hat)) with g = grad_out * gamma "
                     "and both means over the last axis of each row (the mean and the variance depend on "
                     "x too)")


@pytest.mark.exercise("15.2")
def test_layer_norm_backward_with_leading_axes(ch, rng):
    x, gamma = rng.standard_normal((2, 3, 5)) * 2 + 1, rng.standard_normal(5)
    _check_backward(ch, x, gamma, 1e-5, rng.standard_normal((2, 3, 5)), np.float64, "for x (2, 3, 5)")


@pytest.mark.exercise("15.2")
@pytest.mark.parametrize("shape", [(4, 6), (7,)])
def test_layer_norm_backward_with_a_large_eps(ch, rng, shape):
    x, gamma = rng.standard_normal(shape) * 0.5, rng.uniform(-2, 2, shape[-1])
    _check_backward(ch, x, gamma, 0.5, rng.standard_normal(shape), np.float64,
                    f"for x {shape} normalised with eps = 0.5 (use the inv_std of the cache)")


@pytest.mark.exercise("15.2")
def test_layer_norm_backward_input_against_finite_differences(ch, rng):
    x, gamma, beta = rng.standard_normal((2, 3, 5)), rng.standard_normal(5), rng.standard_normal(5)
    g = rng.standard_normal((2, 3, 5))
    _, cache = _layer_norm(x, gamma, beta)
    got = expect_tuple(ch.layer_norm_backward(g, cache, gamma), 3, what="layer_norm_backward: (dx, dgamma, dbeta)")
    numeric = numerical_gradient(lambda z: np.sum(_layer_norm(z, gamma, beta)[0] * g), x)
    check_close(got[0], numeric, rtol=1e-6, atol=1e-8,
                what="dx against central differences of sum(layer_norm(x) * grad_out) (the mean and the "
                     "variance depend on x too)")


@pytest.mark.exercise("15.2")
def test_layer_norm_backward_keeps_float32(ch, rng):
    x, gamma = rng.standard_normal((3, 4, 8)) * 2, rng.standard_normal(8).astype(np.float32)
    x = x.astype(np.float32)
    _check_backward(ch, x, gamma, 1e-5, rng.standard_normal((3, 4, 8)).astype(np.float32), np.float32,
                    "for float32 grad_out (3, 4, 8), cache and gamma (float32 in, float32 out)")


# Exercise 15.3 ------------------------------------------------------------------------------------


def _model(num_layers, seed):
    return TinyTransformer(11, d_model=16, num_heads=4, num_layers=num_layers, hidden=32, max_len=10,
                           rng=np.random.default_rng(seed))


def _check_decoded(ch, model, ids, chunks):
    """Decode ``ids`` in pieces of the given lengths with one set of caches; compare with forward."""
    full, _ = model.forward(ids)  # (B, L, V): every position recomputed from scratch
    caches = model.new_caches()
    p = 0
    for n in chunks:
        logits = ch.decode_step(model, ids[:, p:p + n], caches)
        said = f"{n} new token{'s' if n > 1 else ''} at positions {p}..{p + n - 1}"
        check_close(logits, full[:, p + n - 1],
                    what=f"decode_step with {said} after {p} cached ones: expected the logits of model.forward "
                         f"on the whole sequence at position {p + n - 1}, the last new token, shape "
                         "(B, vocab_size) (embed at the position offset p = caches[0].length, each block "
                         "with its own cache, then model.output)")
        p += n
        lengths = [getattr(cache, "length", None) for cache in caches]
        if lengths != [p] * len(caches):
            raise AssertionError(
                f"after decode_step with {said}, every block's cache must hold {p} positions; their lengths are "
                f"{lengths} (pass block i the cache caches[i]: block.forward(x, cache=cache) appends to it)")


@pytest.mark.exercise("15.3")
@pytest.mark.parametrize("batch,length", [(3, 6), (1, 1)])
def test_decode_step_of_a_prompt(ch, rng, batch, length):
    _check_decoded(ch, _model(2, 15), rng.integers(0, 11, size=(batch, length)), [length])


@pytest.mark.exercise("15.3")
def test_decode_steps_continue_from_the_cache(ch, rng):
    _check_decoded(ch, _model(2, 15), rng.integers(0, 11, size=(2, 10)), [4, 1, 1, 1, 1, 1, 1])


@pytest.mark.exercise("15.3")
def test_decode_steps_of_several_tokens_in_a_deeper_model(ch, rng):
    _check_decoded(ch, _model(3, 16), rng.integers(0, 11, size=(2, 10)), [3, 2, 1, 1, 3])
