"""The flash attention forward pass as a parallel Numba kernel (chapter 12).

Same algorithm as :func:`attention_scratch.flash.forward_blocks` (FlashAttention-2
order: query blocks outside, key blocks inside), written for one query block at
a time so that the blocks of all heads can run in parallel:

* the two products per tile, ``S = Q_i K_jᵀ`` and ``P V_j``, go to BLAS through
  ``np.dot(a, b, out)`` on contiguous tiles (``K_jᵀ`` is a transposed view, which
  BLAS reads without a copy);
* the online softmax between them is a loop over the tile that LLVM vectorises,
  with the exponential of :mod:`.numba_exp`;
* tiles the mask leaves empty are never visited, tiles it keeps whole are not masked.

Layout: ``q`` (Hq', L, E), ``k`` (Hkv', S, E), ``v`` (Hkv', S, Ev), C-contiguous, where
``Hq' = N·Hq`` and ``Hkv' = N·Hkv`` fold the batch into the heads and query head
``h`` reads key/value head ``h // G``, ``G = Hq / Hkv``.
"""
import numpy as np
from numba import njit, prange

from .numba_exp import LOOP_FLAGS, fast_exp
from .numba_tiles import key_blocks, mask_tile, tile_is_full, tile_view


@njit(fastmath=LOOP_FLAGS, cache=True)
def online_softmax_tile(s, m, l, alpha):
    """Fold the scores ``s`` of one tile into the running max ``m`` and sum ``l``, in place.

    On return ``s`` holds ``exp(s - m_new)`` and ``alpha`` the factor ``exp(m_old - m_new)``
    that rescales the old output. ``s`` (bq, bk); ``m``, ``l``, ``alpha`` (bq,).
    """
    for r in range(s.shape[0]):
        m_new = m[r]
        for c in range(s.shape[1]):  # the row maximum, a vectorised reduction
            m_new = max(m_new, s[r, c])
        shift = m_new if m_new > -np.inf else np.float32(0.0)  # no key yet: keep -inf - 0 = -inf
        total = np.float32(0.0)
        for c in range(s.shape[1]):  # exponential and row sum, 8 or 16 lanes at a time
            p = fast_exp(s[r, c] - shift)
            s[r, c] = p
            total += p
        alpha[r] = fast_exp(m[r] - shift)  # 0 when m was -inf, 1 when the max did not move
        l[r] = l[r] * alpha[r] + total
        m[r] = m_new


@njit(fastmath=LOOP_FLAGS, cache=True)
def forward_query_block(q, k, v, out, lse, i0, i1, scale, lo, hi, block_k):
    """Rows ``i0..i1-1`` of one head: visit the key blocks the band allows, write ``out`` and ``lse``.

    Shapes: ``q`` (L, E), ``k`` (S, E), ``v`` (S, Ev), ``out`` (L, Ev), ``lse`` (L,).
    """
    nr, E, Ev, S = i1 - i0, q.shape[1], v.shape[1], k.shape[0]
    dtype = q.dtype
    q_blk = np.empty((nr, E), dtype=dtype)  # (bq, E): the block, pre-multiplied by the scale
    for r in range(nr):
        for e in range(E):
            q_blk[r, e] = q[i0 + r, e] * scale
    s_buf = np.empty(nr * block_k, dtype=dtype)  # room for one (bq, bk) tile
    pv_buf = np.empty((nr, Ev), dtype=dtype)  # (bq, Ev)
    o = np.zeros((nr, Ev), dtype=dtype)  # (bq, Ev): unnormalised output
    m = np.full(nr, -np.inf, dtype=dtype)  # (bq,) running maximum
    l = np.zeros(nr, dtype=dtype)  # (bq,) running sum
    alpha = np.empty(nr, dtype=dtype)  # (bq,) rescaling factor of the last tile
    kb0, kb1 = key_blocks(i0, i1, S, block_k, lo, hi)
    for kb in range(kb0, kb1):
        j0 = kb * block_k
        j1 = min(j0 + block_k, S)
        s = tile_view(s_buf, nr, j1 - j0)  # (bq, bk), contiguous even for the ragged last tile
        np.dot(q_blk, k[j0:j1].T, s)  # (bq, E) @ (E, bk) -> (bq, bk), BLAS
        if not tile_is_full(i0, i1, j0, j1, lo, hi):
            mask_tile(s, i0, j0, lo, hi, -np.inf)
        online_softmax_tile(s, m, l, alpha)  # s <- exp(s - m)
        np.dot(s, v[j0:j1], pv_buf)  # (bq, bk) @ (bk, Ev) -> (bq, Ev), BLAS
        for r in range(nr):
            a = alpha[r]
            for e in range(Ev):
                o[r, e] = o[r, e] * a + pv_buf[r, e]
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


def forward_parallel(q, k, v, out, lse, scale, lo, hi, block_q, block_k):
    """Run :func:`forward_query_block` on every (query head, query block), spread over the cores.

    One flat ``prange`` over ``Hq' · ceil(L / block_q)`` work items: item ``t`` is head
    ``h = t // n_blocks`` and query block ``t % n_blocks``, taken from the last block
    backwards (under a causal mask the last blocks see the most keys, so the
    longest items start first). Query head ``h`` reads key/value head ``h // G``
    with ``G = Hq' / Hkv'``. Each item writes only its own rows of ``out`` and ``lse``,
    so the items need no locks. Shapes: ``q`` (Hq', L, E), ``k`` (Hkv', S, E),
    ``v`` (Hkv', S, Ev), ``out`` (Hq', L, Ev), ``lse`` (Hq', L). Compiled with
    ``parallel=True``; in plain Python ``prange`` is ``range``.
    """
    n_heads, L = q.shape[0], q.shape[1]
    group = n_heads // k.shape[0]
    n_blocks = (L + block_q - 1) // block_q
    for t in prange(n_heads * n_blocks):
        h = t // n_blocks
        qb = n_blocks - 1 - t % n_blocks  # heavy blocks first
        i0 = qb * block_q
        i1 = min(i0 + block_q, L)
        forward_query_block(q[h], k[h // group], v[h // group], out[h], lse[h], i0, i1, scale,
                            lo, hi, block_k)




forward_parallel = njit(parallel=True, fastmath=LOOP_FLAGS, cache=True)(forward_parallel)
