"""Answers to the chapter 5 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    ('5.1', 'causal mask that hides the diagonal', 'entries differ', '''
def causal_keep(L, S, align="top_left"):
    offset = 0 if align == "top_left" else S - L
    return np.arange(S)[None, :] < np.arange(L)[:, None] + offset
'''),
    ('5.1', 'bottom-right alignment ignored', 'bottom-right', '''
def causal_keep(L, S, align="top_left"):
    return np.tril(np.ones((L, S), dtype=bool))
'''),
    ('5.3', 'window one key too wide', 'first at (query, key) = (0, 2)', '''
def window_keep(L, S, left, right=0, align="bottom_right"):
    offset = 0 if align == "top_left" else S - L
    centre = np.arange(L)[:, None] + offset
    j = np.arange(S)[None, :]
    keep = np.ones((L, S), dtype=bool)
    if left is not None:
        keep &= j >= centre - left - 1
    if right is not None:
        keep &= j <= centre + right
    return keep
'''),
]

VALID = [
]
