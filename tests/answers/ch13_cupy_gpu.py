"""Answers to the chapter 13 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    ('13.1', 'contiguous dims instead of interleaved', 'interleaved', '''
def thread_slice(thread, D):
    tpr = D // 16
    row, t = divmod(thread, tpr)
    return row, np.arange(16 * t, 16 * t + 16)
'''),
    ('13.2', 'shared memory without the padding column', 'D + 1', '''
def forward_smem_bytes(block_k, D, acc_bytes):
    return 2 * block_k * D * acc_bytes
'''),
    ('13.3', 'natural exponentials on log2 scores', 'exp2', '''
def chunk_update(m, l, o, s, v):
    mx = np.maximum(m, s.max(axis=-1))
    live = mx > -np.inf
    base = np.where(live, mx, 0.0)
    alpha = np.where(live, np.exp(m - base), 1.0)
    p = np.exp(s - base[:, None])
    return (np.where(live, mx, m), np.where(live, alpha * l + p.sum(-1), l),
            np.where(live[:, None], alpha[:, None] * o + p @ v, o))
'''),
    ('13.4', 'offsets in increasing order', 'offset 4', '''
def butterfly_steps(partials):
    x = np.asarray(partials)
    steps, off, lanes = [], 1, np.arange(x.shape[-1])
    while off < x.shape[-1]:
        x = x + x[..., lanes ^ off]
        steps.append(x)
        off *= 2
    return steps
'''),
    ('13.5', 'A registers in row-major order', 'rows g + 8', '''
def fragment_entry(operand, lane, i):
    g, t = divmod(lane, 4)
    if operand == "a":
        return g + 8 * (i >= 4), 2 * t + i % 2 + 8 * (i % 4 >= 2)
    if operand == "b":
        return 2 * t + i % 2 + 8 * (i >= 2), g
    if operand == "c":
        return g + 8 * (i >= 2), 2 * t + i % 2
    raise ValueError(f"operand must be 'a', 'b' or 'c'; got {operand!r}")
'''),
]

VALID = [
]
