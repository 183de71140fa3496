"""Chapter 8 solutions: The online softmax.

Written by `make exercises` from the library source; do not edit.
Grade them with: python -m attention_scratch.grade --solutions --chapter 8
"""


import numpy as np

from attention_scratch.online_softmax import check_partials


# Exercise 8.1 (2 points): one step of the online softmax
def online_update(m, s, x):
    """Fold a block of scores ``x`` into the running pair ``(m, s)``.

    ``m`` is the largest score seen so far and ``s`` the sum of ``exp(seen - m)``.
    Return the pair after also seeing ``x``: the new maximum
    ``m' = max(m, max(x))`` and ``s' = s·exp(m - m') + sum(exp(x - m'))``.
    Scores equal to ``-inf`` contribute nothing; while every score seen is
    ``-inf`` the pair stays ``(-inf, 0)`` and nothing may become NaN. An empty
    block (``n = 0``) leaves the pair as it is. A NaN score makes its row's sum
    ``s'`` NaN: never hide it (no ``nanmax``, ``nansum`` or ``nan_to_num``).

    Return new arrays: ``m`` and ``s`` stay as they were.

    Shapes: ``m`` and ``s`` (...), ``x`` (..., n) with the block on the last
    axis, ``n`` possibly 0; returns two arrays of shape (...). Dtype: the inputs
    share one dtype and the results keep it (float32 in, float32 out).
    """
    m_new = np.maximum(m, x.max(axis=-1, initial=-np.inf))  # (...)
    # HINT: when m' is -inf, exp(m - m') is exp(-inf + inf) = NaN; shift by 0 instead
    shift = np.where(np.isneginf(m_new), 0.0, m_new)  # (...): finite
    s_new = s * np.exp(m - shift) + np.exp(x - shift[..., None]).sum(axis=-1)  # (...)
    return m_new, s_new


# Exercise 8.2 (2 points): the merge operator on (max, sum) pairs
def merge_stats(m_a, s_a, m_b, s_b):
    """Merge the pairs of two disjoint pieces of a row into the pair of their union.

    With ``m = max(m_a, m_b)``: ``s = s_a·exp(m_a - m) + s_b·exp(m_b - m)``. A
    piece that saw nothing, ``(-inf, 0)``, is the identity of the merge. No NaN,
    even when both pieces are empty; but a NaN in either pair makes the merged
    sum NaN (never hide it).

    Shapes: all four arguments broadcast together (either pair may be the
    smaller one); returns ``(m, s)`` of the broadcast shape. Dtype: the inputs
    share one dtype and the results keep it (float32 in, float32 out).
    """
    m = np.maximum(m_a, m_b)  # (...)
    shift = np.where(np.isneginf(m), 0.0, m)  # (...): finite
    return m, s_a * np.exp(m_a - shift) + s_b * np.exp(m_b - shift)


# Exercise 8.3 (3 points): merging two partial attention outputs
def merge_attention(out_a, lse_a, out_b, lse_b):
    """Combine attention over key set A and over a disjoint key set B into attention over A∪B.

    ``out_a`` is the normalised attention output over A and ``lse_a`` the
    log-sum-exp of its scores (likewise for B). The weight of each part is its
    share of the total mass: with ``lse = log(exp(lse_a) + exp(lse_b))``,
    ``out = exp(lse_a - lse)·out_a + exp(lse_b - lse)·out_b``. A row that had
    nothing to attend to in a part has output 0 and log-sum-exp ``+inf`` there
    (the flash kernels' convention) and must get weight 0; a row empty in both
    parts gives output 0 and log-sum-exp ``+inf``. Compute without overflow.
    NaN in a part that is not empty (its output or its log-sum-exp) makes the
    row's output NaN, and a NaN log-sum-exp makes the merged one NaN: never
    hide it.

    Shapes: ``out_a``, ``out_b`` (..., Ev); ``lse_a``, ``lse_b`` (...);
    returns ``(out, lse)`` of the same shapes. Dtype: the inputs share one
    dtype and the results keep it (float32 in, float32 out).
    """
    check_partials(out_a=out_a, lse_a=lse_a, out_b=out_b, lse_b=lse_b)
    # HINT: first turn the "+inf = empty" convention into log(0) = -inf, then use merge_stats' shift
    la = np.where(np.isposinf(lse_a), -np.inf, lse_a)  # (...): log of the mass of part A
    lb = np.where(np.isposinf(lse_b), -np.inf, lse_b)  # (...)
    m = np.maximum(la, lb)  # (...)
    shift = np.where(np.isneginf(m), 0.0, m)  # (...): finite
    w_a, w_b = np.exp(la - shift), np.exp(lb - shift)  # (...): masses relative to exp(shift)
    total = w_a + w_b  # (...): 0 only when both parts are empty; NaN stays NaN
    safe = np.where(total == 0, 1.0, total)  # (...)
    out = (w_a[..., None] * out_a + w_b[..., None] * out_b) / safe[..., None]  # (..., Ev)
    lse = np.where(total == 0, np.inf, shift + np.log(safe))  # (...)
    return out, lse
