"""Answers to the chapter 12 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

_EXP_TAIL = '''
    p = np.float32(1.0 / 5040.0)
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
'''


def _exp(reduction, tail=_EXP_TAIL, end=None):
    """An exp_f32 with the given range reduction
    (and polynomial, and end), the rest as the reference."""
    end = end or '''
    y = p * pow2_f32(n - np.float32(1.0)) * np.float32(2.0)
    y = np.float32(0.0) if x < np.float32(-86.64339) else y
    y = np.float32(np.inf) if x > np.float32(88.72284) else y
    return x if x != x else y
'''
    head = "\ndef exp_f32(x):\n    xc = min(max(x, np.float32(-86.64339)), np.float32(88.72284))\n"
    return head + reduction + tail + end


_REDUCTION = '''
    n = np.floor(xc * np.float32(1.442695) + np.float32(0.5))
    r = (xc - n * np.float32(0.693359375)) - n * np.float32(-2.12194440e-4)
'''

_FORWARD = '''
def forward_parallel(q, k, v, out, lse, scale, lo, hi, block_q, block_k):
    n_heads, L = q.shape[0], q.shape[1]
    group = n_heads // k.shape[0]
    n_blocks = {n_blocks}
    for t in {loop}(n_heads * n_blocks):
        h = t // n_blocks
        qb = {block}
        i0 = qb * block_q
        i1 = min(i0 + block_q, L)
        forward_query_block(q[h], k[{kv}], v[{kv}], out[h], lse[h], i0, i1, scale, lo, hi, block_k)
'''


def _forward(n_blocks="(L + block_q - 1) // block_q", loop="prange",
             block="zigzag(t % n_blocks, n_blocks)", kv="h // group"):
    return _FORWARD.format(n_blocks=n_blocks, loop=loop, block=block, kv=kv)


_DQ = '''
def dq_query_block(q, k, kp, v, d_out, lse, d, dq, i0, i1, scale, lo, hi, block_k):
    nr, E, S = i1 - i0, q.shape[1], k.shape[0]
    dq_acc = np.zeros((nr, E), dtype=q.dtype)
    dq_tmp = np.empty((nr, E), dtype=q.dtype)
    p_buf = np.empty(nr * block_k, dtype=q.dtype)
    dp_buf = np.empty(nr * block_k, dtype=q.dtype)
    kb0, kb1 = key_blocks(i0, i1, S, block_k, lo, hi)
    for kb in range(kb0, {kb_end}):
        j0 = kb * block_k
        j1 = min(j0 + block_k, S)
        p = tile_view(p_buf, nr, j1 - j0)
        tile_scores(q, i0, i1, kp, {score_block}, block_k, p)
        probs_from_lse(p, False, {probs_scale}, {lse}, {full}, i0, j0, lo, hi)
        dp = tile_view(dp_buf, nr, j1 - j0)
        np.dot(d_out[i0:i1], v[j0:j1].T, dp)
        dscores_in_place(p, dp, False, {d})
        np.dot(dp, k[j0:j1], dq_tmp)
        add_into(dq_acc, dq_tmp)
    for r in range(nr):
        for e in range(E):
            dq[{row}, e] = dq_acc[r, e]{scaled}
'''


def _dq(kb_end="kb1", lse="lse[i0:i1]", full="tile_is_full(i0, i1, j0, j1, lo, hi)", d="d[i0:i1]",
        row="i0 + r", scaled=" * scale", probs_scale="scale", score_block="kb"):
    return _DQ.format(kb_end=kb_end, lse=lse, full=full, d=d, row=row, scaled=scaled,
                      probs_scale=probs_scale, score_block=score_block)


WRONG = [
    # 12.1 exp_f32
    ('12.1', 'float32 exp with Python float constants (computes in float64)',
     'promoted the arithmetic to float64', '''
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
    ('12.1', 'range reduction with one float32 ln2 (no Cody-Waite split)',
     'ln2 split in ln2_hi + ln2_lo', _exp('''
    n = np.floor(xc * np.float32(1.442695) + np.float32(0.5))
    r = xc - n * np.float32(0.6931472)
''')),
    ('12.1', 'floor(x / ln2) without the 1/2: r runs up to ln2, beyond the polynomial\'s range',
     '|r| <= ln2/2',
     _exp('''
    n = np.floor(xc * np.float32(1.442695))
    r = (xc - n * np.float32(0.693359375)) - n * np.float32(-2.12194440e-4)
''')),
    ('12.1', '2^n built directly, which overflows for n = 128', 'pow2_f32(n - 1) * 2',
     _exp(_REDUCTION, end='''
    y = p * pow2_f32(n)
    y = np.float32(0.0) if x < np.float32(-86.64339) else y
    y = np.float32(np.inf) if x > np.float32(88.72284) else y
    return x if x != x else y
''')),
    ('12.1', 'a degree-5 polynomial', 'the polynomial (degree 7)', _exp(_REDUCTION, tail='''
    p = np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
''')),
    ('12.1', 'a degree-6 polynomial (within 2 eps, but off systematically near |r| = ln2/2)',
     'degree 6 leaves r^7/7!', _exp(_REDUCTION, tail='''
    p = np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
''')),
    ('12.1', 'the ends of the range excluded (<= and >=), so x = XMIN gives 0',
     'compare with <, not <=',
     _exp(_REDUCTION, end='''
    y = p * pow2_f32(n - np.float32(1.0)) * np.float32(2.0)
    y = np.float32(0.0) if x <= np.float32(-86.64339) else y
    y = np.float32(np.inf) if x >= np.float32(88.72284) else y
    return x if x != x else y
''')),
    ('12.1', 'the special cases tested on the clamped value, so -inf gives 2^-125',
     'gives exactly 0',
     _exp(_REDUCTION, end='''
    y = p * pow2_f32(n - np.float32(1.0)) * np.float32(2.0)
    y = np.float32(0.0) if xc < np.float32(-86.64339) else y
    y = np.float32(np.inf) if xc > np.float32(88.72284) else y
    return x if x != x else y
''')),
    ('12.1', "the C library's exp behind the right selects", "calls the C library's exp", '''
def exp_f32(x):
    y = np.exp(x)
    y = np.float32(0.0) if x < np.float32(-86.64339) else y
    return np.float32(np.inf) if x > np.float32(88.72284) else y
'''),
    # 12.2 forward_parallel
    ('12.2', 'a serial range instead of prange', 'use numba.prange', _forward(loop="range")),
    ('12.2', 'the last, partial query block skipped (L // block_q blocks)',
     'the last, partial one included',
     _forward(n_blocks="L // block_q")),
    ('12.2', 'key/value head h % Hkv instead of h // G', 'must read key/value head',
     _forward(kv="h % k.shape[0]")),
    ('12.2', 'query blocks in order, without zigzag', 'zigzag', _forward(block="t % n_blocks")),
    ('12.2', 'prange over the heads only, blocks in order inside', 'not a prange over the heads',
     '''
def forward_parallel(q, k, v, out, lse, scale, lo, hi, block_q, block_k):
    n_heads, L = q.shape[0], q.shape[1]
    group = n_heads // k.shape[0]
    for h in prange(n_heads):
        for i0 in range(0, L, block_q):
            forward_query_block(q[h], k[h // group], v[h // group], out[h], lse[h], i0,
                                min(i0 + block_q, L), scale, lo, hi, block_k)
'''),
    ('12.2', 'prange over the heads only, zigzag blocks inside: one head runs on one thread',
     'not a prange over the heads', '''
def forward_parallel(q, k, v, out, lse, scale, lo, hi, block_q, block_k):
    n_heads, L = q.shape[0], q.shape[1]
    group = n_heads // k.shape[0]
    n_blocks = (L + block_q - 1) // block_q
    for h in prange(n_heads):
        for b in range(n_blocks):
            i0 = zigzag(b, n_blocks) * block_q
            forward_query_block(q[h], k[h // group], v[h // group], out[h], lse[h], i0,
                                min(i0 + block_q, L), scale, lo, hi, block_k)
'''),
    # 12.3 dq_query_block
    ('12.3', 'dQ without the final scale', 'remember the final factor scale', _dq(scaled="")),
    ('12.3', 'D of the whole head (d) instead of the block\'s rows (d[i0:i1])', 'dQ (', _dq(d="d")),
    ('12.3', 'lse of the whole head (lse) instead of the block\'s rows', 'dQ (', _dq(lse="lse")),
    ('12.3', 'the weights recomputed from unscaled scores (scale 1 in probs_from_lse)', 'dQ (',
     _dq(probs_scale="1.0")),
    ('12.3', 'D left out of dS (zeros where D_i goes)', 'dQ (', _dq(d="np.zeros_like(d[i0:i1])")),
    ('12.3', 'every tile taken as full, so the band never masks', 'dQ (', _dq(full="True")),
    ('12.3', 'the last, partial key block skipped', 'dQ (', _dq(kb_end="min(kb1, S // block_k)")),
    ('12.3', 'row r of the block written to dq[r]', 'Write row r of the block to dq[i0 + r]',
     _dq(row="r")),
    ('12.3', 'the scores of the first key block the band allows, for every block', 'dQ (',
     _dq(score_block="kb0")),
    ('12.3', 'the key block counted from the first one the band allows (kb - kb0)', 'dQ (',
     _dq(score_block="kb - kb0")),
    ('12.3', 'float64 scratch tiles in a float32 kernel', 'dtype=q.dtype', '''
def dq_query_block(q, k, kp, v, d_out, lse, d, dq, i0, i1, scale, lo, hi, block_k):
    nr, E, S = i1 - i0, q.shape[1], k.shape[0]
    dq_acc = np.zeros((nr, E))
    dq_tmp = np.empty((nr, E))
    p_buf = np.empty(nr * block_k)
    dp_buf = np.empty(nr * block_k)
    kb0, kb1 = key_blocks(i0, i1, S, block_k, lo, hi)
    for kb in range(kb0, kb1):
        j0 = kb * block_k
        j1 = min(j0 + block_k, S)
        p = tile_view(p_buf, nr, j1 - j0)
        np.dot(q[i0:i1], k[j0:j1].T, p)
        probs_from_lse(p, False, scale, lse[i0:i1], tile_is_full(i0, i1, j0, j1, lo, hi), i0, j0,
                       lo, hi)
        dp = tile_view(dp_buf, nr, j1 - j0)
        np.dot(d_out[i0:i1], v[j0:j1].T, dp)
        dscores_in_place(p, dp, False, d[i0:i1])
        np.dot(dp, k[j0:j1], dq_tmp)
        add_into(dq_acc, dq_tmp)
    for r in range(nr):
        for e in range(E):
            dq[i0 + r, e] = dq_acc[r, e] * scale
'''),
]

VALID = [
    ('12.1', 'special cases as if statements, Horner in one expression, constants from math', '''
import math

LN2 = math.log(2.0)


def exp_f32(x):
    lo, hi = np.float32(-125.0 * LN2), np.float32(128.0 * LN2)
    xc = min(max(x, lo), hi)
    n = np.floor(xc * np.float32(1.0 / LN2) + np.float32(0.5))
    r = (xc - n * np.float32(0.693359375)) - n * np.float32(-2.12194440e-4)
    c2, c3, c4 = np.float32(1 / 2), np.float32(1 / 6), np.float32(1 / 24)
    c5, c6, c7 = np.float32(1 / 120), np.float32(1 / 720), np.float32(1 / 5040)
    one = np.float32(1.0)
    p = one + r * (one + r * (c2 + r * (c3 + r * (c4 + r * (c5 + r * (c6 + r * c7))))))
    y = p * pow2_f32(n - one) * np.float32(2.0)
    if x < lo:
        y = np.float32(0.0)
    if x > hi:
        y = np.float32(np.inf)
    if x != x:
        y = x
    return y
'''),
    ('12.1', 'the degree-7 polynomial by Estrin\'s scheme (errs up to 1.4 eps, all of it rounding)',
     _exp(_REDUCTION, tail='''
    r2 = r * r
    a = np.float32(1.0) + r
    b = np.float32(0.5) + r * np.float32(1.0 / 6.0)
    c = np.float32(1.0 / 24.0) + r * np.float32(1.0 / 120.0)
    d = np.float32(1.0 / 720.0) + r * np.float32(1.0 / 5040.0)
    r4 = r2 * r2
    p = (a + r2 * b) + r4 * (c + r2 * d)
''')),
    ('12.2', 'block-major items: head t % Hq, block zigzag(t // Hq)',
     _forward(block="zigzag(t // n_heads, n_blocks)")
     .replace("h = t // n_blocks", "h = t % n_heads")),
    ('12.2', 'zigzag over all items at once, then split into head and block', '''
def forward_parallel(q, k, v, out, lse, scale, lo, hi, block_q, block_k):
    n_heads, L = q.shape[0], q.shape[1]
    group = n_heads // k.shape[0]
    n_blocks = -(-L // block_q)
    n_items = n_heads * n_blocks
    for t in prange(n_items):
        h, qb = divmod(zigzag(t, n_items), n_blocks)
        i0 = qb * block_q
        forward_query_block(q[h], k[h // group], v[h // group], out[h], lse[h], i0,
                            min(L, i0 + block_q), scale, lo, hi, block_k)
'''),
    ('12.3', 'query-major tiles from plain NumPy products and a loop over the band', '''
def dq_query_block(q, k, kp, v, d_out, lse, d, dq, i0, i1, scale, lo, hi, block_k):
    S = k.shape[0]
    acc = np.zeros((i1 - i0, q.shape[1]), dtype=q.dtype)  # (bq, E)
    for j0 in range(0, S, block_k):
        j1 = min(S, j0 + block_k)
        s = np.dot(q[i0:i1], np.ascontiguousarray(k[j0:j1].T))  # (bq, bk)
        dpt = np.dot(d_out[i0:i1], np.ascontiguousarray(v[j0:j1].T))  # (bq, bk)
        ds = np.zeros_like(s)
        for r in range(i1 - i0):
            for c in range(j1 - j0):
                off = (j0 + c) - (i0 + r)
                if lo <= off <= hi:
                    p = np.exp(s[r, c] * scale - lse[i0 + r])
                    ds[r, c] = p * (dpt[r, c] - d[i0 + r])
        acc += np.dot(ds, np.ascontiguousarray(k[j0:j1]))  # (bq, E)
    dq[i0:i1] = acc * scale
'''),
    ('12.3', 'key-major tiles (the transposes copied once), key blocks walked by their first key, '
     'one slice write at the end', '''
def dq_query_block(q, k, kp, v, d_out, lse, d, dq, i0, i1, scale, lo, hi, block_k):
    rows, S = i1 - i0, k.shape[0]
    qt = np.ascontiguousarray(q[i0:i1].T)  # (E, bq)
    dot = np.ascontiguousarray(d_out[i0:i1].T)  # (Ev, bq)
    total = np.zeros((rows, q.shape[1]), dtype=q.dtype)  # (bq, E)
    part = np.empty_like(total)
    first, end = key_blocks(i0, i1, S, block_k, lo, hi)
    pt_buf = np.empty(rows * block_k, dtype=q.dtype)
    dst_buf = np.empty(rows * block_k, dtype=q.dtype)
    for start in range(first * block_k, end * block_k, block_k):
        stop = min(S, start + block_k)
        pt = tile_view(pt_buf, stop - start, rows)  # (bk, bq)
        dst = tile_view(dst_buf, stop - start, rows)  # (bk, bq)
        np.dot(k[start:stop], qt, pt)
        np.dot(v[start:stop], dot, dst)
        probs_from_lse(pt, True, scale, lse[i0:i1], tile_is_full(i0, i1, start, stop, lo, hi), i0,
                       start, lo, hi)
        dscores_in_place(pt, dst, True, d[i0:i1])
        np.dot(dst.T, k[start:stop], part)
        add_into(total, part)
    dq[i0:i1, :] = total * scale
'''),
]
