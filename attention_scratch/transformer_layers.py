"""Layer normalisation and the position-wise MLP, with backward passes (chapter 15).

The two layers a transformer block adds to attention. Both follow the calling
convention of :mod:`attention_scratch.nn`: ``y, cache = layer.forward(x)`` and
``dx = layer.backward(dy, cache)``, which adds the parameter gradients to
``layer.grads``.
"""
import numpy as np

from .nn import Linear, Module


# BEGIN EXERCISE 15.1 (2 points): layer normalisation, forward
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
    # BEGIN SOLUTION
    mu = x.mean(axis=-1, keepdims=True)  # (..., 1)
    centred = x - mu  # (..., D)
    inv_std = 1.0 / np.sqrt((centred * centred).mean(axis=-1, keepdims=True) + eps)  # (..., 1)
    x_hat = centred * inv_std  # (..., D)
    return gamma * x_hat + beta, (x_hat, inv_std)
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 15.2 (3 points): layer normalisation, backward
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
    # BEGIN SOLUTION
    x_hat, inv_std = cache
    D = x_hat.shape[-1]
    flat = grad_out.reshape(-1, D)  # (N, D)
    dgamma = (flat * x_hat.reshape(-1, D)).sum(axis=0)  # (D,)
    dbeta = flat.sum(axis=0)  # (D,)
    g = grad_out * gamma  # (..., D): dL/dx_hat
    dx = inv_std * (g - g.mean(axis=-1, keepdims=True)
                    - x_hat * (g * x_hat).mean(axis=-1, keepdims=True))  # (..., D)
    return dx, dgamma, dbeta
    # END SOLUTION


# END EXERCISE


class LayerNorm(Module):
    """Layer normalisation (Ba et al., 2016) over the last axis, with a learned scale and shift.

    Parameters ``gamma`` (ones) and ``beta`` (zeros), both ``(D,)``.

    Shapes
    ------
    ``x`` (..., D) -> (..., D).
    """

    def __init__(self, dim, eps=1e-5, dtype=np.float64):
        super().__init__()
        self.eps = eps
        self.add_param("gamma", np.ones(dim, dtype=dtype))
        self.add_param("beta", np.zeros(dim, dtype=dtype))

    def forward(self, x):
        if x.shape[-1] != self.params["gamma"].shape[0]:
            raise ValueError(f"x has last dimension {x.shape[-1]} (shape {x.shape}); "
                             f"this LayerNorm normalises {self.params['gamma'].shape[0]}")
        return layer_norm(x, self.params["gamma"], self.params["beta"], self.eps)

    def backward(self, grad_out, cache):
        dx, dgamma, dbeta = layer_norm_backward(grad_out, cache, self.params["gamma"])
        self.grads["gamma"] += dgamma
        self.grads["beta"] += dbeta
        return dx


class MLP(Module):
    """The position-wise feed-forward network: ``Linear -> ReLU -> Linear``.

    Parameters
    ----------
    dim, hidden : int
        Model width and hidden width (4·dim in Vaswani et al., 2017).
    rng : numpy.random.Generator

    Shapes
    ------
    ``x`` (..., dim) -> (..., dim).
    """

    def __init__(self, dim, hidden, rng, dtype=np.float64):
        super().__init__()
        self.fc1 = Linear(dim, hidden, rng, dtype=dtype)
        self.fc2 = Linear(hidden, dim, rng, dtype=dtype)

    def forward(self, x):
        h, c1 = self.fc1.forward(x)  # (..., hidden)
        a = np.maximum(h, 0)  # (..., hidden)
        y, c2 = self.fc2.forward(a)  # (..., dim)
        return y, (c1, h > 0, c2)

    def backward(self, grad_out, cache):
        c1, active, c2 = cache
        da = self.fc2.backward(grad_out, c2)  # (..., hidden)
        return self.fc1.backward(da * active, c1)  # (..., dim)
