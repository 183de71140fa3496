"""The flash attention backward pass as parallel Numba kernels (chapter 12).

The NumPy reference (:func:`attention_scratch.flash.backward_blocks`) walks key
blocks outside and query blocks inside, adding into ``dQ`` from every key block.
Run in parallel over key blocks, those additions would race. Two race-free
ways out are implemented.

**Two passes** (:func:`kv_parallel` then :func:`dq_parallel`), each writing only rows it owns:

1. :func:`kv_parallel`, one item per (key/value head, key block): recompute
   ``P = exp(Q_i K_jᵀ·scale - lse_i)`` for every query block ``i`` (of every query
   head of the group) and accumulate ``dV_j += Pᵀ dO_i`` and
   ``dK_j += dSᵀ Q_i · scale`` with ``dS = P ∘ (dO_i V_jᵀ - D_i)``, on query-major
   ``(bq, bk)`` tiles as in the forward pass, so that the scores are the forward pass's
   own product ``Q_i K_jᵀ`` (see below);
2. :func:`dq_parallel`, one item per (query head, query block): recompute ``P``
   and ``dS`` for every key block and accumulate ``dQ_i += dS K_j · scale``, on the
   same tiles.

The price is recomputing ``S`` and ``dP`` in the second pass: 7 tile products
instead of 5.

**One pass with private dQ** (:func:`fused_parallel`, the default): one item per
(key/value head, chunk of its key blocks) computes ``dK_j``, ``dV_j`` *and* the
contributions ``dS K_j`` to ``dQ``, which it adds into its own copy of ``dQ``
(one copy per chunk); the copies are summed afterwards. 5 products per tile,
at the price of ``chunks`` copies of ``dQ`` in memory.

``D = rowsum(dO ∘ O)`` is computed once, before the kernels. Layout as in
:mod:`.forward`; ``lse`` and ``d`` are (Hq', L).

**The same scores as the forward pass.** ``P = exp(S - lse)`` is exact only if ``S`` is,
bit for bit, the score the forward pass summed into ``lse``: at large logits a difference
of one rounding in ``S`` is a large relative change of ``P`` (at scale 1e4 the columns of
``dV`` summed to 7.9937 instead of 8). The forward computes ``(Q_i·scale) K_jᵀ`` on
query-major tiles; so every kernel here computes exactly that product, on tiles of the same
shapes, from a ``q`` the caller has already multiplied by the scale (passing ``scale = 1``;
:func:`attention_scratch.backends.numba.cpu.flash_attention_backward` does, and multiplies
``dQ`` by the scale at the end). BLAS does not promise ``A Bᵀ = (B Aᵀ)ᵀ`` bit for bit (with
OpenBLAS 0.3.30, 3291 of the 65536 scores of a 256 × 256 tile differ in their last bits).
"""
import numpy as np
from numba import njit, prange

from .exp import LOOP_FLAGS
from .register_tile import (
    TILE_ROWS,
    pack_columns,
    pack_heads,
    packed_columns_shape,
    packed_heads_shape,
    tile_product,
    tile_scores,
)
from .tiles import (
    add_into,
    dscores_in_place,
    key_blocks,
    probs_from_lse,
    query_blocks,
    tile_is_full,
    tile_view,
    zigzag,
)


def dq_chunks(n_kv, n_key_blocks, min_items=16):
    """How many private copies of ``dQ`` the one-pass backward uses: enough for ``min_items`` work
    items.

    It depends on the shapes only, never on the thread count, so that the
    result is the same on every machine.
    """
    return max(1, min(n_key_blocks, -(-min_items // max(n_kv, 1))))


@njit(fastmath=LOOP_FLAGS, cache=True)
def kv_key_block(q, v, d_out, packed, lse, d, dk, dv, dq_acc, with_dq, c, group, kb, scale, lo,
                 hi, block_q, block_k):
    """``dK`` and ``dV`` of key block ``kb`` of key/value head ``c``, summed over its query heads.

    With ``with_dq`` it also adds this key block's ``dS K_j`` (unscaled) to ``dq_acc``.
    Shapes: ``q``, ``d_out``, ``dq_acc`` (Hq', L, ·); ``v``, ``dk``, ``dv`` (Hkv', S, ·);
    ``lse``, ``d`` (Hq', L); ``packed`` = ``(kp, vp, kc, qc, doc)``, the operands of the
    register tiles (:func:`pack_operands`).
    """
    kp, vp, kc, qc, doc = packed
    S, L, E, Ev = dk.shape[1], q.shape[1], q.shape[2], v.shape[2]
    j0 = kb * block_k
    j1 = min(j0 + block_k, S)
    nc = j1 - j0
    dtype = q.dtype
    rows_k = (nc + TILE_ROWS - 1) // TILE_ROWS * TILE_ROWS  # the key rows in whole strips
    rows_q = (block_q + TILE_ROWS - 1) // TILE_ROWS * TILE_ROWS
    dk_acc = np.zeros((nc, E), dtype=dtype)  # (bk, E)
    dv_acc = np.zeros((nc, Ev), dtype=dtype)  # (bk, Ev)
    dk_tmp = np.empty((rows_k, kc.shape[1] * kc.shape[3]), dtype=dtype)  # (bk', E')
    dv_tmp = np.empty((rows_k, doc.shape[1] * doc.shape[3]), dtype=dtype)  # (bk', Ev')
    dq_tmp = np.empty((rows_q, kc.shape[1] * kc.shape[3]), dtype=dtype)  # (bq', E')
    # tiles with a strip's worth of slack after them: the register tiles read past their ends
    p_buf = np.zeros(rows_q * nc + TILE_ROWS, dtype=dtype)
    dp_buf = np.zeros(rows_q * nc + TILE_ROWS, dtype=dtype)
    qb0, qb1 = query_blocks(j0, j1, L, block_q, lo, hi)
    for g in range(group):
        h = c * group + g
        for qb in range(qb0, qb1):
            i0 = qb * block_q
            i1 = min(i0 + block_q, L)
            nr = i1 - i0
            p = tile_view(p_buf, nr, nc)  # (bq, bk), query-major as in the forward
            tile_scores(q[h], i0, i1, kp[c], kb, block_k, p)  # S = Q_i K_jᵀ, the forward's
            probs_from_lse(p, False, scale, lse[h, i0:i1], tile_is_full(i0, i1, j0, j1, lo, hi),
                           i0, j0, lo, hi)
            tile_product(p, True, nc, doc[h], i0, nr, dv_tmp)  # Pᵀ dO: (bk, bq) @ (bq, Ev)
            add_into(dv_acc, dv_tmp[:nc, :Ev])
            dp = tile_view(dp_buf, nr, nc)  # (bq, bk)
            tile_scores(d_out[h], i0, i1, vp[c], kb, block_k, dp)  # dP = dO_i V_jᵀ (bq, bk)
            dscores_in_place(p, dp, False, d[h, i0:i1])  # dp <- dS = P ∘ (dP - D)
            tile_product(dp, True, nc, qc[h], i0, nr, dk_tmp)  # dSᵀ Q: (bk, bq) @ (bq, E)
            add_into(dk_acc, dk_tmp[:nc, :E])
            if with_dq:
                tile_product(dp, False, nr, kc[c], j0, nc, dq_tmp)  # dS K: (bq, bk) @ (bk, E)
                add_into(dq_acc[h, i0:i1], dq_tmp[:nr, :E])
    for r in range(nc):
        for e in range(E):
            dk[c, j0 + r, e] = dk_acc[r, e] * scale
        for e in range(Ev):
            dv[c, j0 + r, e] = dv_acc[r, e]


def pack_operands(q, k, v, d_out, block_k, scratch=None):
    """The register tiles' operands for the backward kernels: ``(kp, vp, kc, qc, doc)``, the keys
    and values packed as ``Kᵀ`` and ``Vᵀ`` blocks for ``S`` and ``dP``
    (:func:`.register_tile.pack_heads`), and the keys, queries and output gradients in blocks
    of columns for ``dS K``, ``dSᵀ Q`` and ``Pᵀ dO`` (:func:`.register_tile.pack_columns`).
    ``scratch(name, shape, dtype)``, if given, provides the arrays (:mod:`.workspace`)."""
    def room(name, shape):
        return None if scratch is None else scratch(name, shape, q.dtype)

    return (pack_heads(k, block_k, room("kp", packed_heads_shape(k, block_k))),
            pack_heads(v, block_k, room("vp", packed_heads_shape(v, block_k))),
            pack_columns(k, room("kc", packed_columns_shape(k))),
            pack_columns(q, room("qc", packed_columns_shape(q))),
            pack_columns(d_out, room("doc", packed_columns_shape(d_out))))


@njit(parallel=True, fastmath=LOOP_FLAGS, cache=True)
def kv_parallel(q, v, d_out, packed, lse, d, dk, dv, scale, lo, hi, block_q, block_k):
    """Pass 1: :func:`kv_key_block` for every (key/value head, key block), in parallel."""
    n_kv, S = dk.shape[0], dk.shape[1]
    group = q.shape[0] // n_kv
    n_blocks = (S + block_k - 1) // block_k
    no_dq = np.empty((1, 1, 1), dtype=q.dtype)
    for t in prange(n_kv * n_blocks):
        c = t // n_blocks
        kb = zigzag(t % n_blocks, n_blocks)  # long and short blocks alternate
        kv_key_block(q, v, d_out, packed, lse, d, dk, dv, no_dq, False, c, group, kb, scale, lo,
                     hi, block_q, block_k)


@njit(parallel=True, fastmath=LOOP_FLAGS, cache=True)
def fused_parallel(q, v, d_out, packed, lse, d, dk, dv, dq_parts, scale, lo, hi, block_q,
                   block_k):
    """One pass: every (key/value head, chunk) item does its key blocks with :func:`kv_key_block`.

    Chunk ``ch`` of ``C = dq_parts.shape[0]`` takes key blocks ``ch, ch + C, ...``
    (strided, so that under a causal mask every chunk gets long and short blocks)
    and adds its ``dQ`` contributions into ``dq_parts[ch]`` (C, Hq', L, E), unscaled.
    The chunks of a head are handed out in ``zigzag`` order: with one key block per chunk
    (``C`` as large as the number of blocks, as for one head) chunk 0 is the longest under a
    causal mask and chunk ``C - 1`` the shortest: in order, the thread given the first half of
    a head's chunks had 100 tiles to do and the other 36 (one head, N = 4096, 256 x 256 tiles).
    """
    n_kv, S = dk.shape[0], dk.shape[1]
    group = q.shape[0] // n_kv
    n_chunks = dq_parts.shape[0]
    n_blocks = (S + block_k - 1) // block_k
    for t in prange(n_kv * n_chunks):
        c = t // n_chunks
        ch = zigzag(t % n_chunks, n_chunks)  # under a causal mask chunk 0 is the longest
        for kb in range(ch, n_blocks, n_chunks):
            kv_key_block(q, v, d_out, packed, lse, d, dk, dv, dq_parts[ch], True, c, group, kb,
                         scale, lo, hi, block_q, block_k)


# BEGIN EXERCISE 12.3 (3 points): the dQ pass for one query block
# uses: from attention_scratch.backends.numba.tiles import add_into, dscores_in_place, key_blocks
# uses: from attention_scratch.backends.numba.tiles import probs_from_lse, tile_is_full, tile_view
# uses: from attention_scratch.backends.numba.register_tile import tile_scores
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
    # BEGIN SOLUTION
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
    # END SOLUTION


# END EXERCISE


dq_query_block = njit(fastmath=LOOP_FLAGS, cache=True)(dq_query_block)


@njit(parallel=True, fastmath=LOOP_FLAGS, cache=True)
def dq_parallel(q, k, kp, v, d_out, lse, d, dq, scale, lo, hi, block_q, block_k):
    """Pass 2: :func:`dq_query_block` for every (query head, query block), in parallel."""
    n_heads, L = q.shape[0], q.shape[1]
    group = n_heads // k.shape[0]
    n_blocks = (L + block_q - 1) // block_q
    for t in prange(n_heads * n_blocks):
        h = t // n_blocks
        qb = zigzag(t % n_blocks, n_blocks)  # long and short blocks alternate
        i0 = qb * block_q
        dq_query_block(q[h], k[h // group], kp[h // group], v[h // group], d_out[h], lse[h], d[h],
                       dq[h], i0, min(i0 + block_q, L), scale, lo, hi, block_k)
