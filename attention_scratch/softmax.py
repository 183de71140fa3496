"""Softmax, log-sum-exp and the softmax vector-Jacobian product (chapter 1).

The rules every attention kernel in this library follows start here:

* subtract the row maximum before exponentiating, so no ``exp`` overflows;
* an entry that is masked out (``where=False``) or equals ``-inf`` gets weight 0,
  and whatever it held (even NaN) never reaches the result;
* a row with nothing left to attend to is all zeros, never NaN;
* NaN or ``+inf`` among the entries a row may weight makes that whole row NaN (as
  PyTorch does for NaN); behind ``where=False`` it is absent and changes nothing;
* float16 is accumulated in float32 (a float16 sum overflows at 65504) and returned
  as float16; an empty axis gives empty weights and a log-sum-exp of ``-inf``.
"""
import numpy as np

from ._checks import as_float_array, check_axis, check_bool_mask


# BEGIN EXERCISE 1.1 (2 points): a numerically stable softmax
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
    # BEGIN SOLUTION
    shifted = x - x.max(axis=axis, keepdims=True)  # (..., n): every entry <= 0
    exps = np.exp(shifted)  # (..., n): in [0, 1], the maximum is exactly 1
    return exps / exps.sum(axis=axis, keepdims=True)
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 1.2 (3 points): masked softmax with empty rows
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
    # BEGIN SOLUTION
    # HINT: np.where(mask, x, -np.inf) hides masked entries; what is the max of an empty row?
    hidden = np.where(mask, x, -np.inf).astype(x.dtype)  # (..., n): masked -> -inf
    row_max = hidden.max(axis=axis, keepdims=True)  # (..., 1): -inf on empty rows, NaN kept
    row_max = np.where(row_max == -np.inf, 0, row_max)  # avoid -inf - (-inf) = NaN
    exps = np.exp(hidden - row_max)  # (..., n): exp(-inf) = 0 where masked
    total = exps.sum(axis=axis, keepdims=True)  # (..., 1): 0 on empty rows, NaN stays NaN
    return exps / np.where(total == 0, 1, total)  # empty rows: 0 / 1 = 0
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 1.3 (2 points): log-sum-exp without overflow
def stable_logsumexp(x, axis=-1):
    """``log(sum(exp(x)))`` along ``axis``, computed without overflow.

    Use ``m + log(sum(exp(x - m)))`` with ``m`` the row maximum. A row of only
    ``-inf`` gives ``-inf`` (the log of an empty sum); a row holding ``+inf``
    gives ``+inf``; a row holding NaN gives NaN.

    Shapes: ``x`` (..., n) -> (...,), the axis removed, dtype kept: a 1-D ``x``
    gives a 0-d array (or NumPy scalar) of ``x``'s dtype, not a Python float.
    """
    # BEGIN SOLUTION
    row_max = x.max(axis=axis, keepdims=True)  # (..., 1)
    row_max = np.where(np.isfinite(row_max), row_max, 0)  # keep ±inf rows free of NaN
    with np.errstate(divide="ignore"):  # log(0) = -inf for an all -inf row is intended
        total = np.log(np.exp(x - row_max).sum(axis=axis, keepdims=True))  # (..., 1)
    return (total + row_max).squeeze(axis)  # (...,)
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 1.4 (2 points): the softmax vector-Jacobian product
def softmax_vjp(grad_out, probs, axis=-1):
    """Gradient through ``probs = softmax(x)``: return dL/dx given ``grad_out`` = dL/dprobs.

    The Jacobian is ``diag(p) - p pᵀ``, so the vector-Jacobian product is
    ``p * (g - sum(g * p))``, the sum taken along ``axis``. Never build the
    Jacobian itself. A fully masked row (every probability 0) gets gradient 0.

    Shapes: ``grad_out`` and ``probs`` the same shape and dtype; the result has
    that shape and dtype.
    """
    # BEGIN SOLUTION
    dot = (grad_out * probs).sum(axis=axis, keepdims=True)  # (..., 1): gᵀp per row
    return probs * (grad_out - dot)  # (..., n)
    # END SOLUTION


# END EXERCISE


def _nonfinite_rows(x, where, axis):
    """``(bad, clean)``: rows holding NaN or ``+inf`` where they may weight,
    and ``x`` with those entries 0.

    ``bad`` has ``axis`` kept with length 1; ``None`` (and ``x`` itself) when there is
    nothing to clean.
    """
    bad = np.isnan(x) | np.isposinf(x)  # (..., n, ...)
    if where is not None:
        bad &= where
    if not bad.any():
        return None, x
    return bad.any(axis=axis, keepdims=True), np.where(bad, 0, x).astype(x.dtype)


def softmax(x, axis=-1, where=None):
    """Numerically stable softmax along ``axis``.

    Parameters
    ----------
    x : array_like
        Scores. Integers are converted to float64; float16/32/64 keep their dtype
        (float16 is accumulated in float32), in either byte order.
    axis : int
        The axis to normalise over.
    where : array_like of bool, optional
        True where an entry may receive weight (the attention mask polarity of
        this library). False entries get weight 0 and their values are ignored,
        even NaN. A row with no True entry, or only ``-inf`` scores, is all zeros.

    Returns
    -------
    ndarray
        Non-negative weights that sum to 1 along ``axis`` (0 on empty rows). A row
        holding NaN or ``+inf`` in an entry it may weight is all NaN. An empty
        ``axis`` gives an empty result.

    Shapes
    ------
    ``x`` any shape; ``where`` broadcastable to ``x.shape``; output ``x.shape``.
    """
    x = as_float_array(x, "x")
    axis = check_axis(axis, x.ndim)
    if where is not None:
        where = check_bool_mask(where, x.shape, "where")
    if x.shape[axis] == 0:
        return np.zeros(x.shape, dtype=x.dtype)  # nothing to normalise
    work = x.astype(np.float32) if x.dtype == np.float16 else x  # a float16 sum overflows at 65504
    bad, work = _nonfinite_rows(work, where, axis)
    probs = masked_softmax(work, True if where is None else where, axis=axis)
    if bad is not None:
        probs = np.where(bad, np.nan, probs)  # the whole row
    return probs.astype(x.dtype, copy=False)


def logsumexp(x, axis=-1):
    """Natural log of the sum of exponentials along ``axis``, without overflow.

    Parameters
    ----------
    x : array_like
        Scores; ``-inf`` entries contribute nothing. float16 is accumulated in
        float32 and returned as float16; any byte order is accepted.
    axis : int
        The axis to reduce.

    Returns
    -------
    ndarray
        ``x`` with ``axis`` removed. A row of only ``-inf``, or an empty axis, gives
        ``-inf``; a row holding ``+inf`` gives ``+inf``; a row holding NaN gives NaN.

    Shapes
    ------
    ``(..., n) -> (...)`` for ``axis=-1``.
    """
    x = as_float_array(x, "x")
    axis = check_axis(axis, x.ndim)
    if x.shape[axis] == 0:
        # log of an empty sum
        return np.full(x.shape[:axis] + x.shape[axis + 1:], -np.inf, dtype=x.dtype)
    work = x.astype(np.float32) if x.dtype == np.float16 else x
    nan_rows = np.isnan(work).any(axis=axis)  # (...): NaN in, NaN out
    if nan_rows.any():
        work = np.where(np.isnan(work), 0, work).astype(work.dtype)
    # inf - inf in a row holding +inf: the result is +inf anyway
    with np.errstate(invalid="ignore"):
        lse = stable_logsumexp(work, axis=axis)  # (...)
    lse = np.where(np.isposinf(work).any(axis=axis), np.inf, lse)  # (...)
    return np.where(nan_rows, np.nan, lse).astype(x.dtype)


def softmax_backward(grad_out, probs, axis=-1):
    """Vector-Jacobian product of the softmax: dL/dx from dL/dprobs and probs.

    Parameters
    ----------
    grad_out : array_like
        dL/dprobs.
    probs : array_like
        The softmax output of the forward pass (zeros on masked entries, which
        therefore receive zero gradient).
    axis : int
        The axis the forward softmax normalised over.

    Shapes
    ------
    ``grad_out`` and ``probs`` of one shape; the output has that shape.
    """
    grad_out = as_float_array(grad_out, "grad_out")
    probs = as_float_array(probs, "probs")
    if grad_out.shape != probs.shape:
        raise ValueError(
            f"grad_out and probs must have the same shape; got {grad_out.shape} and {probs.shape}"
        )
    return softmax_vjp(grad_out, probs, axis=check_axis(axis, probs.ndim))
