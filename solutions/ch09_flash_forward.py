"""Chapter 9 solutions: Flash attention: the forward pass.

Written by `make exercises` from the library source; do not edit.
Grade them with: python -m attention_scratch.grade --solutions --chapter 9
"""


import numpy as np


# Exercise 9.1 (3 points): one tile of the flash attention forward pass
def forward_tile(q_blk, k_blk, v_blk, m, l, acc, scale, keep=None):
    """Fold one key/value tile into a query block's running state.

    The state of each query row is its running maximum ``m``, running sum ``l``
    of ``exp(score - m)`` and the *unnormalised* output ``acc = Σ exp(score - m)·v``.
    Compute the scores ``q_blk k_blkᵀ · scale``, hide those where ``keep`` is
    False with ``-inf``, update the maximum, rescale the old ``l`` and ``acc`` by
    ``exp(m_old - m_new)`` and add this tile's contribution. Do not divide by
    ``l``: that happens once, after the last tile. A row that has seen only
    masked scores keeps ``m = -inf``, ``l = 0``, ``acc = 0`` and must not give NaN.
    Masked means absent: NaN in a key or value a row may not see never reaches
    that row (mind ``0 · NaN = NaN`` in ``P v``), while NaN in what a row may see
    reaches it (never hide it with ``nan_to_num``).
    Return new arrays: the caller's ``m``, ``l`` and ``acc`` stay as they were.

    Shapes: ``q_blk`` (..., bq, E), ``k_blk`` (..., bk, E), ``v_blk`` (..., bk, Ev),
    ``m`` and ``l`` (..., bq), ``acc`` (..., bq, Ev), ``keep`` None or broadcastable
    to (..., bq, bk); the leading axes broadcast. Returns ``(m, l, acc)``.
    Dtype: the arrays share one dtype, ``scale`` is a Python float, and the
    results keep that dtype (float32 in, float32 out).
    """
    scores = q_blk @ np.swapaxes(k_blk, -1, -2)  # (..., bq, bk)
    scores *= scale  # in place: the tile is ours, no second (bq, bk) array
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)  # (..., bq, bk)
    m_new = np.maximum(m, scores.max(axis=-1))  # (..., bq)
    shift = np.where(np.isneginf(m_new), 0.0, m_new)  # (..., bq): finite, avoids -inf + inf
    alpha = np.exp(m - shift)  # (..., bq): rescales the old state, 0 when m was -inf
    scores -= shift[..., None]  # (..., bq, bk), in place
    p = np.exp(scores, out=scores)  # (..., bq, bk): unnormalised weights, in place
    l_new = alpha * l + p.sum(axis=-1)  # (..., bq)
    pv = p @ v_blk  # (..., bq, Ev)
    if keep is not None and np.isnan(v_blk).any():  # a masked p = 0 times a NaN value is NaN:
        bad = np.isnan(v_blk).astype(pv.dtype)  # (..., bk, Ev)
        seen = keep.astype(pv.dtype) @ bad  # (..., bq, Ev): how many NaN values each row may see
        pv = np.where(seen > 0, np.nan, p @ np.where(np.isnan(v_blk), 0.0, v_blk))  # (..., bq, Ev)
    acc_new = alpha[..., None] * acc + pv  # (..., bq, Ev)
    return m_new, l_new, acc_new


# Exercise 9.2 (2 points): normalise once, store the log-sum-exp
def finalize_rows(m, l, acc):
    """Turn a query block's final state into its output and natural log-sum-exp.

    ``out = acc / l`` and ``lse = m + log(l)``. A row that attended to nothing
    (``l == 0``) gets output 0 and log-sum-exp ``+inf``, with no NaN. A row whose
    state is NaN (it saw NaN) gives NaN output and log-sum-exp, not ``+inf``.

    Shapes: ``m``, ``l`` (..., bq); ``acc`` (..., bq, Ev); returns
    ``out`` (..., bq, Ev) and ``lse`` (..., bq). Dtype: the inputs share one
    dtype and the results keep it (float32 in, float32 out).
    """
    has_key = l != 0  # (..., bq): True on NaN rows too, whose NaN must show
    safe_l = np.where(has_key, l, 1.0)  # (..., bq)
    out = acc / safe_l[..., None]  # (..., bq, Ev): acc is 0 on empty rows
    lse = np.where(has_key, m + np.log(safe_l), np.inf)  # (..., bq)
    return out, lse


# Exercise 9.3 (2 points): classifying a tile against the mask band
def tile_kind(i0, i1, j0, j1, band):
    """Is the tile of rows ``i0..i1-1`` and keys ``j0..j1-1`` skipped, full or partial?

    The mask keeps ``(i, j)`` when ``lo <= j - i <= hi`` with ``band = (lo, hi)``
    (``None`` = unlimited). Inside the tile, ``j - i`` takes every integer from
    ``j0 - (i1 - 1)`` (bottom-left corner) to ``(j1 - 1) - i0`` (top-right corner).
    Return ``"skip"`` when no entry is kept, ``"full"`` when every entry is
    kept, and ``"partial"`` otherwise. Assume ``i0 < i1``, ``j0 < j1`` and, when
    both bounds are given, ``lo <= hi``. The tile need not be aligned to any
    block size.
    """
    lo, hi = band
    d_min, d_max = j0 - (i1 - 1), (j1 - 1) - i0
    if (hi is not None and d_min > hi) or (lo is not None and d_max < lo):
        return "skip"
    if (hi is None or d_max <= hi) and (lo is None or d_min >= lo):
        return "full"
    return "partial"
