"""Answers to the chapter 8 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    # 8.1 ---------------------------------------------------------------------------------------
    ('8.1', 'online update that does not rescale the old sum', 'exp(m_old - m_new)', '''
def online_update(m, s, x):
    m_new = np.maximum(m, x.max(axis=-1, initial=-np.inf))
    shift = np.where(np.isneginf(m_new), 0.0, m_new)
    return m_new, s + np.exp(x - shift[..., None]).sum(axis=-1)
'''),
    ('8.1', 'online update that subtracts -inf from -inf', 'shift by 0 instead of m', '''
def online_update(m, s, x):
    m_new = np.maximum(m, x.max(axis=-1, initial=-np.inf))
    return m_new, s * np.exp(m - m_new) + np.exp(x - m_new[..., None]).sum(axis=-1)
'''),
    ('8.1', 'one maximum for the whole batch instead of one per row',
     "m' = max(m, max(x)) of each row", '''
def online_update(m, s, x):
    m_new = np.full_like(m, max(m.max(), x.max()))
    return m_new, s * np.exp(m - m_new) + np.exp(x - m_new[..., None]).sum(axis=-1)
'''),
    ('8.1', 'the running pair updated in place', 'changed its argument', '''
def online_update(m, s, x):
    m_new = np.maximum(m, x.max(axis=-1, initial=-np.inf))
    shift = np.where(np.isneginf(m_new), 0.0, m_new)
    s *= np.exp(m - shift)
    s += np.exp(x - shift[..., None]).sum(axis=-1)
    m[...] = m_new
    return m, s
'''),
    ('8.1', 'the new maximum subtracted without [..., None]', 'could not be broadcast', '''
def online_update(m, s, x):
    m_new = np.maximum(m, x.max(axis=-1, initial=-np.inf))
    shift = np.where(np.isneginf(m_new), 0.0, m_new)
    return m_new, s * np.exp(m - shift) + np.exp(x - shift).sum(axis=-1)
'''),
    ('8.1', 'a float64 shift for float32 input (the dtype said first, no hint about the formula)',
     '(the results must stay float32): dtype float64, expected float32', '''
def online_update(m, s, x):
    m_new = np.maximum(m, x.max(axis=-1, initial=-np.inf))
    shift = np.where(np.isneginf(m_new), np.zeros(m_new.shape), m_new)
    return m_new, s * np.exp(m - shift) + np.exp(x - shift[..., None]).sum(axis=-1)
'''),
    # 8.2 ---------------------------------------------------------------------------------------
    ('8.1', 'skips NaN scores with nanmax and nansum', "its running sum s' must be NaN", '''
def online_update(m, s, x):
    xm = np.nanmax(np.where(np.isnan(x), -np.inf, x), axis=-1, initial=-np.inf)
    m_new = np.maximum(m, xm)
    shift = np.where(np.isneginf(m_new), 0.0, m_new)
    return m_new, s * np.exp(m - shift) + np.nansum(np.exp(x - shift[..., None]), axis=-1)
'''),
    ('8.1', 'the block maximum without initial=, which fails on an empty block', 'initial=-np.inf',
     '''
def online_update(m, s, x):
    m_new = np.maximum(m, x.max(axis=-1))
    shift = np.where(np.isneginf(m_new), 0.0, m_new)
    return m_new, s * np.exp(m - shift) + np.exp(x - shift[..., None]).sum(axis=-1)
'''),
    ('8.2', 'merge that rescales only one part', 'common maximum', '''
def merge_stats(m_a, s_a, m_b, s_b):
    m = np.maximum(m_a, m_b)
    shift = np.where(np.isneginf(m), 0.0, m)
    return m, s_a * np.exp(m_a - shift) + s_b
'''),
    ('8.2', 'merge that adds the sums as they are', 'both sums rescaled to the common maximum', '''
def merge_stats(m_a, s_a, m_b, s_b):
    return np.maximum(m_a, m_b), s_a + s_b
'''),
    ('8.2', 'merge that subtracts -inf from -inf when both parts are empty',
     'shift by 0 when the common maximum', '''
def merge_stats(m_a, s_a, m_b, s_b):
    m = np.maximum(m_a, m_b)
    return m, s_a * np.exp(m_a - m) + s_b * np.exp(m_b - m)
'''),
    ('8.2', 'the first pair rescaled in place', 'changed its argument `s_a`', '''
def merge_stats(m_a, s_a, m_b, s_b):
    m = np.maximum(m_a, m_b)
    shift = np.where(np.isneginf(m), 0.0, m)
    s_a *= np.exp(m_a - shift)
    s_a += s_b * np.exp(m_b - shift)
    return m, s_a
'''),
    ('8.2', 'a float64 shift for float32 pairs', 'dtype float64, expected float32', '''
def merge_stats(m_a, s_a, m_b, s_b):
    m = np.maximum(m_a, m_b)
    shift = np.where(np.isneginf(m), np.zeros(np.shape(m)), m)
    return m, s_a * np.exp(m_a - shift) + s_b * np.exp(m_b - shift)
'''),
    # 8.3 ---------------------------------------------------------------------------------------
    ('8.2', 'a result allocated like s_a, which fails when the first pair is the smaller one',
     'the first pair may be the smaller one', '''
def merge_stats(m_a, s_a, m_b, s_b):
    m = np.maximum(m_a, m_b)
    shift = np.where(np.isneginf(m), 0.0, m)
    s = np.empty_like(s_a)
    s[...] = s_a * np.exp(m_a - shift) + s_b * np.exp(m_b - shift)
    return m, s
'''),
    ('8.2', 'branches on m_a >= m_b and hides the NaN with nan_to_num',
     'their merged s must be NaN', '''
def merge_stats(m_a, s_a, m_b, s_b):
    m = np.maximum(m_a, m_b)
    with np.errstate(invalid="ignore"):
        s = np.where(m_a >= m_b, s_a + s_b * np.exp(m_b - m_a), s_b + s_a * np.exp(m_a - m_b))
    return m, np.nan_to_num(s)
'''),
    ('8.3', 'attention merge that treats lse = +inf as a real mass', 'treat lse=+inf as zero mass',
     '''
def merge_attention(out_a, lse_a, out_b, lse_b):
    lse = np.logaddexp(lse_a, lse_b)
    out = np.exp(lse_a - lse)[..., None] * out_a + np.exp(lse_b - lse)[..., None] * out_b
    return out, lse
'''),
    ('8.3', 'the two outputs averaged, ignoring their masses',
     'each row weighted by its own share', '''
def merge_attention(out_a, lse_a, out_b, lse_b):
    la = np.where(np.isposinf(lse_a), -np.inf, lse_a)
    lb = np.where(np.isposinf(lse_b), -np.inf, lse_b)
    lse = np.logaddexp(la, lb)
    return (out_a + out_b) / 2, np.where(np.isneginf(lse), np.inf, lse)
'''),
    ('8.3', 'weights relative to the larger lse, never divided by the total', 'merged output', '''
def merge_attention(out_a, lse_a, out_b, lse_b):
    la = np.where(np.isposinf(lse_a), -np.inf, lse_a)
    lb = np.where(np.isposinf(lse_b), -np.inf, lse_b)
    m = np.maximum(la, lb)
    shift = np.where(np.isneginf(m), 0.0, m)
    w_a, w_b = np.exp(la - shift), np.exp(lb - shift)
    total = w_a + w_b
    lse = np.where(total > 0, shift + np.log(np.where(total > 0, total, 1.0)), np.inf)
    return w_a[..., None] * out_a + w_b[..., None] * out_b, lse
'''),
    ('8.3', 'weights multiplied without [..., None]', 'lse[..., None] against out', '''
def merge_attention(out_a, lse_a, out_b, lse_b):
    la = np.where(np.isposinf(lse_a), -np.inf, lse_a)
    lb = np.where(np.isposinf(lse_b), -np.inf, lse_b)
    m = np.maximum(la, lb)
    shift = np.where(np.isneginf(m), 0.0, m)
    w_a, w_b = np.exp(la - shift), np.exp(lb - shift)
    total = w_a + w_b
    safe = np.where(total > 0, total, 1.0)
    out = (w_a * out_a + w_b * out_b) / safe
    return out, np.where(total > 0, shift + np.log(safe), np.inf)
'''),
    ('8.3', 'masses exponentiated as they are (overflow near lse = 1000)',
     'subtract the larger lse first', '''
def merge_attention(out_a, lse_a, out_b, lse_b):
    w_a = np.where(np.isposinf(lse_a), 0.0, np.exp(np.where(np.isposinf(lse_a), 0.0, lse_a)))
    w_b = np.where(np.isposinf(lse_b), 0.0, np.exp(np.where(np.isposinf(lse_b), 0.0, lse_b)))
    total = w_a + w_b
    safe = np.where(total > 0, total, 1.0)
    out = (w_a[..., None] * out_a + w_b[..., None] * out_b) / safe[..., None]
    return out, np.where(total > 0, np.log(safe), np.inf)
'''),
    ('8.3', 'no guard for a row empty in both parts (0/0)', 'computed inf - inf or 0/0', '''
def merge_attention(out_a, lse_a, out_b, lse_b):
    la = np.where(np.isposinf(lse_a), -np.inf, lse_a)
    lb = np.where(np.isposinf(lse_b), -np.inf, lse_b)
    m = np.maximum(la, lb)
    shift = np.where(np.isneginf(m), 0.0, m)
    w_a, w_b = np.exp(la - shift), np.exp(lb - shift)
    total = w_a + w_b
    out = (w_a[..., None] * out_a + w_b[..., None] * out_b) / total[..., None]
    return out, np.where(total > 0, shift + np.log(total), np.inf)
'''),
    ('8.3', 'the larger lse returned as the merged lse', 'merged log-sum-exp', '''
def merge_attention(out_a, lse_a, out_b, lse_b):
    la = np.where(np.isposinf(lse_a), -np.inf, lse_a)
    lb = np.where(np.isposinf(lse_b), -np.inf, lse_b)
    m = np.maximum(la, lb)
    shift = np.where(np.isneginf(m), 0.0, m)
    w_a, w_b = np.exp(la - shift), np.exp(lb - shift)
    total = w_a + w_b
    safe = np.where(total > 0, total, 1.0)
    out = (w_a[..., None] * out_a + w_b[..., None] * out_b) / safe[..., None]
    return out, np.where(total > 0, m, np.inf)
'''),
    ('8.3', 'the first part rescaled in place', 'changed its argument `out_a`', '''
def merge_attention(out_a, lse_a, out_b, lse_b):
    la = np.where(np.isposinf(lse_a), -np.inf, lse_a)
    lb = np.where(np.isposinf(lse_b), -np.inf, lse_b)
    m = np.maximum(la, lb)
    shift = np.where(np.isneginf(m), 0.0, m)
    w_a, w_b = np.exp(la - shift), np.exp(lb - shift)
    total = w_a + w_b
    safe = np.where(total > 0, total, 1.0)
    out_a *= (w_a / safe)[..., None]
    out_a += (w_b / safe)[..., None] * out_b
    return out_a, np.where(total > 0, shift + np.log(safe), np.inf)
'''),
    ('8.3', 'a float64 lse for float32 parts', 'dtype float64, expected float32', '''
def merge_attention(out_a, lse_a, out_b, lse_b):
    la = np.where(np.isposinf(lse_a), -np.inf, lse_a)
    lb = np.where(np.isposinf(lse_b), -np.inf, lse_b)
    m = np.maximum(la, lb)
    shift = np.where(np.isneginf(m), 0.0, m)
    w_a, w_b = np.exp(la - shift), np.exp(lb - shift)
    total = w_a + w_b
    safe = np.where(total > 0, total, 1.0)
    out = (w_a[..., None] * out_a + w_b[..., None] * out_b) / safe[..., None]
    return out, np.where(total > 0, shift + np.log(safe), np.full(total.shape, np.inf))
'''),
    ('8.3', 'hides a NaN output of a part with nan_to_num',
     'the NaN must reach the merged out[0, 0]', '''
def merge_attention(out_a, lse_a, out_b, lse_b):
    la = np.where(np.isposinf(lse_a), -np.inf, lse_a)
    lb = np.where(np.isposinf(lse_b), -np.inf, lse_b)
    m = np.maximum(la, lb)
    shift = np.where(np.isneginf(m), 0.0, m)
    wa, wb = np.exp(la - shift), np.exp(lb - shift)
    tot = wa + wb
    safe = np.where(tot == 0, 1.0, tot)
    out = (wa[..., None] * out_a + wb[..., None] * out_b) / safe[..., None]
    return np.nan_to_num(out), np.where(tot == 0, np.inf, shift + np.log(safe))
'''),
    ('8.3', 'guards the empty row with total > 0, so a NaN lse becomes +inf', 'test `total == 0`',
     '''
def merge_attention(out_a, lse_a, out_b, lse_b):
    la = np.where(np.isposinf(lse_a), -np.inf, lse_a)
    lb = np.where(np.isposinf(lse_b), -np.inf, lse_b)
    m = np.maximum(la, lb)
    shift = np.where(np.isneginf(m), 0.0, m)
    w_a, w_b = np.exp(la - shift), np.exp(lb - shift)
    total = w_a + w_b
    safe = np.where(total > 0, total, 1.0)
    out = (w_a[..., None] * out_a + w_b[..., None] * out_b) / safe[..., None]
    return out, np.where(total > 0, shift + np.log(safe), np.inf)
'''),
]

VALID = [
    # 8.1 ---------------------------------------------------------------------------------------
    ('8.1', 'one score at a time, the textbook loop over the block', '''
def online_update(m, s, x):
    for t in range(x.shape[-1]):
        score = x[..., t]  # (...)
        m_new = np.maximum(m, score)
        shift = np.where(m_new == -np.inf, 0, m_new)  # (...)
        s = s * np.exp(m - shift) + np.exp(score - shift)
        m = m_new
    return m, s
'''),
    ('8.1', 'exp with where= and keepdims', '''
def online_update(m, s, x):
    m_new = np.maximum(m, np.max(x, axis=-1, initial=-np.inf))  # (...)
    seen = np.isfinite(m_new)  # (...): False while every score seen is -inf
    ref = np.where(seen, m_new, 0)[..., None]  # (..., 1)
    old_scale = np.exp(m - ref[..., 0], where=seen, out=np.zeros_like(s))  # (...)
    return m_new, s * old_scale + np.exp(x - ref).sum(axis=-1)
'''),
    # 8.2 ---------------------------------------------------------------------------------------
    ('8.1', 'the shift chosen by np.where, whose discarded branch warns (-inf - -inf)', '''
def online_update(m, s, x):
    m_new = np.maximum(m, x.max(axis=-1, initial=-np.inf))
    alpha = np.where(np.isneginf(m_new), 1.0, np.exp(m - m_new))
    p = np.where(np.isneginf(m_new)[..., None], 0.0, np.exp(x - m_new[..., None]))
    return m_new, (s * alpha + p.sum(-1)).astype(s.dtype)
'''),
    ('8.2', 'log space with np.logaddexp, the warnings of log(0) left as they are', '''
def merge_stats(m_a, s_a, m_b, s_b):
    m = np.maximum(m_a, m_b)
    total = np.logaddexp(m_a + np.log(s_a), m_b + np.log(s_b))
    return m, np.where(np.isneginf(m), 0.0, np.exp(total - np.where(np.isneginf(m), 0.0, m)))
'''),
    ('8.2', 'the larger pair kept, the smaller one rescaled', '''
def merge_stats(m_a, s_a, m_b, s_b):
    a_larger = m_a >= m_b
    m = np.where(a_larger, m_a, m_b)  # (...)
    m_small = np.where(a_larger, m_b, m_a)
    s_large, s_small = np.where(a_larger, s_a, s_b), np.where(a_larger, s_b, s_a)
    ratio = np.exp(m_small - np.where(np.isneginf(m), 0, m))  # (...): at most 1
    return m, s_large + s_small * ratio
'''),
    ('8.2', 'log space with np.logaddexp, warnings of log(0) silenced on purpose', '''
def merge_stats(m_a, s_a, m_b, s_b):
    m = np.maximum(m_a, m_b)
    with np.errstate(divide="ignore"):
        log_total = np.logaddexp(m_a + np.log(s_a),
                                 m_b + np.log(s_b))  # (...): -inf when both are empty
    ref = np.where(np.isneginf(m), 0, m)
    return m, np.where(np.isneginf(m), 0, np.exp(log_total - ref))
'''),
    # 8.3 ---------------------------------------------------------------------------------------
    ('8.3', 'np.logaddexp on log-masses, +inf turned into -inf', '''
def merge_attention(out_a, lse_a, out_b, lse_b):
    la = np.where(lse_a == np.inf, -np.inf, lse_a)  # (...): log of the mass, -inf when empty
    lb = np.where(lse_b == np.inf, -np.inf, lse_b)
    lse = np.logaddexp(la, lb)  # (...): -inf where both parts are empty
    empty = np.isneginf(lse)
    ref = np.where(empty, 0, lse)
    w_a, w_b = np.exp(la - ref), np.exp(lb - ref)  # (...): the shares, 0 for an empty part
    out = w_a[..., None] * out_a + w_b[..., None] * out_b  # (..., Ev)
    return out, np.where(empty, np.inf, lse)
'''),
    ('8.3', 'a loop over rows with Python floats', '''
import math


def merge_attention(out_a, lse_a, out_b, lse_b):
    out = np.zeros_like(out_a)
    lse = np.full_like(lse_a, np.inf)
    for idx in np.ndindex(lse_a.shape):
        parts = [(float(l), o) for l, o in ((lse_a[idx], out_a[idx]), (lse_b[idx], out_b[idx]))
                 if l != np.inf]
        if not parts:
            continue
        top = max(l for l, _ in parts)
        masses = [math.exp(l - top) for l, _ in parts]
        total = sum(masses)
        out[idx] = sum(w * o for w, (_, o) in zip(masses, parts)) / total
        lse[idx] = top + math.log(total)
    return out, lse
'''),
]
