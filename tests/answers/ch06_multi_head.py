"""Answers to the chapter 6 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    ('6.3', 'key heads tiled instead of repeated', 'must read key head', '''
def repeat_kv(x, num_q_heads):
    return np.tile(x, (1,) * (x.ndim - 3) + (num_q_heads // x.shape[-3], 1, 1))
'''),
    ('6.4', 'group gradients averaged', 'gets the sum', '''
def fold_kv_grad(grad, num_kv_heads):
    *lead, hq, S, D = grad.shape
    return grad.reshape(tuple(lead) + (num_kv_heads, hq // num_kv_heads, S, D)).mean(axis=-3)
'''),
]

VALID = [
]
