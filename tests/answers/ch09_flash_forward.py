"""Answers to the chapter 9 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""


def _tile(scores_line="scores = (q_blk @ np.swapaxes(k_blk, -1, -2)) * scale  # (..., bq, bk)",
          mask_line="scores = np.where(keep, scores, -np.inf)  # (..., bq, bk)",
          shift_line="shift = np.where(np.isneginf(m_new), 0.0, m_new)  # (..., bq)",
          alpha_line="alpha = np.exp(m - shift)  # (..., bq)",
          update_lines=("l_new = alpha * l + p.sum(axis=-1)  # (..., bq)",
                        "acc_new = alpha[..., None] * acc + p @ v_blk  # (..., bq, Ev)",
                        "return m_new, l_new, acc_new")):
    """forward_tile as the reference writes it,
    with one or more of its lines replaced by a mistake."""
    lines = ["def forward_tile(q_blk, k_blk, v_blk, m, l, acc, scale, keep=None):",
             "    " + scores_line,
             "    if keep is not None:",
             "        " + mask_line,
             "    m_new = np.maximum(m, scores.max(axis=-1))  # (..., bq)",
             "    " + shift_line,
             "    " + alpha_line,
             "    p = np.exp(scores - shift[..., None])  # (..., bq, bk)"]
    lines += ["    " + line for line in update_lines]
    return "\n" + "\n".join(lines) + "\n"


WRONG = [
    # 9.1 ---------------------------------------------------------------------------------------
    ('9.1', 'forward tile that normalises inside the loop', 'not divided by l', _tile(update_lines=(
        "l_new = alpha * l + p.sum(axis=-1)  # (..., bq)",
        "acc_new = alpha[..., None] * acc + p @ v_blk  # (..., bq, Ev)",
        "acc_new = acc_new / np.where(l_new > 0, l_new, 1.0)[..., None]",
        "return m_new, l_new, acc_new"))),
    ('9.1', 'forward tile that forgets to rescale the accumulator', 'exp(m_old - m_new)',
     _tile(update_lines=(
        "l_new = alpha * l + p.sum(axis=-1)  # (..., bq)",
        "acc_new = acc + p @ v_blk  # (..., bq, Ev)",
        "return m_new, l_new, acc_new"))),
    ('9.1', 'scores without the scale', 'S = q kᵀ·scale', _tile(
        scores_line="scores = q_blk @ np.swapaxes(k_blk, -1, -2)  # (..., bq, bk)")),
    ('9.1', 'the rescaling factor upside down, exp(m_new - m_old)', "l' = exp(m - m')·l", _tile(
        alpha_line="alpha = np.exp(np.where(np.isneginf(m), 0.0, shift - m))  # (..., bq)")),
    ('9.1', 'masked scores set to -1e9 instead of -inf', 'keeps m = -inf, l = 0, acc = 0', _tile(
        mask_line="scores = np.where(keep, scores, -1e9)  # (..., bq, bk)")),
    ('9.1', 'masked scores multiplied by keep (set to 0)', 'the max is over the kept scores only',
     _tile(
        mask_line="scores = scores * keep  # (..., bq, bk)")),
    ('9.1', 'mask applied to P, but the maximum taken over every score',
     'the max is over the kept scores only', """
def forward_tile(q_blk, k_blk, v_blk, m, l, acc, scale, keep=None):
    scores = (q_blk @ np.swapaxes(k_blk, -1, -2)) * scale  # (..., bq, bk)
    m_new = np.maximum(m, scores.max(axis=-1))  # (..., bq)
    alpha = np.exp(m - m_new)  # (..., bq)
    p = np.exp(scores - m_new[..., None])  # (..., bq, bk)
    if keep is not None:
        p = p * keep
    return m_new, alpha * l + p.sum(axis=-1), alpha[..., None] * acc + p @ v_blk
"""),
    ('9.1', 'no shift for rows that have seen only masked scores', 'shift by 0 where', _tile(
        shift_line="shift = m_new  # (..., bq)")),
    ('9.1', 'the running state updated in place', 'changed its argument', _tile(update_lines=(
        "l *= alpha",
        "l += p.sum(axis=-1)",
        "acc *= alpha[..., None]",
        "acc += p @ v_blk",
        "return m_new, l, acc"))),
    ('9.1', 'k transposed with .T (right for one head only)', 'could not be broadcast', _tile(
        scores_line="scores = (q_blk @ k_blk.T) * scale  # (..., bq, bk)")),
    ('9.1', 'a float64 array of -inf for the mask', 'dtype float64, expected float32', _tile(
        mask_line="scores = np.where(keep, scores, np.full(scores.shape, -np.inf))")),
    ('9.1', 'NaN from -inf - (-inf) and NaN scores alike zeroed with nan_to_num',
     'NaN in what a row may see must reach it', '''
def forward_tile(q_blk, k_blk, v_blk, m, l, acc, scale, keep=None):
    scores = (q_blk @ np.swapaxes(k_blk, -1, -2)) * scale
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)
    m_new = np.maximum(m, scores.max(axis=-1))
    with np.errstate(invalid="ignore"):
        alpha = np.nan_to_num(np.exp(m - m_new))
        p = np.nan_to_num(np.exp(scores - m_new[..., None]))
    return m_new, alpha * l + p.sum(-1), alpha[..., None] * acc + p @ v_blk
'''),
    ('9.1', 'P @ v with masked NaN values (0 · NaN = NaN reaches rows that may not see them)',
     'masked means absent', _tile()),
    # 9.2 ---------------------------------------------------------------------------------------
    ('9.2', 'finalize without a guard for empty rows', 'an empty row (l = 0)', """
def finalize_rows(m, l, acc):
    return acc / l[..., None], m + np.log(l)
"""),
    ('9.2', 'finalize that forgets the maximum in the lse', 'lse = m + log(l)', """
def finalize_rows(m, l, acc):
    safe_l = np.where(l > 0, l, 1.0)
    return acc / safe_l[..., None], np.where(l > 0, np.log(safe_l), np.inf)
"""),
    ('9.2', 'log base 2', 'natural log', """
def finalize_rows(m, l, acc):
    safe_l = np.where(l > 0, l, 1.0)
    return acc / safe_l[..., None], np.where(l > 0, m + np.log2(safe_l), np.inf)
"""),
    ('9.2', 'lse = -inf (log 0) on empty rows', 'lse +inf', """
def finalize_rows(m, l, acc):
    safe_l = np.where(l > 0, l, 1.0)
    return acc / safe_l[..., None], np.where(l > 0, m + np.log(safe_l), -np.inf)
"""),
    ('9.2', 'acc divided by l without [..., None]', 'l[..., None]', """
def finalize_rows(m, l, acc):
    safe_l = np.where(l > 0, l, 1.0)
    return acc / safe_l, np.where(l > 0, m + np.log(safe_l), np.inf)
"""),
    ('9.2', 'acc divided in place', 'changed its argument `acc`', """
def finalize_rows(m, l, acc):
    safe_l = np.where(l > 0, l, 1.0)
    acc /= safe_l[..., None]
    return acc, np.where(l > 0, m + np.log(safe_l), np.inf)
"""),
    ('9.2', 'empty rows told by l > 0, which a NaN row fails too (its lse becomes +inf)',
     'tell the empty row by l == 0', '''
def finalize_rows(m, l, acc):
    has_key = l > 0
    safe_l = np.where(has_key, l, 1.0)
    return acc / safe_l[..., None], np.where(has_key, m + np.log(safe_l), np.inf)
'''),
    ('9.2', 'a float64 lse for float32 input', 'dtype float64, expected float32', """
def finalize_rows(m, l, acc):
    safe_l = np.where(l > 0, l, 1.0)
    return acc / safe_l[..., None], np.where(l > 0, m + np.log(safe_l), np.full(l.shape, np.inf))
"""),
    # 9.3 ---------------------------------------------------------------------------------------
    ('9.3', 'tile classification with an off-by-one corner', "expected 'full'", """
def tile_kind(i0, i1, j0, j1, band):
    lo, hi = band
    d_min, d_max = j0 - i1, j1 - i0
    if (hi is not None and d_min > hi) or (lo is not None and d_max < lo):
        return "skip"
    if (hi is None or d_max <= hi) and (lo is None or d_min >= lo):
        return "full"
    return "partial"
"""),
    ('9.3', 'the smallest offset read at the top-left corner (j0 - i0)', 'expected', """
def tile_kind(i0, i1, j0, j1, band):
    lo, hi = band
    d_min, d_max = j0 - i0, (j1 - 1) - i0
    if (hi is not None and d_min > hi) or (lo is not None and d_max < lo):
        return "skip"
    if (hi is None or d_max <= hi) and (lo is None or d_min >= lo):
        return "full"
    return "partial"
"""),
    ('9.3', 'only the causal bound checked (lo ignored)', 'window=(3, 1)', """
def tile_kind(i0, i1, j0, j1, band):
    hi = band[1]
    d_min, d_max = j0 - (i1 - 1), (j1 - 1) - i0
    if hi is not None and d_min > hi:
        return "skip"
    if hi is None or d_max <= hi:
        return "full"
    return "partial"
"""),
    ('9.3', 'full when either bound holds', "expected 'partial'", """
def tile_kind(i0, i1, j0, j1, band):
    lo, hi = band
    d_min, d_max = j0 - (i1 - 1), (j1 - 1) - i0
    if (hi is not None and d_min > hi) or (lo is not None and d_max < lo):
        return "skip"
    if (hi is None or d_max <= hi) or (lo is None or d_min >= lo):
        return "full"
    return "partial"
"""),
    ('9.3', 'None compared as a number', 'NoneType', """
def tile_kind(i0, i1, j0, j1, band):
    lo, hi = band
    d_min, d_max = j0 - (i1 - 1), (j1 - 1) - i0
    if d_min > hi or d_max < lo:
        return "skip"
    if d_max <= hi and d_min >= lo:
        return "full"
    return "partial"
"""),
    ('9.3', 'another word for a partial tile', "expected 'partial'", """
def tile_kind(i0, i1, j0, j1, band):
    lo, hi = band
    d_min, d_max = j0 - (i1 - 1), (j1 - 1) - i0
    if (hi is not None and d_min > hi) or (lo is not None and d_max < lo):
        return "skip"
    if (hi is None or d_max <= hi) and (lo is None or d_min >= lo):
        return "full"
    return "masked"
"""),
]

VALID = [
    # 9.1 ---------------------------------------------------------------------------------------
    ('9.1', 'einsum for both products, masked products dropped, np.fmax', """
def forward_tile(q_blk, k_blk, v_blk, m, l, acc, scale, keep=None):
    scores = np.einsum("...qe,...ke->...qk", q_blk, k_blk) * scale  # (..., bq, bk)
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)
    m_new = np.fmax(m, scores.max(axis=-1))  # (..., bq)
    ref = np.where(m_new == -np.inf, 0, m_new)  # (..., bq)
    p = np.exp(scores - ref[..., None])  # (..., bq, bk)
    alpha = np.exp(m - ref)  # (..., bq)
    if keep is None:
        pv = np.einsum("...qk,...kv->...qv", p, v_blk)  # (..., bq, Ev)
    else:  # products with a masked key are dropped, so a NaN value there cannot reach the row
        terms = np.einsum("...qk,...kv->...qkv", p, v_blk)  # (..., bq, bk, Ev)
        pv = np.where(np.asarray(keep)[..., None], terms, 0.0).sum(axis=-2)  # (..., bq, Ev)
    return m_new, alpha * l + p.sum(axis=-1), alpha[..., None] * acc + pv
"""),
    ('9.1', 'one key at a time: the online softmax of chapter 8 over the tile', """
def forward_tile(q_blk, k_blk, v_blk, m, l, acc, scale, keep=None):
    scores = (q_blk @ np.swapaxes(k_blk, -1, -2)) * scale  # (..., bq, bk)
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)
    seen = np.ones(scores.shape, dtype=bool) if keep is None else np.broadcast_to(keep,
                                                                                  scores.shape)
    for j in range(scores.shape[-1]):
        s = scores[..., j]  # (..., bq)
        m_new = np.maximum(m, s)
        ref = np.where(np.isneginf(m_new), 0, m_new)
        alpha, p = np.exp(m - ref), np.exp(s - ref)  # (..., bq) each
        l = alpha * l + p
        term = np.where(seen[..., j, None], p[..., None] * v_blk[..., j:j + 1, :],
                        0.0)  # (..., bq, Ev)
        acc = alpha[..., None] * acc + term
        m = m_new
    return m, l, acc
"""),
    # 9.2 ---------------------------------------------------------------------------------------
    ('9.2', 'np.divide and np.log with where= and out=', """
def finalize_rows(m, l, acc):
    has_key = l != 0  # (..., bq): NaN rows too
    out = np.divide(acc, l[..., None], out=np.zeros_like(acc),
                    where=has_key[..., None])  # (..., bq, Ev)
    log_l = np.log(l, out=np.zeros_like(l), where=has_key)  # (..., bq)
    lse = np.where(has_key, m + log_l, np.inf)
    return out, lse
"""),
    ('9.2', 'a loop over the rows', """
import math


def finalize_rows(m, l, acc):
    out, lse = np.zeros_like(acc), np.full_like(l, np.inf)
    for idx in np.ndindex(l.shape):
        if l[idx] != 0:
            out[idx] = acc[idx] / l[idx]
            lse[idx] = m[idx] + math.log(l[idx])
    return out, lse
"""),
    ('9.2', 'np.where after the division: 0/0 and log(0) computed, then thrown away', '''
def finalize_rows(m, l, acc):
    empty = l == 0
    out = np.where(empty[..., None], 0.0, acc / l[..., None])
    return out, np.where(empty, np.inf, m + np.log(l))
'''),
    # 9.3 ---------------------------------------------------------------------------------------
    ('9.3', 'every offset of the tile compared with the band', """
def tile_kind(i0, i1, j0, j1, band):
    lo, hi = band
    offsets = np.arange(j0, j1)[None, :] - np.arange(i0, i1)[:, None]  # (bq, bk): j - i
    kept = np.ones(offsets.shape, dtype=bool)
    if lo is not None:
        kept &= offsets >= lo
    if hi is not None:
        kept &= offsets <= hi
    if not kept.any():
        return "skip"
    return "full" if kept.all() else "partial"
"""),
    ('9.3', 'None replaced by infinities, then the interval of offsets against the band', """
import math


def tile_kind(i0, i1, j0, j1, band):
    lo = -math.inf if band[0] is None else band[0]
    hi = math.inf if band[1] is None else band[1]
    first, last = j0 - i1 + 1, j1 - 1 - i0  # the offsets j - i in the tile
    if last < lo or first > hi:
        return "skip"
    if lo <= first and last <= hi:
        return "full"
    return "partial"
"""),
]
