"""Tile helpers shared by the Numba forward and backward kernels (chapter 12).

The mask is the band ``lo <= j - i <= hi`` of :func:`attention_scratch.flash_tiles.mask_band`,
with ``None`` replaced by a bound no offset reaches (``numba_cpu.band_bounds``), so the
compiled code only ever compares integers. All loops here run over one tile,
which lives in the L1 or L2 cache; ``LOOP_FLAGS`` lets LLVM vectorise them.
"""
import numpy as np
from numba import njit

from .numba_exp import LOOP_FLAGS, fast_exp


@njit(cache=True)
def key_blocks(i0, i1, S, block_k, lo, hi):
    """``(first, end)``: the key blocks that query rows ``i0..i1-1`` may see (as ``key_block_range``)."""
    first = max(0, i0 + lo)
    last = min(S - 1, i1 - 1 + hi)
    if first > last:
        return 0, 0
    return first // block_k, last // block_k + 1


@njit(cache=True)
def query_blocks(j0, j1, L, block_q, lo, hi):
    """``(first, end)``: the query blocks that keys ``j0..j1-1`` contribute to (as ``query_block_range``)."""
    first = max(0, j0 - hi)
    last = min(L - 1, j1 - 1 - lo)
    if first > last:
        return 0, 0
    return first // block_q, last // block_q + 1


@njit(cache=True)
def tile_is_full(i0, i1, j0, j1, lo, hi):
    """True when every ``(i, j)`` of the tile lies in the band: no mask is needed."""
    return (j1 - 1) - i0 <= hi and j0 - (i1 - 1) >= lo


@njit(cache=True)
def tile_view(buffer, rows, cols):
    """The first ``rows·cols`` entries of a flat buffer as a C-contiguous ``(rows, cols)`` tile."""
    return buffer[:rows * cols].reshape((rows, cols))


@njit(fastmath=LOOP_FLAGS, cache=True)
def mask_tile(tile, i0, j0, lo, hi, value):
    """Write ``value`` where ``(i0 + r, j0 + c)`` lies outside the band. ``tile`` (bq, bk)."""
    for r in range(tile.shape[0]):
        for c in range(tile.shape[1]):
            d = (j0 + c) - (i0 + r)
            if d < lo or d > hi:
                tile[r, c] = value


@njit(fastmath=LOOP_FLAGS, cache=True)
def probs_from_lse(s, scale, lse, full, i0, j0, lo, hi):
    """In place: ``s <- exp(s·scale - lse)``, 0 outside the band. ``s`` (bq, bk), ``lse`` (bq,).

    A row with ``lse = +inf`` (nothing to attend to) gets 0 everywhere. Masked
    entries are overwritten after the exponential, so a NaN there cannot leak.
    """
    for r in range(s.shape[0]):
        row_lse = lse[r]
        for c in range(s.shape[1]):
            s[r, c] = fast_exp(s[r, c] * scale - row_lse)
    if not full:
        mask_tile(s, i0, j0, lo, hi, s.dtype.type(0.0))


@njit(fastmath=LOOP_FLAGS, cache=True)
def dscores_in_place(p, dp, d):
    """In place: ``dp <- p ∘ (dp - d)``, the softmax backward of one tile. ``p``, ``dp`` (bq, bk); ``d`` (bq,)."""
    for r in range(p.shape[0]):
        d_r = d[r]
        for c in range(p.shape[1]):
            dp[r, c] = p[r, c] * (dp[r, c] - d_r)


@njit(fastmath=LOOP_FLAGS, cache=True)
def add_into(acc, x):
    """``acc += x`` for 2-d arrays of the same shape (the BLAS products write to a scratch tile)."""
    for r in range(acc.shape[0]):
        for c in range(acc.shape[1]):
            acc[r, c] += x[r, c]
