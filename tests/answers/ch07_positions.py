"""Answers to the chapter 7 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    ('7.1', 'sine and cosine swapped', 'sin(0', '''
def sinusoidal_table(length, d_model, base=10000.0):
    pos = np.arange(length, dtype=np.float64)[:, None]
    angles = pos * base ** (-np.arange(0, d_model, 2, dtype=np.float64) / d_model)
    table = np.empty((length, d_model))
    table[:, 0::2] = np.cos(angles)
    table[:, 1::2] = np.sin(angles[:, : d_model // 2])
    return table
'''),
    ('7.2', 'RoPE rotating the other way', 'turned by 90°', '''
def rotate_pairs(x, cos, sin):
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty(np.broadcast_shapes(x.shape, cos.shape[:-1] + (x.shape[-1],)), dtype=np.result_type(x, cos))
    out[..., 0::2] = even * cos + odd * sin
    out[..., 1::2] = -even * sin + odd * cos
    return out
'''),
    ('7.3', 'ALiBi slopes starting at 1', '1/2 ... 1/256', '''
def alibi_slopes(num_heads):
    start = 2.0 ** (-8.0 / num_heads)
    return start ** np.arange(0, num_heads)
'''),
    ('7.4', 'ALiBi bias aligned top-left', "i' = i + S - L", '''
def alibi_bias(slopes, L, S):
    i, j = np.arange(L)[:, None], np.arange(S)[None, :]
    return -np.asarray(slopes, dtype=np.float64)[:, None, None] * np.abs(i - j)
'''),
]

VALID = [
]
