"""The flash attention forward pass as a parallel Numba kernel (chapter 12).

Same algorithm as :func:`attention_scratch.flash.forward_blocks` (FlashAttention-2
order: query blocks outside, key blocks inside), written for one query block at
a time so that the blocks of all heads can run in parallel:

* the two products per tile, ``S = Q_i K_jᵀ`` and ``P V_j``, go to BLAS through
  ``np.dot(a, b, out)`` on contiguous tiles, with the scale folded into a copy of the
  query block; the tile is query-major, ``(bq, bk)``, so that ``P V_j`` is a plain
  ``A @ B`` (reading a key-major ``Pᵀ`` through a transposed view made that product 14%
  slower at 256 × 256 with OpenBLAS, which copies each operand into its own order before
  it multiplies, at a cost that depends on the operand's layout);
* the online softmax between them reduces along the tile's rows in loops that LLVM
  vectorises (:func:`.tiles.row_max`), with the exponential of :mod:`.exp`;
* tiles the mask leaves empty are never visited, tiles it keeps whole are not masked.

Layout: ``q`` (Hq', L, E), ``k`` (Hkv', S, E), ``v`` (Hkv', S, Ev), C-contiguous, where
``Hq' = N·Hq`` and ``Hkv' = N·Hkv`` fold the batch into the heads and query head
``h`` reads key/value head ``h // G``, ``G = Hq / Hkv``.
"""
import numpy as np
from numba import njit, prange

from .exp import LOOP_FLAGS, tile_exp
from .tiles import key_blocks, mask_tile, row_max, tile_is_full, tile_view, zigzag


@njit(fastmath=LOOP_FLAGS, cache=True)
def row_exp_sum(row, shift, total):
    """In place: ``row <- exp(row - shift)``; returns ``total`` plus the sum of the new ``row``."""
    for c in range(row.shape[0]):
        p = tile_exp(row[c] - shift)
        row[c] = p
        total += p
    return total


@njit(fastmath=LOOP_FLAGS, cache=True)
def online_softmax_rows(t, m, l, alpha, shift):
    """Fold one query-major tile of scores into the running max ``m`` and sum ``l``, in place.

    On return ``t`` holds ``exp(t - m_new)`` and ``alpha`` the factor ``exp(m_old - m_new)``
    that rescales the old output; ``shift`` is scratch. ``t`` (bq, bk); ``m``, ``l``,
    ``alpha``, ``shift`` (bq,). Each query's maximum and sum are reductions along its row,
    the contiguous axis: :func:`.tiles.row_max` and the sum in :func:`row_exp_sum` both
    compile to SIMD loops. A NaN score makes its query's maximum NaN, and so its output NaN.
    """
    for r in range(t.shape[0]):
        m_new = row_max(t[r], m[r])
        # an entry of shift, not a local: a local holding 0.0 would be typed float64, and the
        # row's exponentials with it
        shift[r] = m_new if m_new > -np.inf else 0.0  # no key yet: exp(-inf - 0) = 0, not NaN
        alpha[r] = tile_exp(m[r] - shift[r])  # 0 when m was -inf, 1 when it did not move
        m[r] = m_new
        l[r] = row_exp_sum(t[r], shift[r], l[r] * alpha[r])


@njit(fastmath=LOOP_FLAGS, cache=True)
def forward_query_block(q, k, v, out, lse, i0, i1, scale, lo, hi, block_k):
    """Rows ``i0..i1-1`` of one head: visit the key blocks the band allows, write ``out`` and
    ``lse``.

    Shapes: ``q`` (L, E), ``k`` (S, E), ``v`` (S, Ev), ``out`` (L, Ev), ``lse`` (L,).
    """
    nr, E, Ev, S = i1 - i0, q.shape[1], v.shape[1], k.shape[0]
    dtype = q.dtype
    q_s = np.empty((nr, E), dtype=dtype)  # (bq, E): the block times the scale
    for r in range(nr):
        for e in range(E):
            q_s[r, e] = q[i0 + r, e] * scale
    t_buf = np.empty(nr * block_k, dtype=dtype)  # room for one (bq, bk) tile
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
        t = tile_view(t_buf, nr, j1 - j0)  # (bq, bk), contiguous even for a ragged last tile
        np.dot(q_s, k[j0:j1].T, t)  # (bq, E) @ (E, bk) -> (bq, bk): the scores S, BLAS
        if not tile_is_full(i0, i1, j0, j1, lo, hi):
            mask_tile(t, False, i0, j0, lo, hi, -np.inf)
        online_softmax_rows(t, m, l, alpha, shift)  # t <- exp(S - m)
        np.dot(t, v[j0:j1], pv)  # (bq, bk) @ (bk, Ev) -> (bq, Ev), BLAS
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
