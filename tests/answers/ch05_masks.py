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
    ('5.1', 'the offset with its sign turned around: L - S', 'j <= i + S - L', '''
def causal_keep(L, S, align="top_left"):
    offset = 0 if align == "top_left" else L - S
    return np.arange(S)[None, :] <= np.arange(L)[:, None] + offset
'''),
    ('5.1', 'the upper triangle: queries see the future', 'query i keeps keys j <= i', '''
def causal_keep(L, S, align="top_left"):
    offset = 0 if align == "top_left" else S - L
    return np.triu(np.ones((L, S), dtype=bool), k=offset)
'''),
    ('5.1', 'np.tril of ones: a float mask', 'expected bool', '''
def causal_keep(L, S, align="top_left"):
    offset = 0 if align == "top_left" else S - L
    return np.tril(np.ones((L, S)), k=offset)
'''),
    ('5.1', 'a square mask of the larger size, cut to (L, S) from the top',
     'bottom-right causal mask', '''
def causal_keep(L, S, align="top_left"):
    n = max(L, S)
    return np.tril(np.ones((n, n), dtype=bool))[:L, :S]
'''),
    ('5.2', 'one padding key too many: j <= length', 'row b is True on keys j < lengths[b]', '''
def lengths_keep(lengths, S):
    return np.arange(S)[None, :] <= np.asarray(lengths)[:, None]
'''),
    ('5.2', 'the comparison broadcast the other way: (S, B)', 'wrong shape', '''
def lengths_keep(lengths, S):
    return np.arange(S)[:, None] < np.asarray(lengths)[None, :]
'''),
    ('5.2', 'the (B, 1, 1, S) layout of padding_mask returned', 'wrong shape', '''
def lengths_keep(lengths, S):
    return (np.arange(S) < np.asarray(lengths)[:, None])[:, None, None, :]
'''),
    ('5.2', 'positions counted from 1', 'entries differ', '''
def lengths_keep(lengths, S):
    return np.arange(1, S + 1)[None, :] < np.asarray(lengths)[:, None]
'''),
    ('5.2', 'a mask of 0 and 1 integers', 'expected bool', '''
def lengths_keep(lengths, S):
    keep = np.zeros((len(lengths), S), dtype=int)
    for b, n in enumerate(lengths):
        keep[b, :n] = 1
    return keep
'''),
    ('5.2', 'subtracts the positions from unsigned lengths, which wraps around',
     'wraps around below 0', '''
def lengths_keep(lengths, S):
    return (lengths[:, None] - np.arange(S, dtype=lengths.dtype)[None, :]) > 0
'''),
    ('5.2', 'key positions in the dtype of the lengths, which overflows int8',
     'do not fit in int8', '''
def lengths_keep(lengths, S):
    return np.arange(S, dtype=lengths.dtype)[None, :] < lengths[:, None]
'''),
    ('5.2', 'stacks one row per sequence, which fails on an empty batch',
     'np.stack of no rows fails', '''
def lengths_keep(lengths, S):
    return np.stack([np.arange(S) < n for n in lengths])
'''),
    ('5.3', 'window one key too wide', '(0, 2): True vs False', '''
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
    ('5.3', 'left and right swapped', "i' - left <= j <= i' + right", '''
def window_keep(L, S, left, right=0, align="bottom_right"):
    offset = 0 if align == "top_left" else S - L
    centre = np.arange(L)[:, None] + offset
    j = np.arange(S)[None, :]
    keep = np.ones((L, S), dtype=bool)
    if right is not None:
        keep &= j >= centre - right
    if left is not None:
        keep &= j <= centre + left
    return keep
'''),
    ('5.3', 'None read as 0 (no room) instead of no limit', 'None: no limit on that side', '''
def window_keep(L, S, left, right=0, align="bottom_right"):
    offset = 0 if align == "top_left" else S - L
    centre = np.arange(L)[:, None] + offset
    j = np.arange(S)[None, :]
    return (j >= centre - (left or 0)) & (j <= centre + (right or 0))
'''),
    ('5.3', 'the window always top-left aligned', 'bottom-right', '''
def window_keep(L, S, left, right=0, align="bottom_right"):
    i = np.arange(L)[:, None]
    j = np.arange(S)[None, :]
    keep = np.ones((L, S), dtype=bool)
    if left is not None:
        keep &= j >= i - left
    if right is not None:
        keep &= j <= i + right
    return keep
'''),
    ('5.3', 'np.tril/np.triu with the diagonals off by the alignment', 'top-left', '''
def window_keep(L, S, left, right=0, align="bottom_right"):
    offset = S - L
    keep = np.ones((L, S), dtype=bool)
    if right is not None:
        keep = np.tril(keep, k=offset + right)
    if left is not None:
        keep = np.triu(keep, k=offset - left)
    return keep
'''),
]

VALID = [
    ('5.1', 'np.tri with the offset as its diagonal', '''
def causal_keep(L, S, align="top_left"):
    offset = S - L if align == "bottom_right" else 0
    return np.tri(L, S, k=offset, dtype=bool)
'''),
    ('5.1', 'explicit loops over queries and keys', '''
def causal_keep(L, S, align="top_left"):
    keep = np.zeros((L, S), dtype=bool)
    for i in range(L):
        last = i if align == "top_left" else i + S - L
        for j in range(S):
            keep[i, j] = j <= last
    return keep
'''),
    ('5.2', 'a loop that fills the first lengths[b] keys of each row', '''
def lengths_keep(lengths, S):
    keep = np.zeros((len(lengths), S), dtype=bool)
    for b, n in enumerate(lengths):
        keep[b, :n] = True
    return keep
'''),
    ('5.2', 'np.greater.outer: lengths[b] > j', '''
def lengths_keep(lengths, S):
    return np.greater.outer(np.asarray(lengths), np.arange(S))
'''),
    ('5.3', 'np.tril and np.triu of ones with the aligned diagonals', '''
def window_keep(L, S, left, right=0, align="bottom_right"):
    offset = S - L if align == "bottom_right" else 0
    keep = np.ones((L, S), dtype=bool)
    if right is not None:
        keep = np.tril(keep, k=offset + right)
    if left is not None:
        keep = np.triu(keep, k=offset - left)
    return keep
'''),
    ('5.3', "the key offset j - i' compared once, with infinite limits for None", '''
def window_keep(L, S, left, right=0, align="bottom_right"):
    offset = S - L if align == "bottom_right" else 0
    delta = np.subtract.outer(np.arange(S), np.arange(L) + offset).T  # (L, S): j - i'
    low = -np.inf if left is None else -left
    high = np.inf if right is None else right
    return (delta >= low) & (delta <= high)
'''),
]
