"""Answers to the chapter 12 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    ('12.1', 'float32 exp with Python float constants (computes in float64)', 'promoted the arithmetic to float64', '''
def exp_f32(x):
    xc = min(max(x, np.float32(-86.64339)), np.float32(88.72284))
    n = np.floor(xc * 1.4426950408889634 + 0.5)
    r = (xc - n * 0.693359375) - n * -2.12194440e-4
    p = 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    y = p * pow2_f32(n - 1.0) * 2.0
    y = 0.0 if x < -86.64339 else y
    y = np.inf if x > 88.72284 else y
    return x if x != x else y
'''),
    ('12.2', 'a serial range instead of prange', 'use numba.prange', '''
def forward_parallel(q, k, v, out, lse, scale, lo, hi, block_q, block_k):
    n_heads, L = q.shape[0], q.shape[1]
    group = n_heads // k.shape[0]
    n_blocks = (L + block_q - 1) // block_q
    for t in range(n_heads * n_blocks):
        h = t // n_blocks
        qb = zigzag(t % n_blocks, n_blocks)
        i0 = qb * block_q
        i1 = min(i0 + block_q, L)
        forward_query_block(q[h], k[h // group], v[h // group], out[h], lse[h], i0, i1, scale,
                            lo, hi, block_k)
'''),
    ('12.3', 'dQ without the final scale', 'remember the final factor scale', '''
def dq_query_block(q, k, v, d_out, lse, d, dq, i0, i1, scale, lo, hi, block_k):
    nr, E, S = i1 - i0, q.shape[1], k.shape[0]
    q_t, do_t = transposed(q[i0:i1]), transposed(d_out[i0:i1])
    dq_acc = np.zeros((nr, E), dtype=q.dtype)
    dq_tmp = np.empty((nr, E), dtype=q.dtype)
    p_buf = np.empty(block_k * nr, dtype=q.dtype)
    dp_buf = np.empty(block_k * nr, dtype=q.dtype)
    kb0, kb1 = key_blocks(i0, i1, S, block_k, lo, hi)
    for kb in range(kb0, kb1):
        j0 = kb * block_k
        j1 = min(j0 + block_k, S)
        p = tile_view(p_buf, j1 - j0, nr)
        np.dot(k[j0:j1], q_t, p)
        probs_from_lse(p, True, scale, lse[i0:i1], tile_is_full(i0, i1, j0, j1, lo, hi), i0, j0, lo, hi)
        dp = tile_view(dp_buf, j1 - j0, nr)
        np.dot(v[j0:j1], do_t, dp)
        dscores_in_place(p, dp, True, d[i0:i1])
        np.dot(dp.T, k[j0:j1], dq_tmp)
        add_into(dq_acc, dq_tmp)
    for r in range(nr):
        for e in range(E):
            dq[i0 + r, e] = dq_acc[r, e]
'''),
]

VALID = [
]
