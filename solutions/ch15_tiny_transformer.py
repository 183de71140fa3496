"""Chapter 15 solutions: A tiny transformer.

Written by `make exercises` from the library source; do not edit.
Grade them with: python -m attention_scratch.grade --solutions --chapter 15
"""


import numpy as np


# Exercise 15.1 (2 points): layer normalisation, forward
def layer_norm(x, gamma, beta, eps=1e-5):
    """Normalise each row of ``x`` to mean 0 and variance 1, then scale and shift.

    ``mu = mean(x)``, ``var = mean((x - mu)²)`` over the last axis (the biased
    variance, as PyTorch; subtract the mean before squaring: ``mean(x²) - mu²``
    loses digits when ``|mu|`` is large against the spread),
    ``x_hat = (x - mu) / sqrt(var + eps)``, ``y = gamma * x_hat + beta``. Return
    ``y`` and the cache ``(x_hat, inv_std)`` with ``inv_std = 1 / sqrt(var + eps)``
    of shape (..., 1), which the backward pass needs. float32 inputs give
    float32 results.

    Shapes: ``x`` (..., D); ``gamma``, ``beta`` (D,); returns ``y`` (..., D) and
    ``(x_hat (..., D), inv_std (..., 1))``.
    """
    mu = x.mean(axis=-1, keepdims=True)  # (..., 1)
    centred = x - mu  # (..., D)
    inv_std = 1.0 / np.sqrt((centred * centred).mean(axis=-1, keepdims=True) + eps)  # (..., 1)
    x_hat = centred * inv_std  # (..., D)
    return gamma * x_hat + beta, (x_hat, inv_std)


# Exercise 15.2 (3 points): layer normalisation, backward
def layer_norm_backward(grad_out, cache, gamma):
    """Gradients of :func:`layer_norm`: ``(dx, dgamma, dbeta)``.

    With ``g = grad_out * gamma`` (the gradient of ``x_hat``), the gradient of
    the input is ``dx = inv_std * (g - mean(g) - x_hat * mean(g * x_hat))``, the
    means over the last axis: normalising removes the component of ``g`` along
    the constant vector and along ``x_hat``. ``dgamma`` and ``dbeta`` sum
    ``grad_out * x_hat`` and ``grad_out`` over every axis but the last. float32
    inputs give float32 results.

    Shapes: ``grad_out`` (..., D); ``cache`` = ``(x_hat (..., D), inv_std (..., 1))``;
    ``gamma`` (D,); returns ``dx`` (..., D), ``dgamma`` (D,), ``dbeta`` (D,).
    """
    x_hat, inv_std = cache
    D = x_hat.shape[-1]
    flat = grad_out.reshape(-1, D)  # (N, D)
    dgamma = (flat * x_hat.reshape(-1, D)).sum(axis=0)  # (D,)
    dbeta = flat.sum(axis=0)  # (D,)
    g = grad_out * gamma  # (..., D): dL/dx_hat
    dx = inv_std * (g - g.mean(axis=-1, keepdims=True)
                    - x_hat * (g * x_hat).mean(axis=-1, keepdims=True))  # (..., D)
    return dx, dgamma, dbeta


# Exercise 15.3 (3 points): one generation step with a KV cache
def decode_step(model, ids, caches):
    """Feed new tokens through ``model`` using (and extending) the KV caches;
    return the last logits.

    The new tokens sit at positions ``p .. p + n - 1`` where ``p = caches[0].length``
    is the number of tokens already cached. Embed them with
    ``model.embed(ids, offset=p)``; pass the activations through every block
    ``x, _ = block.forward(x, cache=cache)`` with that block's cache (the
    attention layer appends the new keys and values and lets the new queries
    see everything cached); finish with ``logits, _ = model.output(x)`` and
    return the logits of the last new token.

    Shapes: ``ids`` (B, n) integers; ``caches`` a list with one cache per block;
    returns (B, vocab_size).
    """
    x = model.embed(ids, offset=caches[0].length)  # (B, n, d): positions p .. p + n - 1
    for block, cache in zip(model.blocks, caches, strict=True):
        x, _ = block.forward(x, cache=cache)  # (B, n, d)
    logits, _ = model.output(x)  # (B, n, V)
    return logits[:, -1]  # (B, V)
