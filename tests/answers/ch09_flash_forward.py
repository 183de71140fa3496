"""Answers to the chapter 9 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    ('9.1', 'forward tile that normalises inside the loop', 'do not divide by l', '''
def forward_tile(q_blk, k_blk, v_blk, m, l, acc, scale, keep=None):
    """Fold one key/value tile into a query block's running state.

    The state of each query row is its running maximum ``m``, running sum ``l``
    of ``exp(score - m)`` and the *unnormalised* output ``acc = Σ exp(score - m)·v``.
    Compute the scores ``q_blk k_blkᵀ · scale``, hide those where ``keep`` is
    False with ``-inf``, update the maximum, rescale the old ``l`` and ``acc`` by
    ``exp(m_old - m_new)`` and add this tile's contribution. Do not divide by
    ``l``: that happens once, after the last tile. A row that has seen only
    masked scores keeps ``m = -inf``, ``l = 0``, ``acc = 0`` and must not give NaN.

    Shapes: ``q_blk`` (..., bq, E), ``k_blk`` (..., bk, E), ``v_blk`` (..., bk, Ev),
    ``m`` and ``l`` (..., bq), ``acc`` (..., bq, Ev), ``keep`` None or broadcastable
    to (..., bq, bk); the leading axes broadcast. Returns ``(m, l, acc)``.
    """
    scores = (q_blk @ np.swapaxes(k_blk, -1, -2)) * scale  # (..., bq, bk)
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)  # (..., bq, bk)
    m_new = np.maximum(m, scores.max(axis=-1))  # (..., bq)
    shift = np.where(np.isneginf(m_new), 0.0, m_new)  # (..., bq): finite, avoids -inf + inf
    alpha = np.exp(m - shift)  # (..., bq): rescales the old state, 0 when m was -inf
    p = np.exp(scores - shift[..., None])  # (..., bq, bk): unnormalised weights
    l_new = alpha * l + p.sum(axis=-1)  # (..., bq)
    acc_new = (alpha[..., None] * acc + p @ v_blk) / np.where(l_new > 0, l_new, 1.0)[..., None]  # (..., bq, Ev)
    return m_new, l_new, acc_new
'''),
    ('9.1', 'forward tile that forgets to rescale the accumulator', 'exp(m_old - m_new)', '''
def forward_tile(q_blk, k_blk, v_blk, m, l, acc, scale, keep=None):
    """Fold one key/value tile into a query block's running state.

    The state of each query row is its running maximum ``m``, running sum ``l``
    of ``exp(score - m)`` and the *unnormalised* output ``acc = Σ exp(score - m)·v``.
    Compute the scores ``q_blk k_blkᵀ · scale``, hide those where ``keep`` is
    False with ``-inf``, update the maximum, rescale the old ``l`` and ``acc`` by
    ``exp(m_old - m_new)`` and add this tile's contribution. Do not divide by
    ``l``: that happens once, after the last tile. A row that has seen only
    masked scores keeps ``m = -inf``, ``l = 0``, ``acc = 0`` and must not give NaN.

    Shapes: ``q_blk`` (..., bq, E), ``k_blk`` (..., bk, E), ``v_blk`` (..., bk, Ev),
    ``m`` and ``l`` (..., bq), ``acc`` (..., bq, Ev), ``keep`` None or broadcastable
    to (..., bq, bk); the leading axes broadcast. Returns ``(m, l, acc)``.
    """
    scores = (q_blk @ np.swapaxes(k_blk, -1, -2)) * scale  # (..., bq, bk)
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)  # (..., bq, bk)
    m_new = np.maximum(m, scores.max(axis=-1))  # (..., bq)
    shift = np.where(np.isneginf(m_new), 0.0, m_new)  # (..., bq): finite, avoids -inf + inf
    alpha = np.exp(m - shift)  # (..., bq): rescales the old state, 0 when m was -inf
    p = np.exp(scores - shift[..., None])  # (..., bq, bk): unnormalised weights
    l_new = alpha * l + p.sum(axis=-1)  # (..., bq)
    acc_new = acc + p @ v_blk  # (..., bq, Ev)
    return m_new, l_new, acc_new
'''),
    ('9.2', 'finalize without a guard for empty rows', 'an empty row (l = 0)', '''
def finalize_rows(m, l, acc):
    return acc / l[..., None], m + np.log(l)
'''),
    ('9.2', 'finalize that forgets the maximum in the lse', 'lse = m + log(l)', '''
def finalize_rows(m, l, acc):
    safe_l = np.where(l > 0, l, 1.0)
    return acc / safe_l[..., None], np.where(l > 0, np.log(safe_l), np.inf)
'''),
    ('9.3', 'tile classification with an off-by-one corner', "expected 'full'", '''
def tile_kind(i0, i1, j0, j1, band):
    lo, hi = band
    d_min, d_max = j0 - i1, j1 - i0
    if (hi is not None and d_min > hi) or (lo is not None and d_max < lo):
        return "skip"
    if (hi is None or d_max <= hi) and (lo is None or d_min >= lo):
        return "full"
    return "partial"
'''),
]

VALID = [
]
