"""Answers to the chapter 8 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    ('8.1', 'online update that does not rescale the old sum', 'exp(m_old - m_new)', '''
def online_update(m, s, x):
    m_new = np.maximum(m, x.max(axis=-1, initial=-np.inf))
    shift = np.where(np.isneginf(m_new), 0.0, m_new)
    return m_new, s + np.exp(x - shift[..., None]).sum(axis=-1)
'''),
    ('8.1', 'online update that subtracts -inf from -inf', 'shift by 0 when the new maximum is -inf', '''
def online_update(m, s, x):
    m_new = np.maximum(m, x.max(axis=-1, initial=-np.inf))
    return m_new, s * np.exp(m - m_new) + np.exp(x - m_new[..., None]).sum(axis=-1)
'''),
    ('8.2', 'merge that rescales only one part', 'common maximum', '''
def merge_stats(m_a, s_a, m_b, s_b):
    m = np.maximum(m_a, m_b)
    shift = np.where(np.isneginf(m), 0.0, m)
    return m, s_a * np.exp(m_a - shift) + s_b
'''),
    ('8.3', 'attention merge that treats lse = +inf as a real mass', 'treat lse=+inf as zero mass', '''
def merge_attention(out_a, lse_a, out_b, lse_b):
    lse = np.logaddexp(lse_a, lse_b)
    out = np.exp(lse_a - lse)[..., None] * out_a + np.exp(lse_b - lse)[..., None] * out_b
    return out, lse
'''),
]

VALID = [
]
