"""Answers to the chapter 4 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    ('4.1', 'scores without the scale', '(q · k) · scale', '''
def scaled_scores(query, key, scale):
    return query @ np.swapaxes(key, -1, -2)
'''),
    ('4.2', 'dropout survivors not rescaled', 'divided by (1 - p)', '''
def dropout_weights(weights, p, rng):
    keep = rng.random(weights.shape) >= p
    return np.where(keep, weights, 0.0).astype(weights.dtype), keep
'''),
    ('4.3', 'dS without the row-sum term', 'rowsum', '''
def scores_gradient(grad_out, value, probs):
    return probs * (grad_out @ np.swapaxes(value, -1, -2))
'''),
]

VALID = [
]
