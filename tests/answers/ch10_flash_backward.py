"""Answers to the chapter 10 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    ('10.1', 'D summed over the wrong axis', 'wrong shape', '''
def d_term(grad_out, out):
    return (grad_out * out).sum(axis=-2)
'''),
    ('10.2', 'recomputed weights that ignore the tile mask', 'masked entries set to 0', '''
def recompute_probs(scores, lse, keep=None):
    return np.exp(scores - lse[..., None])
'''),
    ('10.3', 'dS that forgets to multiply D by P', 'subtract D inside, then multiply by P', '''
def dscores(p, dp, d):
    return p * dp - d[..., None]
'''),
]

VALID = [
]
