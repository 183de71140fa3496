"""Counting slow-memory traffic, measuring memory, and tracing one query block (chapter 9).

The FlashAttention paper (Dao et al., 2022, Theorem 2) compares the number of
elements read from and written to slow memory (HBM) by standard attention,
Θ(Nd + N²), with that of the tiled algorithm, Θ(N²d²/M) for a fast memory
(SRAM) of M elements with d <= M <= Nd. The functions here count those accesses exactly, for the
algorithms as written, so the asymptotic statements can be checked with
numbers; :func:`peak_traced_memory` measures what NumPy actually allocates, and
:func:`flash_trace` records the running state of one query block after each key
block, for the step-through figures of the book.
"""
import math
import tracemalloc

import numpy as np

from ._checks import check_positive_int
from .contract import attention_args
from .flash_tiles import finalize_rows, forward_tile, key_block_range, tile_keep, tile_kind


def dense_io(N, d):
    """Slow-memory element accesses of standard attention (Dao et al. 2022, Algorithm 0).

    Read Q, K (2Nd), write S = QKᵀ (N²); read S, write P = softmax(S) (2N²);
    read P and V (N² + Nd), write O (Nd). Returns a dict with ``reads``,
    ``writes`` and ``total``: ``4Nd + 4N²`` elements in all.
    """
    N, d = check_positive_int(N, "N"), check_positive_int(d, "d")
    reads = 2 * N * d + N * N + N * N + N * d
    writes = N * N + N * N + N * d
    return dict(reads=reads, writes=writes, total=reads + writes)


def fa1_block_sizes(M, d):
    """FlashAttention's blocks for a fast memory of ``M`` elements:
    ``Bc = ⌈M/4d⌉``, ``Br = min(Bc, d)``."""
    M, d = check_positive_int(M, "M"), check_positive_int(d, "d")
    block_c = math.ceil(M / (4 * d))
    return min(block_c, d), block_c


def fa1_io(N, d, M):
    """Slow-memory accesses of FlashAttention's Algorithm 1 (key/value blocks outer), exactly.

    Initialise O, ℓ, m in slow memory (Nd + 2N writes). For each of the
    ``Tc = ⌈N/Bc⌉`` key/value blocks: read K_j, V_j, and for every query block
    read Q_i, O_i, ℓ_i, m_i and write back O_i, ℓ_i, m_i. Reads total
    ``2Nd + Tc(2Nd + 2N)``, writes ``Nd + 2N + Tc(Nd + 2N)``: Θ(N²d²/M), since
    ``Tc ≈ 4Nd/M``.
    """
    N = check_positive_int(N, "N")
    _, block_c = fa1_block_sizes(M, d)
    t_c = math.ceil(N / block_c)
    reads = 2 * N * d + t_c * (2 * N * d + 2 * N)
    writes = N * d + 2 * N + t_c * (N * d + 2 * N)
    return dict(reads=reads, writes=writes, total=reads + writes, block_q=min(block_c, d),
                block_k=block_c)


def fa2_block_size(M, d):
    """The largest square block ``B`` whose working set fits:
    Q_i, O_i, K_j, V_j and the tile, ``4Bd + B² <= M``."""
    M, d = check_positive_int(M, "M"), check_positive_int(d, "d")
    block = int((math.sqrt(16 * d * d + 4 * M) - 4 * d) / 2)
    if block < 1:
        raise ValueError(f"a fast memory of M={M} elements cannot hold one row of each "
                         f"block for d={d}")
    return block


def tiled_io(L, S, E, Ev, block_q, block_k, is_causal=False, causal_align="top_left", window=None):
    """Slow-memory accesses of this library's forward pass
    (FlashAttention-2 order), counted tile by tile.

    Each query block is read once and its output and log-sum-exp written once;
    every visited tile reads its key and value blocks. Skipped tiles read
    nothing, so causal masking roughly halves the key/value traffic.
    """
    from .flash import block_schedule

    L, S, E, Ev, block_q, block_k = (check_positive_int(value, name) for value, name in (
        (L, "L"), (S, "S"), (E, "E"), (Ev, "Ev"), (block_q, "block_q"), (block_k, "block_k")))
    schedule = block_schedule(L, S, block_q, block_k, is_causal, causal_align, window)
    kv_reads = sum(min(block_k, S - kb * block_k) for _, kb, _ in schedule) * (E + Ev)
    reads = L * E + kv_reads
    writes = L * Ev + L
    return dict(reads=reads, writes=writes, total=reads + writes, tiles=len(schedule))


def fa2_io(N, d, M, is_causal=False):
    """:func:`tiled_io` for an N×N problem with the square block that fits a fast memory
    of M elements."""
    block = fa2_block_size(M, d)
    return dict(tiled_io(N, N, d, d, block, block, is_causal), block_q=block, block_k=block)


def peak_traced_memory(fn, *args, **kwargs):
    """Call ``fn(*args, **kwargs)`` and return ``(result, peak bytes allocated during the call)``.

    Measured with :mod:`tracemalloc`, which sees NumPy's array buffers; the
    arguments were allocated before the call and do not count.
    """
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = fn(*args, **kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak


def flash_trace(query, key, value, q_block=0, block_q=8, block_k=8, is_causal=False,
                causal_align="top_left", window=None, scale=None):
    """The running state of one query block after each key block, as the forward pass sees it.

    Parameters
    ----------
    query, key, value : array_like
        One head: ``(L, E)``, ``(S, E)``, ``(S, Ev)``.
    q_block : int
        Which query block to trace (rows ``q_block·block_q`` onwards).

    Returns
    -------
    list of dict
        One entry per visited key block, in order: ``k_block``, ``kind``
        (``"full"``/``"partial"``), ``m`` and ``l`` (bq,), ``acc`` (bq, Ev)
        unnormalised, and ``out`` = the output if the pass stopped here (bq, Ev).
    """
    for a, name in ((query, "query"), (key, "key"), (value, "value")):
        if np.ndim(a) != 2:
            raise ValueError(f"{name} must be one head, 2-D (length, head_dim); "
                             f"got shape {np.shape(a)}")
    args = attention_args(np.asarray(query)[None], np.asarray(key)[None], np.asarray(value)[None],
                          is_causal, scale, causal_align=causal_align, window=window,
                          block_q=block_q, block_k=block_k)
    q, k, v = args.q[0, 0, 0], args.k[0, 0, 0], args.v[0, 0, 0]  # (L, E), (S, E), (S, Ev)
    band, acc_dtype = args.band, args.acc_dtype
    L, S = q.shape[0], k.shape[0]
    i0 = q_block * block_q
    if not 0 <= i0 < L:
        raise ValueError(f"q_block={q_block} is out of range for L={L} and block_q={block_q}")
    i1 = min(i0 + block_q, L)
    q_blk = q[i0:i1].astype(acc_dtype)  # (bq, E)
    m = np.full(i1 - i0, -np.inf, dtype=acc_dtype)  # (bq,)
    l = np.zeros(i1 - i0, dtype=acc_dtype)  # (bq,)
    o = np.zeros((i1 - i0, v.shape[-1]), dtype=acc_dtype)  # (bq, Ev)
    steps = []
    for kb in key_block_range(i0, i1, S, block_k, band):
        j0, j1 = kb * block_k, min(kb * block_k + block_k, S)
        kind = tile_kind(i0, i1, j0, j1, band)
        keep = tile_keep(i0, i1, j0, j1, band) if kind == "partial" else None
        m, l, o = forward_tile(q_blk, k[j0:j1].astype(acc_dtype), v[j0:j1].astype(acc_dtype), m, l,
                               o, args.scale, keep)
        steps.append(dict(k_block=kb, kind=kind, m=m.copy(), l=l.copy(), acc=o.copy(),
                          out=finalize_rows(m, l, o)[0]))
    return steps
