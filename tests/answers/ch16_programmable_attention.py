"""Answers to the chapter 16 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    ('16.1', 'causal, but documents ignored', 'entries differ', '''
def document_keep(doc_ids, q_idx, kv_idx, is_causal=True):
    shape = np.broadcast_shapes(np.shape(q_idx), np.shape(kv_idx))
    keep = np.broadcast_to(kv_idx <= q_idx, shape)
    return keep.copy() if is_causal else np.ones_like(keep)
'''),
    ('16.1', 'the causal comparison the wrong way round (later keys)', 'entries differ', '''
def document_keep(doc_ids, q_idx, kv_idx, is_causal=True):
    same = doc_ids[q_idx] == doc_ids[kv_idx]
    return same & (kv_idx >= q_idx) if is_causal else same
'''),
    ('16.1', 'documents found by boundaries (id changes), not by id', 'same id = same document', '''
def document_keep(doc_ids, q_idx, kv_idx, is_causal=True):
    starts = np.concatenate([[0], np.cumsum(np.diff(doc_ids) != 0)])
    same = starts[q_idx] == starts[kv_idx]
    return same & (kv_idx <= q_idx) if is_causal else same
'''),
    ('16.2', 'a ragged last tile counted full when all its real pairs are kept', 'never full', '''
def classify_tiles(keep, block_q, block_k):
    *lead, L, S = keep.shape
    n_q, n_k = -(-L // block_q), -(-S // block_k)
    out = np.zeros((*lead, n_q, n_k), dtype=np.int8)
    for r in range(n_q):
        for c in range(n_k):
            tile = keep[..., r * block_q:(r + 1) * block_q, c * block_k:(c + 1) * block_k]
            out[..., r, c] = np.where(tile.all(axis=(-2, -1)), FULL,
                                      np.where(tile.any(axis=(-2, -1)), PARTIAL, SKIP))
    return out
'''),
    ('16.2', 'full and partial swapped', 'entries differ', '''
def classify_tiles(keep, block_q, block_k):
    *lead, L, S = keep.shape
    n_q, n_k = -(-L // block_q), -(-S // block_k)
    padded = np.zeros((*lead, n_q * block_q, n_k * block_k), dtype=bool)
    padded[..., :L, :S] = keep
    count = padded.reshape((*lead, n_q, block_q, n_k, block_k)).sum(axis=(-3, -1))
    kinds = np.where(count == block_q * block_k, PARTIAL, FULL)
    return np.where(count == 0, SKIP, kinds).astype(np.int8)
'''),
    ('16.2', 'the tiles of the transposed mask (rows and columns mixed up)', 'entries differ', '''
def classify_tiles(keep, block_q, block_k):
    keep = np.swapaxes(keep, -1, -2)
    *lead, L, S = keep.shape
    n_q, n_k = -(-L // block_q), -(-S // block_k)
    padded = np.zeros((*lead, n_q * block_q, n_k * block_k), dtype=bool)
    padded[..., :L, :S] = keep
    count = padded.reshape((*lead, n_q, block_q, n_k, block_k)).sum(axis=(-3, -1))
    kinds = np.where(count == block_q * block_k, FULL, PARTIAL)
    return np.where(count == 0, SKIP, kinds).astype(np.int8)
'''),
    ('16.3', 'derivative 1 - tanh(score / cap), the square forgotten', 'the derivative', '''
def soft_cap_scores(score, cap):
    t = np.tanh(score / cap)
    return cap * t, 1 - t
'''),
    ('16.3', 'derivative through cosh, which overflows for large scores', 'overflowed', '''
def soft_cap_scores(score, cap):
    return cap * np.tanh(score / cap), 1 / np.cosh(score / cap) ** 2
'''),
    ('16.3', 'the derivative divided by cap once more', 'the derivative', '''
def soft_cap_scores(score, cap):
    t = np.tanh(score / cap)
    return cap * t, (1 - t * t) / cap
'''),
]

VALID = [
    ('16.1', 'through np.equal.outer-free broadcasting, with np.where', '''
def document_keep(doc_ids, q_idx, kv_idx, is_causal=True):
    q, kv = np.broadcast_arrays(q_idx, kv_idx)
    same = np.take(doc_ids, q) == np.take(doc_ids, kv)
    return np.where(is_causal, same & (kv <= q), same)
'''),
    ('16.2', 'loops over the tiles with a count', '''
def classify_tiles(keep, block_q, block_k):
    *lead, L, S = keep.shape
    n_q, n_k = -(-L // block_q), -(-S // block_k)
    out = np.zeros((*lead, n_q, n_k), dtype=np.int8)
    for r in range(n_q):
        for c in range(n_k):
            tile = keep[..., r * block_q:(r + 1) * block_q, c * block_k:(c + 1) * block_k]
            n = tile.sum(axis=(-2, -1))
            out[..., r, c] = np.where(n == 0, SKIP, np.where(n == block_q * block_k, FULL, PARTIAL))
    return out
'''),
    ('16.3', 'the derivative from exp of a negative number only', '''
def soft_cap_scores(score, cap):
    e = np.exp(-2 * np.abs(score / cap))
    t = np.sign(score) * (1 - e) / (1 + e)
    return cap * t, 4 * e / (1 + e) ** 2
'''),
]
