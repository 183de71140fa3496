"""Where one tile of the Numba backward pass spends its time, on one core (chapter 12, issue 17).

Run in a plain process::

    PYTHONPATH=. python benchmarks/profile_backward.py --tiles 128x128 256x256 --rounds 9

For each tile shape ``block_q x block_k`` (E = Ev = 64, float32) it times, hot in the cache,
each step that :func:`attention_scratch.backends.numba.backward.kv_key_block` runs per tile of
the one-pass backward: the five products (register tiles), the weights recomputed from the
log-sum-exp,
``dS``, and the three additions into the accumulators; then the whole kernel on one thread
(L = S = 2048, one head), divided by its number of tiles. The mask of a tile on the diagonal is
timed apart: only those tiles pay it. The steps take turns in every round; the best counts.
"""

import numba
import numpy as np
import profile_forward  # this folder's forward profile
from profile_forward import time_steps

from attention_scratch.backends.numba.backward import fused_parallel, pack_operands
from attention_scratch.backends.numba.register_tile import (
    TILE_ROWS,
    pack_columns,
    pack_heads,
    tile_product,
    tile_scores,
)
from attention_scratch.backends.numba.tiles import (
    add_into,
    dscores_in_place,
    mask_tile,
    probs_from_lse,
)

NO_BAND = 1 << 40  # a band wider than any tile: lo = -NO_BAND, hi = NO_BAND


@numba.njit
def score_steps(q_blk, kp, block_k, t, n):
    for _ in range(n):
        tile_scores(q_blk, 0, q_blk.shape[0], kp, 0, block_k, t)


@numba.njit
def product_steps(a, a_transposed, n_rows, bp, depth, c, n):
    for _ in range(n):
        tile_product(a, a_transposed, n_rows, bp, 0, depth, c)


@numba.njit
def probs_steps(t, lse, n):
    for _ in range(n):
        probs_from_lse(t, False, np.float32(1.0), lse, True, 0, 0, -NO_BAND, NO_BAND)


@numba.njit
def dscores_steps(p, dp, d, n):
    for _ in range(n):
        dscores_in_place(p, dp, False, d)


@numba.njit
def add_steps(acc, x, n):
    for _ in range(n):
        add_into(acc, x)


@numba.njit
def mask_steps(t, n):
    for _ in range(n):
        mask_tile(t, False, 0, 0, 0, NO_BAND, np.float32(0.0))  # causal, on the diagonal


def profile(bq, bk, rounds, n=50, N=2048, E=64):
    rng = np.random.default_rng(0)
    k_tile, v_tile = (rng.standard_normal((bk, E), dtype=np.float32) for _ in range(2))
    q_blk, do_blk = (rng.standard_normal((bq, E), dtype=np.float32) for _ in range(2))
    rows = -(-max(bq, bk) // TILE_ROWS) * TILE_ROWS
    p_buf, dp_buf = (np.zeros(rows * rows + TILE_ROWS, dtype=np.float32) for _ in range(2))
    p, dp = p_buf[:bq * bk].reshape(bq, bk), dp_buf[:bq * bk].reshape(bq, bk)  # with slack after
    kp, vp = pack_heads(k_tile[None], bk)[0], pack_heads(v_tile[None], bk)[0]  # packed, as Kᵀ, Vᵀ
    kc, qc, doc = (pack_columns(x[None])[0] for x in (k_tile, q_blk, do_blk))  # blocks of columns
    score_steps(q_blk, kp, bk, p, 1)  # query-major tiles, as in the kernel
    lse = np.full(bq, 30.0, dtype=np.float32)  # every weight well below 1, none 0
    d = rng.standard_normal(bq, dtype=np.float32)
    kv_out, q_out = np.empty((rows, E), dtype=np.float32), np.empty((rows, E), dtype=np.float32)
    q, k, v, g = (rng.standard_normal((1, N, E), dtype=np.float32) for _ in range(4))
    lse_all, d_all = np.full((1, N), 30.0, dtype=np.float32), np.zeros((1, N), dtype=np.float32)
    dk, dv, dq_parts = np.empty_like(k), np.empty_like(v), np.zeros((1, 1, N, E), np.float32)
    packed = pack_operands(q, k, v, g, bk)
    tiles = -(-N // bq) * -(-N // bk)
    steps = {
        "S = Q Kᵀ": lambda: score_steps(q_blk, kp, bk, p, n),
        "P from lse": lambda: probs_steps(p, lse, n),
        "dV += Pᵀ dO": lambda: product_steps(p, True, bk, doc, bq, kv_out, n),
        "dP = dO Vᵀ": lambda: score_steps(do_blk, vp, bk, dp, n),
        "dS": lambda: dscores_steps(p, dp, d, n),
        "dK += dSᵀ Q": lambda: product_steps(dp, True, bk, qc, bq, kv_out, n),
        "dQ += dS K": lambda: product_steps(dp, False, bq, kc, bk, q_out, n),
        "3 additions": lambda: [add_steps(acc, acc, n) for acc in (kv_out, kv_out, q_out)],
        "whole kernel": lambda: fused_parallel(q, v, g, packed, lse_all, d_all, dk, dv, dq_parts,
                                               np.float32(1.0), -N, N, bq, bk),
        "mask (diagonal tile)": lambda: mask_steps(dp, n),
    }
    per_tile = time_steps(steps, rounds, n, tiles)
    flops = 10 * bq * bk * E  # five products of 2·bq·bk·E
    whole = per_tile.pop("whole kernel")
    mask = per_tile.pop("mask (diagonal tile)")
    print(f"tile {bq}x{bk}: whole kernel {whole * 1e6:.1f} µs per tile = "
          f"{flops / whole / 1e9:.1f} GFLOP/s on one core")
    for name, seconds in per_tile.items():
        print(f"  {name:<14} {seconds * 1e6:7.2f} µs  {seconds / whole:5.0%} of the tile")
    rest = whole - sum(per_tile.values())
    print(f"  {'the rest':<14} {rest * 1e6:7.2f} µs  {rest / whole:5.0%} (loop overhead, "
          "loads from farther caches)")
    print(f"  {'mask':<14} {mask * 1e6:7.2f} µs  {mask / whole:5.0%} more, on a diagonal tile")


if __name__ == "__main__":
    profile_forward.main(profile, __doc__, tiles=("128x128", "256x256"), rounds=9)
