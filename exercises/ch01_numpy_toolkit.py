"""Chapter 1 exercises: The NumPy toolkit for attention.

Replace each `raise NotImplementedError(...)` with your code, then grade:

    make grade CHAPTER=1
    python -m attention_scratch.grade --chapter 1

This file was written by `make exercises` from the library; your edits are
never overwritten. The answers are in solutions/ and in the book.
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
    raise NotImplementedError("Exercise 1.1: a numerically stable softmax")


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
    raise NotImplementedError("Exercise 1.2: masked softmax with empty rows")


# Exercise 1.3 (2 points): log-sum-exp without overflow
def stable_logsumexp(x, axis=-1):
    """``log(sum(exp(x)))`` along ``axis``, computed without overflow.

    Use ``m + log(sum(exp(x - m)))`` with ``m`` the row maximum. A row of only
    ``-inf`` gives ``-inf`` (the log of an empty sum); a row holding ``+inf``
    gives ``+inf``; a row holding NaN gives NaN.

    Shapes: ``x`` (..., n) -> (...,), the axis removed, dtype kept: a 1-D ``x``
    gives a 0-d array (or NumPy scalar) of ``x``'s dtype, not a Python float.
    """
    raise NotImplementedError("Exercise 1.3: log-sum-exp without overflow")


# Exercise 1.4 (2 points): the softmax vector-Jacobian product
def softmax_vjp(grad_out, probs, axis=-1):
    """Gradient through ``probs = softmax(x)``: return dL/dx given ``grad_out`` = dL/dprobs.

    The Jacobian is ``diag(p) - p pᵀ``, so the vector-Jacobian product is
    ``p * (g - sum(g * p))``, the sum taken along ``axis``. Never build the
    Jacobian itself. A fully masked row (every probability 0) gets gradient 0.

    Shapes: ``grad_out`` and ``probs`` the same shape and dtype; the result has
    that shape and dtype.
    """
    raise NotImplementedError("Exercise 1.4: the softmax vector-Jacobian product")


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
    raise NotImplementedError("Exercise 1.5: central-difference gradients")
