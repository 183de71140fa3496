"""Answers to the chapter 11 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    ('11.1', 'split-KV combine without subtracting the largest lse', 'exp(900) overflowed: subtract the largest lse', '''
def combine_splits(outs, lses):
    weights = np.where(np.isposinf(lses), 0.0, np.exp(np.where(np.isposinf(lses), 0.0, lses)))
    total = weights.sum(axis=0)
    safe = np.where(total > 0, total, 1.0)
    out = (weights[..., None] * outs).sum(axis=0) / safe[..., None]
    return out, np.where(total > 0, np.log(safe), np.inf)
'''),
]

VALID = [
]
