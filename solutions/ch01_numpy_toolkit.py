"""Chapter 1 solutions: The NumPy toolkit for attention.

Written by `make exercises` from the library source; do not edit.
Grade them with: python -m attention_scratch.grade --solutions --chapter 1
"""


import numpy as np


# Exercise 1.1 (2 points): a numerically stable softmax
def stable_softmax(x, axis=-1):
    """Softmax of ``x`` along ``axis``, safe for large inputs.

    Subtract the maximum along ``axis`` before exponentiating: softmax is
    unchanged by adding a constant to a row, and afterwards every exponent is
    at most 0, so nothing overflows. Entries equal to ``-inf`` get weight 0.
    You may assume every row holds at least one finite entry. NaN in a row
    makes that row NaN, and ``+inf`` gives NaN at least where it stands: never
    hide them. Other rows are unaffected.

    Shapes: ``x`` any shape; the result has the shape and dtype of ``x``
    (float16, float32 or float64).
    """
    shifted = x - x.max(axis=axis, keepdims=True)  # (..., n): every entry <= 0
    exps = np.exp(shifted)  # (..., n): in [0, 1], the maximum is exactly 1
    return exps / exps.sum(axis=axis, keepdims=True)


# Exercise 1.2 (3 points): masked softmax with empty rows
def masked_softmax(x, mask, axis=-1):
    """Softmax of ``x`` over the entries where ``mask`` is True.

    Masked-out entries (``mask == False``) and entries equal to ``-inf`` get
    weight exactly 0, and whatever they hold, even NaN, must not change the
    result. A row with no entry left is all zeros, not NaN. But NaN in an entry
    the row keeps makes the row's kept entries NaN, and a kept ``+inf`` gives NaN
    at least where it stands: never hide them (no ``np.nan_to_num``, ``nanmax``
    or ``nansum``).

    Shapes: ``x`` any shape; ``mask`` boolean, broadcastable to ``x.shape``;
    the result has the shape and dtype of ``x``.
    """
    # HINT: np.where(mask, x, -np.inf) hides masked entries; what is the max of an empty row?
    hidden = np.where(mask, x, -np.inf).astype(x.dtype)  # (..., n): masked -> -inf
    row_max = hidden.max(axis=axis, keepdims=True)  # (..., 1): -inf on empty rows, NaN kept
    row_max = np.where(row_max == -np.inf, 0, row_max)  # avoid -inf - (-inf) = NaN
    exps = np.exp(hidden - row_max)  # (..., n): exp(-inf) = 0 where masked
    total = exps.sum(axis=axis, keepdims=True)  # (..., 1): 0 on empty rows, NaN stays NaN
    return exps / np.where(total == 0, 1, total)  # empty rows: 0 / 1 = 0


# Exercise 1.3 (2 points): log-sum-exp without overflow
def stable_logsumexp(x, axis=-1):
    """``log(sum(exp(x)))`` along ``axis``, computed without overflow.

    Use ``m + log(sum(exp(x - m)))`` with ``m`` the row maximum. A row of only
    ``-inf`` gives ``-inf`` (the log of an empty sum); a row holding ``+inf``
    gives ``+inf``; a row holding NaN gives NaN.

    Shapes: ``x`` (..., n) -> (...,), the axis removed, dtype kept: a 1-D ``x``
    gives a 0-d array (or NumPy scalar) of ``x``'s dtype, not a Python float.
    """
    row_max = x.max(axis=axis, keepdims=True)  # (..., 1)
    row_max = np.where(np.isfinite(row_max), row_max, 0)  # keep ±inf rows free of NaN
    with np.errstate(divide="ignore"):  # log(0) = -inf for an all -inf row is intended
        total = np.log(np.exp(x - row_max).sum(axis=axis, keepdims=True))  # (..., 1)
    return (total + row_max).squeeze(axis)  # (...,)


# Exercise 1.4 (2 points): the softmax vector-Jacobian product
def softmax_vjp(grad_out, probs, axis=-1):
    """Gradient through ``probs = softmax(x)``: return dL/dx given ``grad_out`` = dL/dprobs.

    The Jacobian is ``diag(p) - p pᵀ``, so the vector-Jacobian product is
    ``p * (g - sum(g * p))``, the sum taken along ``axis``. Never build the
    Jacobian itself. A fully masked row (every probability 0) gets gradient 0.

    Shapes: ``grad_out`` and ``probs`` the same shape and dtype; the result has
    that shape and dtype.
    """
    dot = (grad_out * probs).sum(axis=axis, keepdims=True)  # (..., 1): gᵀp per row
    return probs * (grad_out - dot)  # (..., n)


# Exercise 1.5 (2 points): central-difference gradients
def numerical_gradient(f, x, eps=1e-6):
    """The gradient of a scalar function ``f`` at ``x`` by central differences.

    For every index ``i``: ``(f(x + eps·e_i) - f(x - eps·e_i)) / (2·eps)``,
    where ``e_i`` is 1 at ``i`` and 0 elsewhere. The error of this formula is
    O(eps²), against O(eps) for the one-sided difference. Do not modify the
    caller's ``x``; work on a float64 copy (``x`` may be an integer or float32
    array, which cannot hold ``x + eps`` accurately), and call ``f`` with arrays of
    ``x``'s own shape.

    Shapes: ``x`` any shape; ``f(x)`` a scalar; the result has the shape of ``x``
    and dtype float64.
    """
    x = np.array(x, dtype=np.float64)  # a private float64 copy we may perturb
    grad = np.zeros_like(x)
    flat_x, flat_grad = x.reshape(-1), grad.reshape(-1)  # views of x and grad
    for i in range(flat_x.size):
        original = flat_x[i]
        flat_x[i] = original + eps
        f_plus = float(f(x))
        flat_x[i] = original - eps
        f_minus = float(f(x))
        flat_x[i] = original
        flat_grad[i] = (f_plus - f_minus) / (2 * eps)
    return grad
