"""Chapter 10 solutions: Flash attention: the backward pass.

Written by `make exercises` from the library source; do not edit.
Grade them with: python -m attention_scratch.grade --solutions --chapter 10
"""


import numpy as np


# Exercise 10.1 (1 point): the D term of the backward pass
def d_term(grad_out, out):
    """``D_i = Σ_v dO_iv · O_iv``, the row sums of ``grad_out ∘ out``.

    It equals ``Σ_j P_ij dP_ij`` (the term of the softmax backward pass) but costs
    O(Ev) per row instead of O(S), and needs no attention weights.

    Shapes: ``grad_out`` and ``out`` (..., L, Ev); returns (..., L). Dtype: the
    inputs share one dtype and the result keeps it (float32 in, float32 out).
    """
    return (grad_out * out).sum(axis=-1)  # (..., L)


# Exercise 10.2 (2 points): attention weights recomputed from the log-sum-exp
def recompute_probs(scores, lse, keep=None):
    """The attention weights of one tile, ``P = exp(scores - lse)``, from the stored log-sum-exp.

    ``scores`` are already scaled, and ``lse`` is the log-sum-exp of each *whole*
    row, so the weights of a tile need not sum to 1. Entries where ``keep`` is
    False get weight 0, whatever their score (a NaN or infinite score there must
    not reach the result). Rows with ``lse = +inf`` (nothing to attend to) get
    weight 0 everywhere; no NaN. A NaN score where ``keep`` is True gives NaN
    there: never hide it. Compute ``exp(scores - lse)`` in one piece: scores and
    log-sum-exps near 800 are ordinary, and ``exp(800)`` overflows.

    Shapes: ``scores`` (..., bq, bk), ``lse`` (..., bq), ``keep`` None or
    broadcastable to (..., bq, bk); returns (..., bq, bk). Dtype: ``scores`` and
    ``lse`` share one dtype and the result keeps it (float32 in, float32 out).
    """
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)  # (..., bq, bk)
    p = scores - lse[..., None]  # (..., bq, bk): a new array, the caller's scores stay as they are
    return np.exp(p, out=p)  # (..., bq, bk): in place on our own array; exp(-inf) = 0


# Exercise 10.3 (2 points): the gradient of the scores
def dscores(p, dp, d):
    """``dS = P ∘ (dP - D)``: the softmax backward pass with the precomputed ``D``.

    ``p`` and ``dp`` may be one tile of the rows; ``d`` holds each row's ``D``
    over the *whole* row (from :func:`d_term`), so it is not recomputed here.
    Masked means absent: where ``p`` is 0 the gradient is exactly 0, even when
    ``dp`` holds NaN there (the NaN value of a key the row may not see); NaN
    in ``p``, or in ``dp`` or ``d`` where ``p > 0``, reaches the result (never
    hide it).

    Shapes: ``p`` and ``dp`` (..., bq, bk); ``d`` (..., bq); returns (..., bq, bk).
    Dtype: the inputs share one dtype and the result keeps it (float32 in,
    float32 out).
    """
    # HINT: 0 * NaN is NaN: choose the 0 with np.where rather than multiply by it
    ds = dp - d[..., None]  # (..., bq, bk): a new array, dp stays as it was
    ds *= p  # (..., bq, bk), in place
    if np.isnan(ds.sum()):  # rare: a NaN somewhere, maybe 0 * NaN where p = 0 (one pass to know)
        ds = np.where(p == 0, 0, ds).astype(p.dtype, copy=False)  # (..., bq, bk)
    return ds
