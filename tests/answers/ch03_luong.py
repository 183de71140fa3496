"""Answers to the chapter 3 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    ('3.2', 'concat score with the key first', 'query first', '''
def concat_score(query, keys, W_a, v_a):
    B, S, _ = keys.shape
    q = np.broadcast_to(query[:, None, :], (B, S, query.shape[-1]))
    return np.tanh(np.concatenate([keys, q], axis=-1) @ W_a) @ v_a
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
]

VALID = [
]
