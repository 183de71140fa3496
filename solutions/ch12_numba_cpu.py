"""Chapter 12 solutions: A Numba CPU kernel.

Written by `make exercises` from the library source; do not edit.
Grade them with: python -m attention_scratch.grade --solutions --chapter 12
"""


import numpy as np
from numba import prange

from attention_scratch.backends.numba.exp import pow2_f32
from attention_scratch.backends.numba.forward import forward_query_block
from attention_scratch.backends.numba.register_tile import tile_scores
from attention_scratch.backends.numba.tiles import (
    add_into,
    dscores_in_place,
    key_blocks,
    probs_from_lse,
    tile_is_full,
    tile_view,
    zigzag,
)


# Exercise 12.1 (3 points): a vectorisable float32 exponential
def exp_f32(x):
    """``e**x`` for a float32 ``x`` from operations LLVM can vectorise (no call to ``expf``).

    Steps: clamp ``x`` to ``[XMIN, XMAX]`` = ``[-125 ln2, 128 ln2]``;
    ``n = floor(x·log2(e) + 1/2)``;
    ``r = (x - n·ln2_hi) - n·ln2_lo`` with ``ln2_hi = 0.693359375`` and ``ln2_lo = -2.12194440e-4``;
    ``p = Σ_{k=0..7} r^k / k!`` in Horner form; the result is ``p · pow2_f32(n - 1) · 2``.
    Then the special cases, as selects: ``x < XMIN`` (``-inf`` included) gives 0, ``x > XMAX``
    gives ``+inf``, NaN gives NaN; ``x`` equal to an end of the range is inside it. The relative
    error stays within 2 eps of float32 over the whole range, and only rounding may cause it: the
    tests also look for the systematic error that a polynomial of degree 6 leaves. Keep every
    constant a ``np.float32`` so the arithmetic stays in float32 (a Python float would promote it
    to float64 and halve the SIMD width).
    """
    xc = min(max(x, np.float32(-86.64339)), np.float32(88.72284))  # [XMIN, XMAX]; NaN: last line
    n = np.floor(xc * np.float32(1.442695) + np.float32(0.5))  # nearest whole number to x / ln2
    r = (xc - n * np.float32(0.693359375)) - n * np.float32(-2.12194440e-4)  # |r| <= ln2 / 2
    p = np.float32(1.0 / 5040.0)  # Horner: 1 + r(1 + r/2(1 + r/3(...)))
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    y = p * pow2_f32(n - np.float32(1.0)) * np.float32(2.0)
    y = np.float32(0.0) if x < np.float32(-86.64339) else y  # -inf, and results below 2^-125
    y = np.float32(np.inf) if x > np.float32(88.72284) else y
    return x if x != x else y  # NaN in, NaN out


# Exercise 12.2 (3 points): the parallel loop over (head, query block)
def forward_parallel(q, k, v, out, lse, scale, lo, hi, block_q, block_k):
    """Run :func:`forward_query_block` on every (query head, query block), spread over the cores.

    One flat ``prange`` over ``Hq' · ceil(L / block_q)`` work items: item ``t`` is head
    ``h = t // n_blocks`` and query block ``zigzag(t % n_blocks, n_blocks)`` (under a
    causal mask the last blocks see the most keys; ``zigzag`` pairs long with short
    items so that every thread's share of the loop holds about the same work). Query head ``h``
    reads key/value head ``h // G``
    with ``G = Hq' / Hkv'``. Each item writes only its own rows of ``out`` and ``lse``,
    so the items need no locks. Shapes: ``q`` (Hq', L, E); ``k`` and ``v`` the keys and values
    packed for the register tiles, one head per entry of the first axis
    (:func:`.register_tile.pack_heads`, :func:`.register_tile.pack_columns`); ``out``
    (Hq', L, Ev); ``lse`` (Hq', L).
    Compiled with ``parallel=True``; in plain Python ``prange`` is ``range``.
    """
    n_heads, L = q.shape[0], q.shape[1]
    group = n_heads // k.shape[0]
    n_blocks = (L + block_q - 1) // block_q
    for t in prange(n_heads * n_blocks):
        h = t // n_blocks
        qb = zigzag(t % n_blocks, n_blocks)  # long and short blocks alternate
        i0 = qb * block_q
        i1 = min(i0 + block_q, L)
        forward_query_block(q[h], k[h // group], v[h // group], out[h], lse[h], i0, i1, scale,
                            lo, hi, block_k)


# Exercise 12.3 (3 points): the dQ pass for one query block
def dq_query_block(q, k, kp, v, d_out, lse, d, dq, i0, i1, scale, lo, hi, block_k):
    """``dQ`` of rows ``i0..i1-1`` of one head: ``dQ_i = scale · Σ_j dS_ij K_j`` over the key blocks
    it sees.

    For each key block ``j`` (from ``key_blocks``), with query-major ``(bq, bk)`` tiles
    (``tile_view`` of a flat buffer): the scores ``S = Q_i K_jᵀ`` with
    ``tile_scores(q, i0, i1, kp, kb, block_k, tile)``, the forward pass's own product (so that
    ``exp(S - lse)`` is exact), turned into ``P`` in place by ``probs_from_lse`` (pass
    ``tile_is_full(...)`` so that only tiles cut by the band are masked); the other products
    with ``np.dot(a, b, out)``:
    ``dP = dO_i V_jᵀ`` into a second tile; ``dscores_in_place(P, dP, False, D_i)``; then
    ``dS K_j`` into a scratch ``(bq, E)`` array, added to an accumulator with
    ``add_into``. Finally ``dq[i0:i1] = scale · accumulator``. Write no other
    rows of ``dq`` and change no input; every scratch array has the dtype of ``q``
    (the kernel is compiled for float32 and for float64).
    Shapes: ``q``, ``dq`` (L, E); ``k`` (S, E); ``kp`` the keys packed for ``block_k``
    (:func:`.register_tile.pack_blocks`); ``v`` (S, Ev); ``d_out`` (L, Ev); ``lse``, ``d`` (L,).
    """
    nr, E, S = i1 - i0, q.shape[1], k.shape[0]
    dq_acc = np.zeros((nr, E), dtype=q.dtype)  # (bq, E)
    dq_tmp = np.empty((nr, E), dtype=q.dtype)  # (bq, E)
    p_buf = np.empty(nr * block_k, dtype=q.dtype)
    dp_buf = np.empty(nr * block_k, dtype=q.dtype)
    kb0, kb1 = key_blocks(i0, i1, S, block_k, lo, hi)
    for kb in range(kb0, kb1):
        j0 = kb * block_k
        j1 = min(j0 + block_k, S)
        p = tile_view(p_buf, nr, j1 - j0)  # (bq, bk)
        tile_scores(q, i0, i1, kp, kb, block_k, p)  # S: (bq, E) @ (E, bk), the forward's
        full = tile_is_full(i0, i1, j0, j1, lo, hi)
        probs_from_lse(p, False, scale, lse[i0:i1], full, i0, j0, lo, hi)
        dp = tile_view(dp_buf, nr, j1 - j0)  # (bq, bk)
        np.dot(d_out[i0:i1], v[j0:j1].T, dp)  # dP: (bq, Ev) @ (Ev, bk)
        dscores_in_place(p, dp, False, d[i0:i1])  # dp <- dS
        np.dot(dp, k[j0:j1], dq_tmp)  # dS K: (bq, bk) @ (bk, E) -> (bq, E)
        add_into(dq_acc, dq_tmp)
    for r in range(nr):
        for e in range(E):
            dq[i0 + r, e] = dq_acc[r, e] * scale
