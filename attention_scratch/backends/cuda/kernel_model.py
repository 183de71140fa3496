"""The CUDA forward kernel's arithmetic in NumPy, one row group at a time (chapter 13).

``backends/cuda/flash_fwd.cu`` gives each query row to a *row group* of
``TPR = D / 16`` consecutive threads; thread ``t`` of the group owns the head
dims ``t, t + TPR, t + 2·TPR, …``. A dot product is a partial sum per thread
followed by a butterfly of warp shuffles, and the online softmax runs over
chunks of ``KC`` keys with scores in log2 units (``exp2``). This module writes
those steps in NumPy so they can be read, tested and graded without a GPU;
:func:`model_forward` puts them together and must agree with the oracle.
"""
import numpy as np

from ...bands import integer_band
from .constants import FLASH_KC
from .driver import head_dim_bucket

KC = FLASH_KC  # keys per register chunk (flash_constants.cuh)
LOG2E = 1.4426950408889634


# BEGIN EXERCISE 13.1 (2 points): which row and which head dims a thread owns
def thread_slice(thread, D):
    """The query row (within the tile) and the head dims that CUDA thread ``thread`` owns.

    Rows get ``TPR = D // 16`` consecutive threads; thread ``t = thread % TPR`` of
    a row group owns dims ``t, t + TPR, t + 2·TPR, …`` below ``D`` (an interleaved
    split: the threads of a group read neighbouring shared-memory words).
    Return ``(row, dims)`` with ``dims`` a NumPy int array of length 16.
    """
    # BEGIN SOLUTION
    tpr = D // 16
    row, t = divmod(thread, tpr)
    return row, np.arange(t, D, tpr)
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 13.4 (2 points): a butterfly of warp shuffles
def butterfly_steps(partials):
    """Simulate ``group_sum``: the values each lane of a row group holds after every shuffle step.

    ``partials[..., lane]`` is lane ``lane``'s partial sum; ``TPR = partials.shape[-1]``
    is a power of two. For ``off = TPR/2, TPR/4, …, 1`` every lane adds the value of
    lane ``lane ^ off`` (``__shfl_xor_sync``), all lanes at once. Return the list of
    arrays after each step (``log2(TPR)`` of them, each of the shape and dtype of
    ``partials``); after the last, every lane holds the sum.
    """
    # BEGIN SOLUTION
    x = np.asarray(partials)
    tpr = x.shape[-1]
    lanes = np.arange(tpr)
    steps = []
    off = tpr // 2
    while off > 0:
        x = x + x[..., lanes ^ off]  # (..., TPR): lane i reads lane i ^ off
        steps.append(x)
        off //= 2
    return steps
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 13.3 (3 points): the kernel's online softmax step for one chunk of keys
def chunk_update(m, l, o, s, v):
    """Fold one chunk of scores into the running state, exactly as ``flash_fwd_scalar`` does.

    ``s`` are scores already in log2 units (``q·k · scale · log2 e``), ``-inf``
    where masked. With ``mx = max(m, max_j s_j)``: rows where ``mx`` is still
    ``-inf`` keep their state unchanged; otherwise ``alpha = 2^(m - mx)``,
    ``l ← alpha·l + Σ_j 2^(s_j - mx)`` and ``o ← alpha·o + Σ_j 2^(s_j - mx) v_j``,
    and ``m ← mx``. No NaN, no warnings. But a NaN score makes its row's state
    NaN: never hide it (``NaN > -inf`` is False, so a test of that kind keeps the
    old state; test ``mx == -inf`` for the rows that have seen nothing).

    The state keeps the dtype of its inputs (float32 stays float32), and the
    arrays passed in are not changed: return new ones.

    Shapes: ``m``, ``l`` (rows,); ``o`` (rows, Ev); ``s`` (rows, KC); ``v`` (KC, Ev).
    Returns ``(m, l, o)``.
    """
    # BEGIN SOLUTION
    mx = np.maximum(m, s.max(axis=-1))  # (rows,)
    live = mx != -np.inf  # (rows,): rows that have seen a kept key (or a NaN, which must show)
    base = np.where(live, mx, 0.0)  # (rows,): finite, so no -inf - -inf
    alpha = np.where(live, np.exp2(m - base), 1.0)  # (rows,): 0 when m was -inf
    p = np.exp2(s - base[:, None])  # (rows, KC): 0 where masked
    l_new = np.where(live, alpha * l + p.sum(axis=-1), l)  # (rows,)
    o_new = np.where(live[:, None], alpha[:, None] * o + p @ v, o)  # (rows, Ev)
    return np.where(live, mx, m), l_new, o_new
    # END SOLUTION


# END EXERCISE


def model_forward(q, k, v, scale=None, band=(None, None)):
    """One head of the forward kernel, row by row and chunk by chunk, in NumPy.

    ``band = (lo, hi)`` keeps key ``j`` for query ``i`` when ``lo <= j - i <= hi`` (``None`` or
    ints, :mod:`attention_scratch.bands`). The dot products are formed as the kernel forms them:
    each of the ``TPR`` threads of a row group sums over its own dims (:func:`thread_slice`), and
    the group combines the partial sums with :func:`butterfly_steps`.

    Shapes: ``q`` (L, E), ``k`` (S, E), ``v`` (S, Ev) -> ``out`` (L, Ev), ``lse`` (L,).
    """
    L, E = q.shape
    S, Ev = v.shape
    D = head_dim_bucket(E, Ev)  # padded head dim of the compiled kernel: 32, 64, 128 or 256
    tpr = D // 16
    scale = 1.0 / np.sqrt(E) if scale is None else scale
    qp = np.zeros((L, D))
    qp[:, :E] = q * scale * LOG2E  # (L, D): scores come out in log2 units
    kp = np.zeros((S, D))
    kp[:, :E] = k  # (S, D)
    lo, hi = integer_band(band, L, S)
    out, lse = np.zeros((L, Ev)), np.full(L, np.inf)
    for i in range(L):
        m, l, o = np.array([-np.inf]), np.zeros(1), np.zeros((1, Ev))
        for c0 in range(0, S, KC):
            keys = np.arange(c0, min(c0 + KC, S))  # (kc,)
            partial = np.stack([kp[keys][:, thread_slice(t, D)[1]] @ qp[i, thread_slice(t, D)[1]]
                                for t in range(tpr)], axis=-1)  # (kc, TPR): one partial per thread
            dots = butterfly_steps(partial)[-1][:, 0]  # (kc,): lane 0's total
            keep = (keys - i >= lo) & (keys - i <= hi)  # (kc,)
            s = np.where(keep, dots, -np.inf)[None, :]  # (1, kc)
            m, l, o = chunk_update(m, l, o, s, v[keys])
        if l[0] > 0:
            out[i], lse[i] = o[0] / l[0], (m[0] + np.log2(l[0])) / LOG2E
    return out, lse
