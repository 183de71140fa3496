"""Answers to the chapter 13 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    # 13.1 thread_slice
    ('13.1', 'contiguous dims instead of interleaved', 'interleaved', '''
def thread_slice(thread, D):
    tpr = D // 16
    row, t = divmod(thread, tpr)
    return row, np.arange(16 * t, 16 * t + 16)
'''),
    ('13.1', 'a thread slice that overlaps its neighbour (16 consecutive dims from t)',
     'owned twice', '''
def thread_slice(thread, D):
    tpr = D // 16
    row, t = divmod(thread, tpr)
    return row, np.arange(t, t + 16)
'''),
    ('13.1', 'rows of 16 threads (the 16 dims per thread taken for the threads per row)',
     'the row of thread', '''
def thread_slice(thread, D):
    tpr = D // 16
    return thread // 16, np.arange(thread % tpr, D, tpr)
'''),
    ('13.1', 'row and lane swapped (thread % TPR as the row)', 'the row of thread', '''
def thread_slice(thread, D):
    tpr = D // 16
    t, row = divmod(thread, tpr)
    return row, np.arange(t % tpr, D, tpr)
'''),
    ('13.1', 'the dims as a Python list', 'expected a NumPy array', '''
def thread_slice(thread, D):
    tpr = D // 16
    row, t = divmod(thread, tpr)
    return row, list(range(t, D, tpr))
'''),
    # 13.2 forward_smem_bytes
    ('13.2', 'shared memory without the padding column', 'D + 1', '''
def forward_smem_bytes(block_k, D, acc_bytes):
    return 2 * block_k * D * acc_bytes
'''),
    ('13.2', 'shared memory that forgets the V tile', 'a K tile and a V tile', '''
def forward_smem_bytes(block_k, D, acc_bytes):
    return block_k * (D + 1) * acc_bytes
'''),
    ('13.2', 'the padding added once per tile instead of once per row', 'D + 1', '''
def forward_smem_bytes(block_k, D, acc_bytes):
    return 2 * (block_k * D + 1) * acc_bytes
'''),
    ('13.2', 'a float from a true division', 'an int', '''
def forward_smem_bytes(block_k, D, acc_bytes):
    return block_k * (D + 1) * acc_bytes / 0.5
'''),
    # 13.3 chunk_update
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
    ('13.3', 'the old state not rescaled when the maximum moves', 'rescale the old l and o', '''
def chunk_update(m, l, o, s, v):
    mx = np.maximum(m, s.max(axis=-1))
    live = mx > -np.inf
    base = np.where(live, mx, 0.0)
    p = np.exp2(s - base[:, None])
    return (np.where(live, mx, m), np.where(live, l + p.sum(-1), l),
            np.where(live[:, None], o + p @ v, o))
'''),
    ('13.3', 'no guard for rows whose maximum is still -inf (-inf - -inf)', 'shift such rows by 0',
     '''
def chunk_update(m, l, o, s, v):
    mx = np.maximum(m, s.max(axis=-1))
    alpha = np.exp2(m - mx)
    p = np.exp2(s - mx[:, None])
    return mx, alpha * l + p.sum(-1), alpha[:, None] * o + p @ v
'''),
    ('13.3', 'the rescaling factor inverted, 2^(m_new - m_old)', 'rescale the old l and o', '''
def chunk_update(m, l, o, s, v):
    mx = np.maximum(m, s.max(axis=-1))
    live = mx > -np.inf
    base = np.where(live, mx, 0.0)
    alpha = np.where(np.isneginf(m), 0.0, np.exp2(base - np.where(np.isneginf(m), 0.0, m)))
    p = np.exp2(s - base[:, None])
    return (np.where(live, mx, m), np.where(live, alpha * l + p.sum(-1), l),
            np.where(live[:, None], alpha[:, None] * o + p @ v, o))
'''),
    ('13.3', 'o normalised by l at every step', 'unnormalised output', '''
def chunk_update(m, l, o, s, v):
    mx = np.maximum(m, s.max(axis=-1))
    live = mx > -np.inf
    base = np.where(live, mx, 0.0)
    alpha = np.where(live, np.exp2(m - base), 1.0)
    p = np.exp2(s - base[:, None])
    l_new = np.where(live, alpha * l + p.sum(-1), l)
    o_new = np.where(live[:, None], (alpha * l)[:, None] * o + p @ v, o)
    return np.where(live, mx, m), l_new, o_new / np.where(l_new > 0, l_new, 1.0)[:, None]
'''),
    ('13.3', 'a float64 constant array that turns a float32 state into float64', 'keeps the dtype',
     '''
def chunk_update(m, l, o, s, v):
    mx = np.maximum(m, s.max(axis=-1))
    live = mx > -np.inf
    base = np.where(live, mx, np.zeros(len(m)))
    alpha = np.where(live, np.exp2(m - base), 1.0)
    p = np.exp2(s - base[:, None])
    l_new = np.where(live, alpha * l + p.sum(axis=-1), l)
    o_new = np.where(live[:, None], alpha[:, None] * o + p @ v, o)
    return np.where(live, mx, m), l_new, o_new
'''),
    # 13.4 butterfly_steps
    ('13.3', 'live rows told by mx > -inf, so a NaN score keeps the old state', 'must show', '''
def chunk_update(m, l, o, s, v):
    mx = np.maximum(m, s.max(axis=-1))
    live = mx > -np.inf
    base = np.where(live, mx, 0.0)
    alpha = np.where(live, np.exp2(m - base), 1.0)
    p = np.exp2(s - base[:, None])
    l_new = np.where(live, alpha * l + p.sum(axis=-1), l)
    o_new = np.where(live[:, None], alpha[:, None] * o + p @ v, o)
    return np.where(live, mx, m), l_new, o_new
'''),
    ('13.3', 'NaN from -inf - (-inf) and NaN scores alike zeroed with nan_to_num', 'must show', '''
def chunk_update(m, l, o, s, v):
    mx = np.maximum(m, s.max(axis=-1))
    with np.errstate(invalid="ignore"):
        alpha = np.nan_to_num(np.exp2(m - mx), nan=1.0)
        p = np.nan_to_num(np.exp2(s - mx[:, None]))
    return mx, alpha * l + p.sum(-1), alpha[:, None] * o + p @ v
'''),
    ('13.4', 'offsets in increasing order', 'offsets TPR/2 down to 1', '''
def butterfly_steps(partials):
    x = np.asarray(partials)
    steps, off, lanes = [], 1, np.arange(x.shape[-1])
    while off < x.shape[-1]:
        x = x + x[..., lanes ^ off]
        steps.append(x)
        off *= 2
    return steps
'''),
    ('13.4', 'lanes updated one after another in place (not all at once)', 'all lanes at once', '''
def butterfly_steps(partials):
    x = np.array(partials)
    tpr = x.shape[-1]
    steps, off = [], tpr // 2
    while off > 0:
        for i in range(tpr):
            x[..., i] += x[..., i ^ off]
        steps.append(x.copy())
        off //= 2
    return steps
'''),
    ('13.4', 'the same array appended at every step and updated in place', 'step 1 of', '''
def butterfly_steps(partials):
    x = np.array(partials)
    lanes = np.arange(x.shape[-1])
    steps, off = [], x.shape[-1] // 2
    while off > 0:
        x += x[..., lanes ^ off]
        steps.append(x)
        off //= 2
    return steps
'''),
    ('13.4', 'only the final values, not one array per step', 'needs log2(TPR)', '''
def butterfly_steps(partials):
    x = np.asarray(partials)
    return [np.repeat(x.sum(-1, keepdims=True), x.shape[-1], axis=-1)]
'''),
    # 13.5 fragment_entry
    ('13.5', 'A registers in row-major order', 'rows g (a0, a1, a4, a5)', '''
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
    ('13.5', 'the accumulator C with row and column swapped', 'C: rows g (c0, c1)', '''
def fragment_entry(operand, lane, i):
    g, t = divmod(lane, 4)
    if operand == "a":
        return g + 8 * (i in (2, 3, 6, 7)), 2 * t + i % 2 + 8 * (i >= 4)
    if operand == "b":
        return 2 * t + i % 2 + 8 * (i >= 2), g
    if operand == "c":
        return 2 * t + i % 2, g + 8 * (i >= 2)
    raise ValueError(f"operand must be 'a', 'b' or 'c'; got {operand!r}")
'''),
    ('13.5', 'B laid out like C (row g, columns 2t)', 'B: rows 2t, 2t + 1', '''
def fragment_entry(operand, lane, i):
    g, t = divmod(lane, 4)
    if operand == "a":
        return g + 8 * (i in (2, 3, 6, 7)), 2 * t + i % 2 + 8 * (i >= 4)
    if operand in ("b", "c"):
        return g + 8 * (i >= 2), 2 * t + i % 2
    raise ValueError(f"operand must be 'a', 'b' or 'c'; got {operand!r}")
'''),
    ('13.5', 'g and t taken as lane % 4 and lane // 4', 'g = lane // 4', '''
def fragment_entry(operand, lane, i):
    t, g = divmod(lane, 4)
    if operand == "a":
        return g + 8 * (i in (2, 3, 6, 7)), 2 * t + i % 2 + 8 * (i >= 4)
    if operand == "b":
        return 2 * t + i % 2 + 8 * (i >= 2), g
    if operand == "c":
        return g + 8 * (i >= 2), 2 * t + i % 2
    raise ValueError(f"operand must be 'a', 'b' or 'c'; got {operand!r}")
'''),
    ('13.5', 'an unknown operand answered as C instead of raising', 'must raise ValueError', '''
def fragment_entry(operand, lane, i):
    g, t = divmod(lane, 4)
    if operand == "a":
        return g + 8 * (i in (2, 3, 6, 7)), 2 * t + i % 2 + 8 * (i >= 4)
    if operand == "b":
        return 2 * t + i % 2 + 8 * (i >= 2), g
    return g + 8 * (i >= 2), 2 * t + i % 2
'''),
    ('13.5', 'upper-case operand names accepted',
     "must raise ValueError (the operand is not 'a', 'b' or 'c')", '''
def fragment_entry(operand, lane, i):
    g, t = divmod(lane, 4)
    operand = operand.lower()
    if operand == "a":
        return g + 8 * (i in (2, 3, 6, 7)), 2 * t + i % 2 + 8 * (i >= 4)
    if operand == "b":
        return 2 * t + i % 2 + 8 * (i >= 2), g
    if operand == "c":
        return g + 8 * (i >= 2), 2 * t + i % 2
    raise ValueError(f"operand must be 'a', 'b' or 'c'; got {operand!r}")
'''),
]

VALID = [
    ('13.1', 'dims built as t + TPR·k, row by integer division', '''
def thread_slice(thread, D):
    tpr = D // 16
    return thread // tpr, thread % tpr + tpr * np.arange(16)
'''),
    ('13.1', 'dims collected in a loop into an int32 array', '''
def thread_slice(thread, D):
    tpr = D // 16
    t = thread % tpr
    dims = [d for d in range(D) if d % tpr == t]
    return int(thread / tpr), np.array(dims, dtype=np.int32)
'''),
    ('13.2', 'the two tiles counted separately', '''
def forward_smem_bytes(block_k, D, acc_bytes):
    row = (D + 1) * acc_bytes  # one padded row, in bytes
    k_tile = block_k * row
    v_tile = block_k * row
    return k_tile + v_tile
'''),
    ('13.3', 'a loop over rows, with exp(x ln 2) for 2^x', '''
import math


def chunk_update(m, l, o, s, v):
    m, l, o = m.copy(), l.copy(), o.copy()
    for r in range(len(m)):
        mx = np.maximum(m[r], s[r].max())  # NaN stays NaN (Python's max would drop it)
        if mx == -np.inf:
            continue
        alpha = np.exp((m[r] - mx) * math.log(2.0))
        p = np.exp((s[r] - mx) * math.log(2.0))
        l[r] = alpha * l[r] + p.sum()
        o[r] = alpha * o[r] + p @ v
        m[r] = mx
    return m, l, o
'''),
    ('13.3', 'masked rows replaced by a safe maximum with np.where, einsum for p v', '''
def chunk_update(m, l, o, s, v):
    mx = np.maximum(m, np.max(s, axis=1))  # (rows,)
    dead = np.isneginf(mx)
    safe = np.where(dead, np.zeros_like(mx), mx)
    # 0 where m = -inf; 1 on dead rows is not needed: they keep l = 0, o = 0
    alpha = np.exp2(m - safe)
    p = np.exp2(s - safe[:, None])
    return mx, alpha * l + p.sum(axis=1), alpha[:, None] * o + np.einsum("rk,ke->re", p, v)
'''),
    ('13.4', 'each step from a reshape into pairs of lane blocks', '''
def butterfly_steps(partials):
    x = np.asarray(partials)
    tpr = x.shape[-1]
    steps, off = [], tpr // 2
    while off > 0:
        blocks = x.reshape(x.shape[:-1] + (tpr // (2 * off), 2, off))  # (..., pairs, 2, off)
        swapped = blocks[..., ::-1, :].reshape(x.shape)  # lane i ^ off
        x = x + swapped
        steps.append(x)
        off //= 2
    return steps
'''),
    ('13.4', 'a Python loop over lanes reading the previous step', '''
def butterfly_steps(partials):
    x = np.asarray(partials)
    tpr = x.shape[-1]
    steps, off = [], tpr // 2
    while off >= 1:
        new = np.empty_like(x)
        for i in range(tpr):
            new[..., i] = x[..., i] + x[..., i ^ off]
        steps.append(new)
        x = new
        off = off // 2
    return steps
'''),
    ('13.5', 'bit operations and a table of offsets', '''
OFFSETS = {"a": [(0, 0), (0, 1), (8, 0), (8, 1), (0, 8), (0, 9), (8, 8), (8, 9)],
           "c": [(0, 0), (0, 1), (8, 0), (8, 1)]}


def fragment_entry(operand, lane, i):
    g, t = lane >> 2, lane & 3
    if operand == "b":
        return 2 * t + (i & 1) + 8 * (i >> 1), g
    if operand not in OFFSETS:
        raise ValueError(f"unknown operand {operand!r}")
    dr, dc = OFFSETS[operand][i]
    return g + dr, 2 * t + dc
'''),
]
