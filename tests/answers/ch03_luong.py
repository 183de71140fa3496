"""Answers to the chapter 3 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    ('3.1', 'W_a applied to the keys from the wrong side', 'query @ W_a', '''
def general_score(query, keys, W_a):
    return np.einsum("bsd,bd->bs", keys @ W_a, query)
'''),
    ('3.1', "every sentence's query against every sentence's keys", 'wrong shape', '''
def general_score(query, keys, W_a):
    return (query @ W_a) @ keys.transpose(0, 2, 1)
'''),
    ('3.1', 'the dot score, W_a left out', 'entries differ', '''
def general_score(query, keys, W_a):
    return np.einsum("bd,bsd->bs", query, keys)
'''),
    ('3.1', 'loops that fill a float64 array', 'dtype float64, expected float32', '''
def general_score(query, keys, W_a):
    B, S, _ = keys.shape
    out = np.zeros((B, S))
    for b in range(B):
        for s in range(S):
            out[b, s] = query[b] @ W_a @ keys[b, s]
    return out
'''),
    ('3.1', 'a batched matrix-vector product squeezed with squeeze()', 'never squeeze()', '''
def general_score(query, keys, W_a):
    return (keys @ (query @ W_a)[:, :, None]).squeeze()
'''),
    ('3.2', 'concat score with the key first', 'query first', '''
def concat_score(query, keys, W_a, v_a):
    B, S, _ = keys.shape
    q = np.broadcast_to(query[:, None, :], (B, S, query.shape[-1]))
    return np.tanh(np.concatenate([keys, q], axis=-1) @ W_a) @ v_a
'''),
    ('3.2', 'the query repeated with np.tile, which interleaves the sentences',
     "another sentence's keys", '''
def concat_score(query, keys, W_a, v_a):
    B, S, _ = keys.shape
    q = np.tile(query, (S, 1)).reshape(B, S, -1)
    return np.tanh(np.concatenate([q, keys], axis=-1) @ W_a) @ v_a
'''),
    ('3.2', 'the tanh after the product with v_a', 'the tanh between', '''
def concat_score(query, keys, W_a, v_a):
    B, S, _ = keys.shape
    q = np.broadcast_to(query[:, None, :], (B, S, query.shape[-1]))
    return np.tanh(np.concatenate([q, keys], axis=-1) @ W_a @ v_a)
'''),
    ('3.2', 'loops that fill a float64 array', 'dtype float64, expected float32', '''
def concat_score(query, keys, W_a, v_a):
    B, S, _ = keys.shape
    out = np.zeros((B, S))
    for b in range(B):
        for s in range(S):
            out[b, s] = v_a @ np.tanh(np.concatenate([query[b], keys[b, s]]) @ W_a)
    return out
'''),
    ('3.3', 'local window that forgets the padding', 's < length', '''
def local_window(p, lengths, S, D):
    s = np.arange(S)[None, :]
    offset = s - p[:, None]
    return np.abs(offset) <= D, np.exp(-offset ** 2 / (2 * (D / 2) ** 2))
'''),
    ('3.3', 'local window with sigma = D', 'σ = D/2', '''
def local_window(p, lengths, S, D):
    s = np.arange(S)[None, :]
    offset = s - p[:, None]
    keep = (np.abs(offset) <= D) & (s < lengths[:, None])
    return keep, np.exp(-offset ** 2 / (2 * D ** 2))
'''),
    ('3.3', 'sigma = D // 2, an integer division', 'σ = D/2', '''
def local_window(p, lengths, S, D):
    s = np.arange(S)[None, :]
    offset = s - p[:, None]
    keep = (np.abs(offset) <= D) & (s < lengths[:, None])
    return keep, np.exp(-offset ** 2 / (2 * (D // 2) ** 2))
'''),
    ('3.3', 'the window without its ends, |s - p| < D', '|s - p| <= D', '''
def local_window(p, lengths, S, D):
    s = np.arange(S)[None, :]
    offset = s - p[:, None]
    keep = (np.abs(offset) < D) & (s < lengths[:, None])
    return keep, np.exp(-offset ** 2 / (2 * (D / 2) ** 2))
'''),
    ('3.3', 'one position of padding let in, s <= length', 's < length', '''
def local_window(p, lengths, S, D):
    s = np.arange(S)[None, :]
    offset = s - p[:, None]
    keep = (np.abs(offset) <= D) & (s <= lengths[:, None])
    return keep, np.exp(-offset ** 2 / (2 * (D / 2) ** 2))
'''),
    ('3.3', 'the Gaussian set to 0 outside the window', 'at every position', '''
def local_window(p, lengths, S, D):
    s = np.arange(S)[None, :]
    offset = s - p[:, None]
    keep = (np.abs(offset) <= D) & (s < lengths[:, None])
    return keep, np.where(keep, np.exp(-offset ** 2 / (2 * (D / 2) ** 2)), 0.0)
'''),
    ('3.3', 'the window filled into a float array', 'dtype float64, expected bool', '''
def local_window(p, lengths, S, D):
    B = len(p)
    keep, gauss = np.zeros((B, S)), np.zeros((B, S))
    for b in range(B):
        for s in range(S):
            keep[b, s] = abs(s - p[b]) <= D and s < lengths[b]
            gauss[b, s] = np.exp(-(s - p[b]) ** 2 / (2 * (D / 2) ** 2))
    return keep, gauss
'''),
]

VALID = [
    ('3.1', 'one einsum over the three operands', '''
def general_score(query, keys, W_a):
    return np.einsum("bq,qk,bsk->bs", query, W_a, keys)
'''),
    ('3.1', 'matrix products: the keys times the projected query', '''
def general_score(query, keys, W_a):
    return (keys @ (query @ W_a)[:, :, None])[:, :, 0]
'''),
    ('3.1', "loops into an array of the inputs' dtype", '''
def general_score(query, keys, W_a):
    B, S, _ = keys.shape
    out = np.empty((B, S), dtype=np.result_type(query, keys, W_a))
    for b in range(B):
        for s in range(S):
            out[b, s] = query[b] @ W_a @ keys[b, s]
    return out
'''),
    ('3.2', 'W_a split into a query block and a key block', '''
def concat_score(query, keys, W_a, v_a):
    Dq = query.shape[-1]
    pre = (query @ W_a[:Dq])[:, None, :] + keys @ W_a[Dq:]
    return np.tanh(pre) @ v_a
'''),
    ('3.2', 'np.repeat and einsum', '''
def concat_score(query, keys, W_a, v_a):
    B, S, _ = keys.shape
    q = np.repeat(query[:, None, :], S, axis=1)
    hidden = np.tanh(np.einsum("bsi,ia->bsa", np.concatenate([q, keys], axis=2), W_a))
    return np.einsum("bsa,a->bs", hidden, v_a)
'''),
    ('3.3', 'loops over sentences and positions', '''
def local_window(p, lengths, S, D):
    B = len(p)
    keep, gauss = np.zeros((B, S), dtype=bool), np.zeros((B, S))
    sigma = D / 2
    for b in range(B):
        for s in range(S):
            keep[b, s] = abs(s - p[b]) <= D and s < lengths[b]
            gauss[b, s] = np.exp(-((s - p[b]) / sigma) ** 2 / 2)
    return keep, gauss
'''),
    ('3.3', 'np.subtract.outer and np.logical_and', '''
def local_window(p, lengths, S, D):
    positions = np.arange(S)
    offset = np.subtract.outer(p, positions)
    inside = np.logical_and(np.abs(offset) <= D, positions[None, :] < np.asarray(lengths)[:, None])
    return inside, np.exp(-2.0 * offset ** 2 / D ** 2)
'''),
]
