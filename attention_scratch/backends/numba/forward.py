"""The flash attention forward pass as a parallel Numba kernel (chapter 12).

Same algorithm as :func:`attention_scratch.flash.forward_blocks` (FlashAttention-2
order: query blocks outside, key blocks inside), written for one query block at
a time so that the blocks of all heads can run in parallel:

* the two products per tile, ``Sᵀ = K_j Q_iᵀ`` and ``P V_j``, go to BLAS through
  ``np.dot(a, b, out)`` on contiguous tiles; the query block is transposed once
  (``Q_iᵀ``, a copy) and ``P = (Pᵀ)ᵀ`` is a transposed view that BLAS reads
  without a copy, so both products are of the fast kinds ``A @ B`` and ``Aᵀ @ B``;
* the online softmax between them runs on the key-major tile (see
  :mod:`.tiles`) in loops that LLVM vectorises, with the exponential of
  :mod:`.exp`;
* tiles the mask leaves empty are never visited, tiles it keeps whole are not masked.

Layout: ``q`` (Hq', L, E), ``k`` (Hkv', S, E), ``v`` (Hkv', S, Ev), C-contiguous, where
``Hq' = N·Hq`` and ``Hkv' = N·Hkv`` fold the batch into the heads and query head
``h`` reads key/value head ``h // G``, ``G = Hq / Hkv``.
"""
import numpy as np
from numba import njit, prange

from .exp import LOOP_FLAGS, tile_exp
from .tiles import key_blocks, mask_tile, tile_is_full, tile_view, zigzag


@njit(fastmath=LOOP_FLAGS, cache=True)
def online_softmax_tile(t, m, l, alpha, shift):
    """Fold one key-major tile of scores into the running max ``m`` and sum ``l``, in place.

    On return ``t`` holds ``exp(t - m_new)`` and ``alpha`` the factor ``exp(m_old - m_new)``
    that rescales the old output; ``shift`` is scratch. ``t`` (bk, bq); ``m``, ``l``,
    ``alpha``, ``shift`` (bq,). Each loop runs along the queries, the contiguous axis.

    The running maximum is ``np.maximum``, which LLVM compiles to a compare, a blend and a
    plain store. Python's ``max(a, b)`` is "keep ``a`` unless ``b > a``", and a store of
    "the value already there, or a new one" LLVM compiles to a *masked* store
    (``vmaskmovps``); the AMD EPYC of chapter 12 runs it so slowly that the max loop took
    as long as the exponentials (0.47 against 0.08 ns per score on a 256 x 256 tile). For the
    same reason no loop here stores back into an entry a value it read from that entry.
    A NaN score makes its query's maximum NaN, and so its output NaN, as before.
    """
    n_keys, n_rows = t.shape
    for r in range(n_rows):
        alpha[r] = m[r]  # the old maxima, for a moment
    for c in range(n_keys):  # the new maxima: an elementwise max of rows, not a reduction
        for r in range(n_rows):  # np.maximum, not max(): see the note above
            m[r] = np.maximum(m[r], t[c, r])
    for r in range(n_rows):
        shift[r] = m[r] if m[r] > -np.inf else 0.0  # no key yet: exp(-inf - 0) = 0, not NaN
        alpha[r] = tile_exp(alpha[r] - shift[r])  # 0 when m was -inf, 1 when it did not move
        l[r] = l[r] * alpha[r]
    for c in range(n_keys):  # exponentials and running sums, 8 or 16 queries at a time
        for r in range(n_rows):
            p = tile_exp(t[c, r] - shift[r])
            t[c, r] = p
            l[r] += p


@njit(fastmath=LOOP_FLAGS, cache=True)
def forward_query_block(q, k, v, out, lse, i0, i1, scale, lo, hi, block_k):
    """Rows ``i0..i1-1`` of one head: visit the key blocks the band allows, write ``out`` and
    ``lse``.

    Shapes: ``q`` (L, E), ``k`` (S, E), ``v`` (S, Ev), ``out`` (L, Ev), ``lse`` (L,).
    """
    nr, E, Ev, S = i1 - i0, q.shape[1], v.shape[1], k.shape[0]
    dtype = q.dtype
    q_t = np.empty((E, nr), dtype=dtype)  # (E, bq): the block, transposed, times the scale
    for r in range(nr):
        for e in range(E):
            q_t[e, r] = q[i0 + r, e] * scale
    t_buf = np.empty(block_k * nr, dtype=dtype)  # room for one (bk, bq) tile
    pv = np.empty((nr, Ev), dtype=dtype)  # (bq, Ev)
    o = np.zeros((nr, Ev), dtype=dtype)  # (bq, Ev): unnormalised output
    m = np.full(nr, -np.inf, dtype=dtype)  # (bq,) running maximum
    l = np.zeros(nr, dtype=dtype)  # (bq,) running sum
    alpha = np.empty(nr, dtype=dtype)  # (bq,) rescaling factor of the last tile
    shift = np.empty(nr, dtype=dtype)  # (bq,) scratch
    kb0, kb1 = key_blocks(i0, i1, S, block_k, lo, hi)
    for kb in range(kb0, kb1):
        j0 = kb * block_k
        j1 = min(j0 + block_k, S)
        t = tile_view(t_buf, j1 - j0, nr)  # (bk, bq), contiguous even for a ragged last tile
        np.dot(k[j0:j1], q_t, t)  # (bk, E) @ (E, bq) -> (bk, bq): the scores Sᵀ, BLAS
        if not tile_is_full(i0, i1, j0, j1, lo, hi):
            mask_tile(t, True, i0, j0, lo, hi, -np.inf)
        online_softmax_tile(t, m, l, alpha, shift)  # t <- exp(Sᵀ - m)
        np.dot(t.T, v[j0:j1], pv)  # (bq, bk) @ (bk, Ev) -> (bq, Ev), BLAS
        for r in range(nr):
            a = alpha[r]
            for e in range(Ev):
                o[r, e] = o[r, e] * a + pv[r, e]
    for r in range(nr):  # normalise once; empty rows: output 0, lse +inf
        if l[r] > 0:
            inv = 1.0 / l[r]
            for e in range(Ev):
                out[i0 + r, e] = o[r, e] * inv
            lse[i0 + r] = m[r] + np.log(l[r])
        else:
            for e in range(Ev):
                out[i0 + r, e] = 0.0
            lse[i0 + r] = np.inf


# BEGIN EXERCISE 12.2 (3 points): the parallel loop over (head, query block)
# uses: from numba import prange
# uses: from attention_scratch.backends.numba.forward import forward_query_block
# uses: from attention_scratch.backends.numba.tiles import zigzag
def forward_parallel(q, k, v, out, lse, scale, lo, hi, block_q, block_k):
    """Run :func:`forward_query_block` on every (query head, query block), spread over the cores.

    One flat ``prange`` over ``Hq' · ceil(L / block_q)`` work items: item ``t`` is head
    ``h = t // n_blocks`` and query block ``zigzag(t % n_blocks, n_blocks)`` (under a
    causal mask the last blocks see the most keys; ``zigzag`` pairs long with short
    items so that every thread's share of the loop holds about the same work). Query head ``h``
    reads key/value head ``h // G``
    with ``G = Hq' / Hkv'``. Each item writes only its own rows of ``out`` and ``lse``,
    so the items need no locks. Shapes: ``q`` (Hq', L, E), ``k`` (Hkv', S, E),
    ``v`` (Hkv', S, Ev), ``out`` (Hq', L, Ev), ``lse`` (Hq', L). Compiled with
    ``parallel=True``; in plain Python ``prange`` is ``range``.
    """
    # BEGIN SOLUTION
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
    # END SOLUTION


# END EXERCISE


forward_parallel = njit(parallel=True, fastmath=LOOP_FLAGS, cache=True)(forward_parallel)
