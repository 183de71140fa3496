"""Where one tile of the Numba forward pass spends its time, on one core (chapter 12, issue 17).

Run in a plain process::

    PYTHONPATH=. python benchmarks/profile_forward.py --tiles 128x128 256x256 512x512 --rounds 15

For each tile shape ``block_q x block_k`` (E = Ev = 64, float32) it times, hot in the cache,
each step of :func:`attention_scratch.backends.numba.forward.forward_query_block`'s loop
separately, summed over the tile's strips of six query rows: the scores ``Q_i K_jᵀ`` (register
tiles), the online softmax (max, exp, sum), and the rescaling of the output with ``P V_j``
added into it (register tiles); then the whole kernel on one thread (L = S = 2048, one head),
divided by its number of tiles. What the whole kernel takes beyond the sum of the steps is the
cost of bringing ``K_j`` and ``V_j`` from farther caches, and the loop's overhead. The steps
take turns in every round; the best of the rounds counts.

With ``--torch`` it also times the tile's two products on one thread three ways: the register
tiles, OpenBLAS through Numba's ``np.dot`` (what the kernel called before), and PyTorch's
``torch.mm`` (MKL in its x86 wheels), taking turns in every round.
"""
import argparse
import time

import numba
import numpy as np

from attention_scratch.backends.numba.forward import (
    forward_parallel,
    online_softmax_rows,
)
from attention_scratch.backends.numba.register_tile import (
    TILE_ROWS,
    pack_columns,
    pack_heads,
    strip_scores,
    tile_cols,
    tile_product,
)
from attention_scratch.backends.numba.threads import blas_one_thread

LOOP_FLAGS = {"nsz", "arcp", "contract", "afn", "reassoc"}


@numba.njit
def products(a, b, out, n):
    for _ in range(n):
        np.dot(a, b, out)


@numba.njit
def products_abt(a, b, out, n):
    for _ in range(n):
        np.dot(a, b.T, out)


@numba.njit(fastmath=LOOP_FLAGS)
def score_steps(q_s, kp, block_k, s, n):
    """The scores of a whole tile, strip by strip, ``n`` times (each strip overwrites ``s``)."""
    for _ in range(n):
        for r0 in range(0, q_s.shape[0], TILE_ROWS):
            strip_scores(q_s, r0, kp, 0, block_k, block_k, s, 0)


@numba.njit(fastmath=LOOP_FLAGS)
def softmax_steps(s, n_cols, strips, m, l, alpha, shift, n):
    """The online softmax of ``strips`` strips, ``n`` times (on one strip's scores, in place)."""
    for _ in range(n):
        for _ in range(strips):
            m[:] = 0.0  # the same work every time: no key is new, nothing overflows
            online_softmax_rows(s, n_cols, m, l, alpha, shift)


@numba.njit(fastmath=LOOP_FLAGS)
def value_steps(s, n_cols, vp, pv, o, alpha, n):
    """``P V_j`` of every strip and the output rescaled and added to, ``n`` times."""
    for _ in range(n):
        for r0 in range(0, o.shape[0], TILE_ROWS):
            tile_product(s, False, TILE_ROWS, vp, 0, n_cols, pv)
            for r in range(TILE_ROWS):
                a = alpha[r]
                for e in range(o.shape[1]):
                    o[r0 + r, e] = o[r0 + r, e] * a + pv[r, e]


def best(fn, rounds):
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def time_steps(steps, rounds, n, tiles):
    """Each step's best time per tile, on one thread with BLAS on one thread: a step runs its
    tile ``n`` times, except ``"whole kernel"``, which runs all ``tiles`` once."""
    per_tile = dict.fromkeys(steps, np.inf)
    numba.set_num_threads(1)
    try:
        with blas_one_thread():
            for _ in range(rounds):  # the steps take turns in every round
                for name, fn in steps.items():
                    seconds = best(fn, 1) / (tiles if name == "whole kernel" else n)
                    per_tile[name] = min(per_tile[name], seconds)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return per_tile


def profile(bq, bk, rounds, n=200, N=2048, E=64):
    rng = np.random.default_rng(0)
    rows = -(-bq // TILE_ROWS) * TILE_ROWS  # the kernel's strips cover the block
    q_s = rng.standard_normal((rows, E), dtype=np.float32) * np.float32(0.125)
    k_tile = rng.standard_normal((1, bk, E), dtype=np.float32)
    v_tile = rng.standard_normal((bk, E), dtype=np.float32)
    kp = pack_heads(k_tile, bk)[0]  # the tile's keys, packed
    vp = pack_columns(v_tile[None])[0]  # the tile's values in blocks of columns
    w = tile_cols(4)
    s = np.empty((TILE_ROWS, -(-bk // w) * w + w), dtype=np.float32)  # one strip, as in the kernel
    strip_scores(q_s, 0, kp, 0, bk, bk, s, 0)
    o = np.zeros((rows, E), dtype=np.float32)
    pv = np.empty((TILE_ROWS, vp.shape[0] * w), dtype=np.float32)
    m, l, alpha, shift = (np.zeros(TILE_ROWS, dtype=np.float32) for _ in range(4))
    alpha[:] = 1.0
    q, k, v = (rng.standard_normal((1, N, E), dtype=np.float32) for _ in range(3))
    out, lse = np.empty((1, N, E), dtype=np.float32), np.empty((1, N), dtype=np.float32)
    k_packed, v_packed = pack_heads(k, bk), pack_columns(v)
    tiles = -(-N // bq) * -(-N // bk)
    steps = {
        "Q Kᵀ": lambda: score_steps(q_s, kp, bk, s, n),
        "softmax": lambda: softmax_steps(s, bk, rows // TILE_ROWS, m, l, alpha, shift, n),
        "P V, rescale": lambda: value_steps(s, bk, vp, pv, o, alpha, n),
        "whole kernel": lambda: forward_parallel(q, k_packed, v_packed, out, lse,
                                                 np.float32(0.125), -N, N, bq, bk),
    }
    per_tile = time_steps(steps, rounds, n, tiles)
    flops = 4 * bq * bk * E
    parts = sum(v for k_, v in per_tile.items() if k_ != "whole kernel")
    whole = per_tile["whole kernel"]
    print(f"tile {bq}x{bk}: whole kernel {whole * 1e6:.2f} µs per tile = "
          f"{flops / whole / 1e9:.1f} GFLOP/s on one core")
    for name, seconds in per_tile.items():
        if name != "whole kernel":
            print(f"  {name:<12} {seconds * 1e6:7.2f} µs  {seconds / whole:5.0%} of the tile")
    print(f"  {'the rest':<12} {(whole - parts) * 1e6:7.2f} µs  {(whole - parts) / whole:5.0%} "
          "(loads of K_j, V_j from farther caches, loop overhead)")


@numba.njit(fastmath=LOOP_FLAGS)
def strip_value_steps(s, n_cols, vp, pv, strips, n):
    """``P V_j`` of ``strips`` strips (all on one strip's weights), ``n`` times."""
    for _ in range(n):
        for _ in range(strips):
            tile_product(s, False, TILE_ROWS, vp, 0, n_cols, pv)


def products_against_torch(bq, bk, rounds, n=50, E=64):
    """GFLOP/s of ``Q_i K_jᵀ`` and ``P V_j`` on one thread: the register tiles, strip by strip
    (the kernel), OpenBLAS through Numba's ``np.dot`` (what the kernel called before) and
    ``torch.mm`` (MKL in PyTorch's x86 wheels), best of ``rounds`` rounds of ``n`` each."""
    import torch

    rng = np.random.default_rng(0)
    rows = bq // TILE_ROWS * TILE_ROWS  # the register tiles' whole strips
    q_s = rng.standard_normal((bq, E), dtype=np.float32)
    k_tile, v_tile = (rng.standard_normal((bk, E), dtype=np.float32) for _ in range(2))
    p = rng.random((bq, bk), dtype=np.float32)
    t, pv = np.empty((bq, bk), dtype=np.float32), np.empty((bq, E), dtype=np.float32)
    tq, tk, tp, tv, tt, tpv = map(torch.from_numpy, (q_s, k_tile, p, v_tile, t, pv))
    kp, vp = pack_heads(k_tile[None], bk)[0], pack_columns(v_tile[None])[0]
    w = tile_cols(4)
    strip = np.empty((TILE_ROWS, -(-bk // w) * w + w), dtype=np.float32)
    strip[:, :bk] = p[:TILE_ROWS]
    pv6 = np.empty((TILE_ROWS, vp.shape[0] * w), dtype=np.float32)

    def torch_products(a, b, out):
        for _ in range(n):
            torch.mm(a, b, out=out)

    steps = {
        "Q Kᵀ register tiles": lambda: score_steps(q_s[:rows], kp, bk, strip, n),
        "Q Kᵀ OpenBLAS": lambda: products_abt(q_s, k_tile, t, n),
        "Q Kᵀ torch.mm": lambda: torch_products(tq, tk.t(), tt),
        "P V  register tiles": lambda: strip_value_steps(strip, bk, vp, pv6, rows // TILE_ROWS, n),
        "P V  OpenBLAS": lambda: products(p, v_tile, pv, n),
        "P V  torch.mm": lambda: torch_products(tp, tv, tpv),
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        per_product = time_steps(steps, rounds, n, 1)
    finally:
        torch.set_num_threads(threads)
    rates = ", ".join(f"{name} {2 * (rows if 'register' in name else bq) * bk * E / t / 1e9:.1f}"
                      for name, t in per_product.items())
    print(f"tile {bq}x{bk}, one thread: {rates} GFLOP/s")


def blas_output_pass(bq, bk, rounds, n=20, E=64):
    """OpenBLAS's ``Q_i K_jᵀ`` on one thread two ways, through SciPy's ``sgemm`` (the library
    Numba's ``np.dot`` calls): with beta 0, ``C = A B`` as ``np.dot`` asks, for which OpenBLAS
    first zeroes ``C`` in a pass of its own, and with beta 1, ``C = A B + C``, which skips it."""
    from scipy.linalg import blas

    rng = np.random.default_rng(0)
    k_t = np.asfortranarray(rng.standard_normal((E, bk), dtype=np.float32))  # Kᵀ, (E, bk)
    q_t = np.asfortranarray(rng.standard_normal((E, bq), dtype=np.float32))  # Qᵀ, (E, bq)
    c = np.zeros((bk, bq), dtype=np.float32, order="F")  # Sᵀ in Fortran order: S in C order

    def product(beta):
        for _ in range(n):
            blas.sgemm(1.0, k_t, q_t, beta=beta, c=c, trans_a=1, overwrite_c=1)

    steps = {"beta 0": lambda: product(0.0), "beta 1": lambda: product(1.0)}
    per_product = time_steps(steps, rounds, n, 1)
    print(f"tile {bq}x{bk}, Q Kᵀ by OpenBLAS on one thread: "
          + ", ".join(f"{name} {t * 1e6:.1f} µs" for name, t in per_product.items()))


def main(profile_tile=None, doc=__doc__, tiles=("64x64", "128x128", "128x256"), rounds=15):
    """Parse ``--tiles``, ``--rounds`` and ``--torch`` and run ``profile_tile(bq, bk, rounds)`` on
    each tile (this script's :func:`profile` unless another script's is given)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--tiles", nargs="+", default=list(tiles))
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--torch", action="store_true",
                        help="also time the tile's products with torch.mm against OpenBLAS")
    args = parser.parse_args()
    for tile in args.tiles:
        bq, bk = map(int, tile.split("x"))
        (profile_tile or profile)(bq, bk, args.rounds)
        if args.torch:
            products_against_torch(bq, bk, args.rounds)
            blas_output_pass(bq, bk, args.rounds)


if __name__ == "__main__":
    main()
