"""Answers to the chapter 11 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    ('11.1', 'split-KV combine without subtracting the largest lse',
     'exp(900) overflowed: subtract the largest lse', '''
def combine_splits(outs, lses):
    weights = np.where(np.isposinf(lses), 0.0, np.exp(np.where(np.isposinf(lses), 0.0, lses)))
    total = weights.sum(axis=0)
    safe = np.where(total > 0, total, 1.0)
    out = (weights[..., None] * outs).sum(axis=0) / safe[..., None]
    return out, np.where(total > 0, np.log(safe), np.inf)
'''),
    ('11.1',
     'NaN when every split is empty (the max of a row empty everywhere is -inf, not shifted to 0)',
     'by 0 on a row empty in every chunk', '''
def combine_splits(outs, lses):
    logs = np.where(np.isposinf(lses), -np.inf, lses)
    top = logs.max(axis=0)
    weights = np.exp(logs - top)
    total = weights.sum(axis=0)
    out = (weights[..., None] * outs).sum(axis=0) / total[..., None]
    return out, top + np.log(total)
'''),
    ('11.1', 'the +inf of an empty chunk taken literally as a log-mass', 'must carry zero weight',
     '''
def combine_splits(outs, lses):
    top = lses.max(axis=0)
    weights = np.exp(lses - top)
    total = weights.sum(axis=0)
    out = (weights[..., None] * outs).sum(axis=0) / total[..., None]
    return out, top + np.log(total)
'''),
    ('11.1', "an empty chunk's +inf replaced by 0 (weight exp(0 - max) instead of 0)",
     'carry weight 0', '''
def combine_splits(outs, lses):
    logs = np.where(np.isposinf(lses), 0.0, lses)
    top = logs.max(axis=0)
    weights = np.exp(logs - top)
    total = weights.sum(axis=0)
    out = (weights[..., None] * outs).sum(axis=0) / total[..., None]
    lse = top + np.log(total)
    return out, np.where(np.isposinf(lses).all(axis=0), np.inf, lse)
'''),
    ('11.1', 'the shift taken from the first chunk instead of the largest lse',
     'shift each row by its largest finite lse', '''
def combine_splits(outs, lses):
    logs = np.where(np.isposinf(lses), -np.inf, lses)
    with np.errstate(invalid="ignore", over="ignore"):
        weights = np.exp(logs - logs[0])
    total = weights.sum(axis=0)
    out = (weights[..., None] * outs).sum(axis=0) / total[..., None]
    return out, logs[0] + np.log(total)
'''),
    ('11.1', 'plain mean of the chunk outputs, ignoring their masses', 'combined output of', '''
def combine_splits(outs, lses):
    logs = np.where(np.isposinf(lses), -np.inf, lses)
    lse = np.logaddexp.reduce(logs, axis=0)
    return outs.mean(axis=0), np.where(np.isneginf(lse), np.inf, lse)
'''),
    ('11.1', 'the returned lse forgets to add the shift back', 'combined log-sum-exp', '''
def combine_splits(outs, lses):
    logs = np.where(np.isposinf(lses), -np.inf, lses)
    top = logs.max(axis=0)
    shift = np.where(np.isneginf(top), 0.0, top)
    weights = np.exp(logs - shift)
    total = weights.sum(axis=0)
    safe = np.where(total > 0, total, 1.0)
    out = (weights[..., None] * outs).sum(axis=0) / safe[..., None]
    return out, np.where(total > 0, np.log(safe), np.inf)
'''),
    ('11.1', 'a float64 accumulator that turns float32 chunks into a float64 result',
     'must stay float32', '''
def combine_splits(outs, lses):
    logs = np.where(np.isposinf(lses), -np.inf, lses)
    top = logs.max(axis=0)
    shift = np.where(np.isneginf(top), 0.0, top)
    weights = np.exp(logs - shift)
    total = weights.sum(axis=0)
    safe = np.where(total > 0, total, 1.0)
    out = np.zeros(outs.shape[1:])
    for p in range(outs.shape[0]):
        out += weights[p][..., None] * outs[p]
    return out / safe[..., None], np.where(total > 0, shift + np.log(safe), np.inf)
'''),
    ('11.1', 'the shift taken from the first chunk (0 when that chunk is empty)',
     'subtract the largest lse over the chunks', '''
def combine_splits(outs, lses):
    logs = np.where(np.isposinf(lses), -np.inf, lses)
    shift = np.where(np.isneginf(logs[0]), 0.0, logs[0])
    w = np.exp(logs - shift)
    t = w.sum(0)
    safe = np.where(t > 0, t, 1.0)
    return (w[..., None] * outs).sum(0) / safe[..., None], np.where(t > 0, shift + np.log(safe),
                                                                    np.inf)
'''),
    ('11.1', 'NaN hidden with nan_to_num, a NaN lse turned into +inf', 'the NaN must reach', '''
def combine_splits(outs, lses):
    logs = np.where(np.isposinf(lses), -np.inf, lses)
    top = logs.max(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.exp(logs - top)
        t = w.sum(0)
        out = np.nan_to_num((w[..., None] * outs).sum(0) / t[..., None])
        lse = top + np.log(t)
    return out, np.where(np.isnan(lse) | np.isneginf(lse), np.inf, lse)
'''),
    ('11.1', 'the empty row told by total > 0, which a NaN total fails too', 'test `total == 0`',
     '''
def combine_splits(outs, lses):
    logs = np.where(np.isposinf(lses), -np.inf, lses)
    top = logs.max(axis=0)
    shift = np.where(np.isneginf(top), 0.0, top)
    weights = np.exp(logs - shift)
    total = weights.sum(axis=0)
    safe = np.where(total > 0, total, 1.0)
    out = (weights[..., None] * outs).sum(axis=0) / safe[..., None]
    return out, np.where(total > 0, shift + np.log(safe), np.inf)
'''),
]

VALID = [
    ('11.1', 'a loop of pairwise merges (merge_attention of chapter 8)', '''
from attention_scratch.online_softmax import merge_attention


def combine_splits(outs, lses):
    out, lse = outs[0], lses[0]
    for p in range(1, outs.shape[0]):
        out, lse = merge_attention(out, lse, outs[p], lses[p])
    return out, lse
'''),
    ('11.1', 'logaddexp.reduce for the lse, weights exp(lse_p - lse)', '''
def combine_splits(outs, lses):
    logs = np.where(np.isposinf(lses), -np.inf, lses)  # (R, ...)
    lse = np.logaddexp.reduce(logs, axis=0)  # (...): -inf where every chunk is empty
    empty = np.isneginf(lse)
    weights = np.exp(logs - np.where(empty, 0.0, lse))  # (R, ...)
    out = np.einsum("p...,p...e->...e", weights, outs)  # (..., Ev)
    return out, np.where(empty, np.inf, lse)
'''),
    ('11.1', 'a running maximum over the chunks, one chunk at a time', '''
def combine_splits(outs, lses):
    m = np.full(lses.shape[1:], -np.inf, dtype=lses.dtype)  # (...)
    total = np.zeros(lses.shape[1:], dtype=lses.dtype)  # (...)
    acc = np.zeros(outs.shape[1:], dtype=outs.dtype)  # (..., Ev)
    for p in range(lses.shape[0]):
        lp = np.where(np.isposinf(lses[p]), -np.inf, lses[p])
        m_new = np.maximum(m, lp)
        base = np.where(np.isneginf(m_new), 0.0, m_new)
        a, w = np.exp(m - base), np.exp(lp - base)
        total = a * total + w
        acc = a[..., None] * acc + w[..., None] * outs[p]
        m = m_new
    live = total != 0  # NaN rows too: their NaN must show
    out = acc / np.where(live, total, 1.0)[..., None]
    return out, np.where(live, m + np.log(np.where(live, total, 1.0)), np.inf)
'''),
    ('11.1', 'log(0) of a row empty in every chunk computed, then thrown away by np.where', '''
def combine_splits(outs, lses):
    logs = np.where(np.isposinf(lses), -np.inf, lses)
    top = logs.max(axis=0)
    shift = np.where(np.isneginf(top), 0.0, top)
    w = np.exp(logs - shift)
    t = w.sum(axis=0)
    out = (w[..., None] * outs).sum(axis=0) / np.where(t == 0, 1, t)[..., None]
    lse = shift + np.log(t)
    return out, np.where(t == 0, np.inf, lse)
'''),
]
