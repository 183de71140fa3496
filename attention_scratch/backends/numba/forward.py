"""The flash attention forward pass as a parallel Numba kernel (chapter 12).

Same algorithm as :func:`attention_scratch.flash.forward_blocks` (FlashAttention-2
order: query blocks outside, key blocks inside), written for one query block at
a time so that the blocks of all heads can run in parallel:

* six query rows at a time (a strip), the two products ``S = Q_i K_jᵀ`` and ``P V_j`` are
  computed by the register tiles of :mod:`.register_tile`, with the scale folded into a copy
  of the query block; the strip is query-major, one row per query;
* the online softmax between them reduces along the strip's rows in loops that LLVM
  vectorises (:func:`.tiles.row_max`), with the exponential of :mod:`.exp`;
* tiles the mask leaves empty are never visited, tiles it keeps whole are not masked.

Layout: ``q`` (Hq', L, E), ``k`` (Hkv', S, E) and ``v`` (Hkv', S, Ev), C-contiguous (``k``
and ``v`` packed by :func:`.register_tile.pack_heads` and :func:`.register_tile.pack_columns`),
where
``Hq' = N·Hq`` and ``Hkv' = N·Hkv`` fold the batch into the heads and query head
``h`` reads key/value head ``h // G``, ``G = Hq / Hkv``.
"""
import numpy as np
from numba import njit, prange

from .exp import LOOP_FLAGS, shifted_exp
from .register_tile import TILE_ROWS, chunks, strip_scores, tile_cols_of, tile_product
from .tiles import key_blocks, mask_tile, row_max, tile_is_full, zigzag


@njit(fastmath=LOOP_FLAGS, cache=True)
def row_exp_sum(row, shift, total):
    """In place: ``row <- exp(row - shift)``; returns ``total`` plus the sum of the new ``row``."""
    for c in range(row.shape[0]):
        p = shifted_exp(row[c] - shift)  # row[c] <= shift, the row's maximum
        row[c] = p
        total += p
    return total


@njit(fastmath=LOOP_FLAGS, cache=True)
def online_softmax_rows(t, n_cols, m, l, alpha, shift):
    """Fold the first ``n_cols`` scores of each row of ``t`` into the running max ``m`` and sum
    ``l``, in place.

    On return ``t[:, :n_cols]`` holds ``exp(t - m_new)`` and ``alpha`` the factor
    ``exp(m_old - m_new)`` that rescales the old output; ``shift`` is scratch. ``t`` (rows, >=
    n_cols); ``m``, ``l``, ``alpha``, ``shift`` (rows,). Each query's maximum and sum are
    reductions along its row, the contiguous axis: :func:`.tiles.row_max` and the sum in
    :func:`row_exp_sum` both compile to SIMD loops. A NaN score makes its query's maximum NaN,
    and so its output NaN.
    """
    for r in range(t.shape[0]):
        row = t[r, :n_cols]
        m_new = row_max(row, m[r])
        # an entry of shift, not a local: a local holding 0.0 would be typed float64, and the
        # row's exponentials with it
        shift[r] = m_new if m_new > -np.inf else 0.0  # no key yet: exp(-inf - 0) = 0, not NaN
        alpha[r] = shifted_exp(m[r] - shift[r])  # 0 when m was -inf, 1 when it did not move
        m[r] = m_new
        l[r] = row_exp_sum(row, shift[r], l[r] * alpha[r])


@njit(fastmath=LOOP_FLAGS, cache=True)
def forward_query_block(q, kp, vp, out, lse, i0, i1, scale, lo, hi, block_k):
    """Rows ``i0..i1-1`` of one head: visit the key blocks the band allows, write ``out`` and
    ``lse``.

    Six rows at a time (a *strip*): their scores against one key block (:func:`strip_scores`,
    the register tile), folded into the running max and sum while they are in the first-level
    cache, and their probabilities times ``V_j`` added into the output at once. A strip of a
    tile cut by the band stops at the last key it may see.

    Shapes: ``q`` (L, E); ``kp`` the head's keys packed for ``block_k``
    (:func:`.register_tile.pack_blocks`); ``vp`` its values in blocks of columns, (m, S, w)
    (:func:`.register_tile.pack_columns`); ``out`` (L, Ev); ``lse`` (L,).
    """
    nr, E, S, Ev = i1 - i0, q.shape[1], vp.shape[1], out.shape[1]
    dtype = q.dtype
    w = tile_cols_of(q)
    rows = (nr + TILE_ROWS - 1) // TILE_ROWS * TILE_ROWS  # whole strips; the extra rows are 0
    q_s = np.zeros((rows, E), dtype=dtype)  # (rows, E): the block times the scale
    for r in range(nr):
        for e in range(E):
            q_s[r, e] = q[i0 + r, e] * scale
    # One strip of scores, with room for whole blocks of columns and one block more: rows 2 KiB
    # apart (512 float32 keys) would share cache sets and evict each other during P V.
    s = np.empty((TILE_ROWS, chunks(block_k, w) * w + w), dtype=dtype)  # (6, bk')
    o = np.zeros((rows, Ev), dtype=dtype)  # (rows, Ev): unnormalised output
    pv = np.empty((TILE_ROWS, vp.shape[0] * w), dtype=dtype)  # (6, Ev'): one strip's P V_j
    m = np.full(rows, -np.inf, dtype=dtype)  # (rows,) running maximum
    l = np.zeros(rows, dtype=dtype)  # (rows,) running sum
    alpha = np.empty(rows, dtype=dtype)  # (rows,) rescaling factor of the last tile
    shift = np.empty(rows, dtype=dtype)  # (rows,) scratch
    kb0, kb1 = key_blocks(i0, i1, S, block_k, lo, hi)
    for kb in range(kb0, kb1):
        j0 = kb * block_k
        j1 = min(j0 + block_k, S)
        full = tile_is_full(i0, i1, j0, j1, lo, hi)
        for r0 in range(0, rows, TILE_ROWS):
            # the strip's last query may see keys up to i0 + r0 + 5 + hi: none past them
            n_keys = min(j1, i0 + r0 + TILE_ROWS + hi) - j0
            if n_keys <= 0:
                continue
            strip_scores(q_s, r0, kp, kb, block_k, n_keys, s, 0)  # (6, E) @ (E, n_keys): S
            if not full:
                mask_tile(s[:, :n_keys], False, i0 + r0, j0, lo, hi, -np.inf)
            part = slice(r0, r0 + TILE_ROWS)
            online_softmax_rows(s, n_keys, m[part], l[part], alpha[part], shift[part])
            tile_product(s, False, TILE_ROWS, vp, j0, n_keys, pv)  # (6, n_keys) @ (n_keys, Ev')
            for r in range(TILE_ROWS):  # the block's sum is added once, not key by key
                a = alpha[r0 + r]
                for e in range(Ev):
                    o[r0 + r, e] = o[r0 + r, e] * a + pv[r, e]
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
    so the items need no locks. Shapes: ``q`` (Hq', L, E); ``k`` and ``v`` the keys and values
    packed for the register tiles, one head per entry of the first axis
    (:func:`.register_tile.pack_heads`, :func:`.register_tile.pack_columns`); ``out``
    (Hq', L, Ev); ``lse`` (Hq', L).
    Compiled with ``parallel=True``; in plain Python ``prange`` is ``range``.
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
