"""flex_attention on the CPU with Numba: the block-mask kernels, with the user's functions compiled
(chapter 16).

``score_mod``, its derivative and ``mask_mod`` are compiled with ``numba.cfunc`` to fixed
signatures, ``score_mod(float64, int64, int64, int64, int64) -> float64`` and
``mask_mod(int64, int64, int64, int64) -> bool``, and called once per (query, key) pair of a
visited tile. Because the kernels take them as first-class functions of those types, the
kernels themselves are compiled once (and cached on disk); a new ``score_mod`` costs only its
own compilation. The functions see scalars here, where the NumPy backend passes index arrays:
a function written with NumPy operations that work on both (``np.abs``, ``np.tanh``,
indexing a captured array) runs on both backends. Numba freezes the arrays a function captures
when it compiles it, and each function is compiled once: to change a captured array, make a new
function (as the factories of :mod:`attention_scratch.flex_mods` do) rather than editing the
array in place.

Layout as in :mod:`.forward`: ``q`` (Hq', L, E), ``k`` (Hkv', S, E), ``v`` (Hkv', S, Ev) with
the batch folded into the heads; folded head ``t`` is batch ``t // Hq`` and head ``t % Hq``.
Three parallel kernels: the forward pass by (head, query block), ``dQ`` by (head, query block),
``dK`` and ``dV`` by (key/value head, key block), each recomputing its tiles from ``lse``.
"""
import contextlib
import weakref

import numpy as np
from numba import cfunc, njit, prange, types

from .cpu import blas_one_thread, forward_flops
from .exp import LOOP_FLAGS, tile_exp
from .tiles import tile_view

SCORE_SIGNATURE = types.float64(types.float64, types.int64, types.int64, types.int64, types.int64)
MASK_SIGNATURE = types.boolean(types.int64, types.int64, types.int64, types.int64)
_compiled = weakref.WeakKeyDictionary()  # user function -> its cfunc, compiled once


def _identity(score, b, h, q_idx, kv_idx):
    return score


def _everything(b, h, q_idx, kv_idx):
    return True


def compile_mod(fn, signature, what):
    """``fn`` compiled by Numba to ``signature``; ``TypeError`` saying which backend to use when
    it cannot be."""
    try:
        return _compiled[fn]
    except (KeyError, TypeError):
        pass
    try:
        compiled = cfunc(signature)(fn)
    except Exception as error:  # Numba's typing errors are long: keep the first lines
        detail = str(error).strip().splitlines()
        raise TypeError(
            f"the 'numba' backend could not compile {what} "
            f"{getattr(fn, '__name__', fn)!r} with numba.cfunc({signature}): it is called with "
            f"scalars there (a float score and int indices), and may use only what Numba "
            f"compiles (NumPy functions on scalars, indexing captured NumPy arrays; no "
            f"PyTorch, no Python objects). Rewrite it, or use backend='numpy', which calls it "
            f"with NumPy index arrays. Numba said: {' '.join(detail[:3])}") from None
    with contextlib.suppress(TypeError):  # not weak-referenceable: compiled again next time
        _compiled[fn] = compiled
    return compiled


def _mods(score_mod, derivative, mask_mod):
    """``(score, derivative, mask, has_score)``: the functions compiled, identities for ``None``."""
    has_score = score_mod is not None
    score = compile_mod(score_mod if has_score else _identity, SCORE_SIGNATURE, "score_mod")
    derivative = compile_mod(_identity if derivative is None else derivative, SCORE_SIGNATURE,
                             "the derivative of score_mod")
    mask = compile_mod(_everything if mask_mod is None else mask_mod, MASK_SIGNATURE, "mask_mod")
    return score, derivative, mask, has_score


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
def modify_tile(t, kind, i0, j0, b, h, score_fn, mask_fn, has_score):
    """In place on a key-major tile ``t`` (bk, bq) of scaled scores: ``score_mod`` on every
    entry, ``-inf`` where a partial tile's ``mask_mod`` says no."""
    for c in range(t.shape[0]):
        j = np.int64(j0 + c)
        for r in range(t.shape[1]):
            i = np.int64(i0 + r)
            s = np.float64(t[c, r])
            if has_score:
                s = score_fn(s, b, h, i, j)
            if kind == 1 and not mask_fn(b, h, i, j):
                s = -np.inf
            t[c, r] = s


@njit(fastmath=LOOP_FLAGS, cache=True)
def forward_block(q, k, v, out, lse, i0, i1, scale, kinds_row, block_k, b, h, score_fn, mask_fn,
                  has_score):
    """Rows ``i0..i1-1`` of one head over the key blocks ``kinds_row`` (nk,) does not skip.

    Shapes: ``q`` (L, E), ``k`` (S, E), ``v`` (S, Ev), ``out`` (L, Ev), ``lse`` (L,).
    """
    nr, E, Ev, S = i1 - i0, q.shape[1], v.shape[1], k.shape[0]
    q_t = np.empty((E, nr), dtype=q.dtype)  # (E, bq): the block, transposed, times the scale
    for r in range(nr):
        for e in range(E):
            q_t[e, r] = q[i0 + r, e] * scale
    t_buf = np.empty(block_k * nr, dtype=q.dtype)  # one (bk, bq) tile
    pv = np.empty((nr, Ev), dtype=q.dtype)  # (bq, Ev)
    o = np.zeros((nr, Ev), dtype=q.dtype)  # (bq, Ev)
    m = np.full(nr, -np.inf, dtype=q.dtype)  # (bq,)
    row_sum = np.zeros(nr, dtype=q.dtype)  # (bq,)
    alpha = np.empty(nr, dtype=q.dtype)  # (bq,)
    shift = np.empty(nr, dtype=q.dtype)  # (bq,)
    for kb in range(kinds_row.shape[0]):
        kind = kinds_row[kb]
        if kind == 0:
            continue  # skipped: never touched
        j0 = kb * block_k
        j1 = min(j0 + block_k, S)
        t = tile_view(t_buf, j1 - j0, nr)  # (bk, bq)
        np.dot(k[j0:j1], q_t, t)  # (bk, E) @ (E, bq): scaled scores, key-major
        if has_score or kind == 1:
            modify_tile(t, kind, i0, j0, b, h, score_fn, mask_fn, has_score)
        online_softmax_tile(t, m, row_sum, alpha, shift)  # t <- exp(t - m)
        np.dot(t.T, v[j0:j1], pv)  # (bq, bk) @ (bk, Ev)
        for r in range(nr):
            for e in range(Ev):
                o[r, e] = o[r, e] * alpha[r] + pv[r, e]
    for r in range(nr):  # empty rows: output 0, lse +inf
        if row_sum[r] != 0.0:
            for e in range(Ev):
                out[i0 + r, e] = o[r, e] / row_sum[r]
            lse[i0 + r] = m[r] + np.log(row_sum[r])
        else:
            for e in range(Ev):
                out[i0 + r, e] = 0.0
            lse[i0 + r] = np.inf


@njit(cache=True)
def query_block_item(item, n_blocks, heads, kinds):
    """Work item ``item`` of a (folded head, query block) loop: the folded head ``t``, the query
    block ``qb``, the batch and head indices ``b``, ``h`` the mods see, and the block mask's row
    of tile kinds for it, ``(nk,)`` (``kinds`` (Bm, Hm, nq, nk), Bm and Hm 1 when broadcast)."""
    t, qb = item // n_blocks, item % n_blocks
    b, h = np.int64(t // heads), np.int64(t % heads)
    return t, qb, b, h, kinds[b if kinds.shape[0] > 1 else 0, h if kinds.shape[1] > 1 else 0, qb]


@njit(parallel=True, fastmath=LOOP_FLAGS, cache=True)
def forward_parallel(q, k, v, out, lse, scale, kinds, heads, block_q, block_k, score_fn, mask_fn,
                     has_score):
    """:func:`forward_block` on every (folded head, query block); ``kinds`` (Bm, Hm, nq, nk)."""
    n_heads, L = q.shape[0], q.shape[1]
    group = n_heads // k.shape[0]
    n_blocks = (L + block_q - 1) // block_q
    for item in prange(n_heads * n_blocks):
        t, qb, b, h, row = query_block_item(item, n_blocks, heads, kinds)
        i0 = qb * block_q
        forward_block(q[t], k[t // group], v[t // group], out[t], lse[t], i0,
                      min(i0 + block_q, L), scale, row, block_k, b, h, score_fn, mask_fn,
                      has_score)


@njit(fastmath=LOOP_FLAGS, cache=True)
def tile_gradients(p, dp, kind, i0, j0, b, h, lse, d, score_fn, deriv_fn, mask_fn, has_score):
    """In place on key-major tiles (bk, bq): ``p`` holds the raw scaled scores in and the weights
    out; ``dp`` holds ``dO Vᵀ`` in and ``dS`` (the gradient of the raw scores) out.

    ``dS = P ∘ (dP - D) · score_mod'(raw)``, exactly 0 where ``P`` is 0; ``lse``, ``d`` (bq,).
    """
    for c in range(p.shape[0]):
        j = np.int64(j0 + c)
        for r in range(p.shape[1]):
            i = np.int64(i0 + r)
            raw = np.float64(p[c, r])
            z = score_fn(raw, b, h, i, j) if has_score else raw
            if kind == 1 and not mask_fn(b, h, i, j):
                z = -np.inf
            w = tile_exp(z - lse[r])
            if w == 0.0:
                p[c, r], dp[c, r] = 0.0, 0.0
            else:
                ds = w * (dp[c, r] - d[r])
                if has_score:
                    ds *= deriv_fn(raw, b, h, i, j)
                p[c, r], dp[c, r] = w, ds


@njit(fastmath=LOOP_FLAGS, cache=True)
def transpose_scaled(x, i0, i1, scale):
    """``(x[i0:i1] · scale)ᵀ`` as a C-contiguous (d, n) array."""
    out = np.empty((x.shape[1], i1 - i0), dtype=x.dtype)
    for r in range(i1 - i0):
        for e in range(x.shape[1]):
            out[e, r] = x[i0 + r, e] * scale
    return out


@njit(parallel=True, fastmath=LOOP_FLAGS, cache=True)
def dq_parallel(q, k, v, do, lse, d, dq, scale, kinds, heads, block_q, block_k, score_fn,
                deriv_fn, mask_fn, has_score):
    """``dQ`` by (folded head, query block): ``dQ_i = Σ_j dS_ij K_j · scale``."""
    n_heads, L, S, E = q.shape[0], q.shape[1], k.shape[1], q.shape[2]
    group = n_heads // k.shape[0]
    n_blocks = (L + block_q - 1) // block_q
    for item in prange(n_heads * n_blocks):
        t, qb, b, h, row = query_block_item(item, n_blocks, heads, kinds)
        i0 = qb * block_q
        i1 = min(i0 + block_q, L)
        kk, vv = k[t // group], v[t // group]
        q_t = transpose_scaled(q[t], i0, i1, scale)  # (E, bq)
        do_t = transpose_scaled(do[t], i0, i1, 1.0)  # (Ev, bq)
        acc = np.zeros((i1 - i0, E), dtype=q.dtype)  # (bq, E)
        part = np.empty((i1 - i0, E), dtype=q.dtype)  # (bq, E)
        for kb in range(row.shape[0]):
            if row[kb] == 0:
                continue
            j0 = kb * block_k
            j1 = min(j0 + block_k, S)
            p = np.dot(kk[j0:j1], q_t)  # (bk, bq): raw scaled scores
            dp = np.dot(vv[j0:j1], do_t)  # (bk, bq): dO Vᵀ, key-major
            tile_gradients(p, dp, row[kb], i0, j0, b, h, lse[t, i0:i1], d[t, i0:i1], score_fn,
                           deriv_fn, mask_fn, has_score)
            np.dot(dp.T, kk[j0:j1], part)  # (bq, bk) @ (bk, E)
            acc += part
        for r in range(i1 - i0):
            for e in range(E):
                dq[t, i0 + r, e] = acc[r, e] * scale


@njit(parallel=True, fastmath=LOOP_FLAGS, cache=True)
def kv_parallel(q, k, v, do, lse, d, dk, dv, scale, kinds, heads, block_q, block_k, score_fn,
                deriv_fn, mask_fn, has_score):
    """``dK``, ``dV`` by (folded key/value head, key block), summed over the group's query
    heads."""
    n_heads, L, S, E, Ev = q.shape[0], q.shape[1], k.shape[1], q.shape[2], v.shape[2]
    n_kv = k.shape[0]
    group = n_heads // n_kv
    n_blocks = (S + block_k - 1) // block_k
    for item in prange(n_kv * n_blocks):
        u = item // n_blocks
        kb = item % n_blocks
        j0 = kb * block_k
        j1 = min(j0 + block_k, S)
        dk_acc = np.zeros((j1 - j0, E), dtype=q.dtype)  # (bk, E)
        dv_acc = np.zeros((j1 - j0, Ev), dtype=q.dtype)  # (bk, Ev)
        dk_part = np.empty((j1 - j0, E), dtype=q.dtype)  # (bk, E)
        dv_part = np.empty((j1 - j0, Ev), dtype=q.dtype)  # (bk, Ev)
        for g in range(group):
            t = u * group + g
            b, h = np.int64(t // heads), np.int64(t % heads)
            row_b, row_h = b if kinds.shape[0] > 1 else 0, h if kinds.shape[1] > 1 else 0
            for qb in range(kinds.shape[2]):
                kind = kinds[row_b, row_h, qb, kb]
                if kind == 0:
                    continue
                i0 = qb * block_q
                i1 = min(i0 + block_q, L)
                p = np.dot(k[u, j0:j1], transpose_scaled(q[t], i0, i1, scale))  # (bk, bq)
                dp = np.dot(v[u, j0:j1], transpose_scaled(do[t], i0, i1, 1.0))  # (bk, bq)
                tile_gradients(p, dp, kind, i0, j0, b, h, lse[t, i0:i1], d[t, i0:i1],
                               score_fn, deriv_fn, mask_fn, has_score)
                np.dot(p, do[t, i0:i1], dv_part)  # (bk, bq) @ (bq, Ev)
                np.dot(dp, q[t, i0:i1], dk_part)  # (bk, bq) @ (bq, E)
                dv_acc += dv_part
                dk_acc += dk_part
        for c in range(j1 - j0):
            for e in range(E):
                dk[u, j0 + c, e] = dk_acc[c, e] * scale
            for e in range(Ev):
                dv[u, j0 + c, e] = dv_acc[c, e]


def _arrays(problem):
    a = problem.args
    for name in ("q", "k", "v"):
        if not isinstance(getattr(a, name), np.ndarray):
            raise TypeError("the 'numba' backend takes NumPy arrays")
    q, k, v = (a.folded(x, a.acc_dtype) for x in (a.q, a.k, a.v))
    return q, k, v


def forward_flex(problem, score_mod, mask_mod):
    """The Numba forward pass; ``out`` (N, Hkv, G, L, Ev), ``lse`` (N, Hkv, G, L) as in
    :func:`attention_scratch.flex.forward_flex`.

    ``score_mod`` and ``mask_mod`` are plain functions or ``None`` (no score change; no
    partial tile).
    """
    a = problem.args
    q, k, v = _arrays(problem)  # (Hq', L, E), (Hkv', S, E), (Hkv', S, Ev): all finite
    out = np.zeros((*q.shape[:2], v.shape[2]), dtype=a.acc_dtype)  # (Hq', L, Ev)
    lse = np.full(q.shape[:2], np.inf, dtype=a.acc_dtype)  # (Hq', L)
    if q.shape[0] and a.L and a.S:
        score, _, mask, has_score = _mods(score_mod, None, mask_mod)
        with blas_one_thread(flops=forward_flops(q, k, v)):  # workers stopped for big kernels only
            forward_parallel(q, k, v, out, lse, q.dtype.type(a.scale), problem.kinds, a.heads,
                             problem.block_q, problem.block_k, score, mask, has_score)
    return out.reshape((*a.q.shape[:-1], a.Ev)), lse.reshape(a.q.shape[:-1])


def backward_flex(problem, d_out, out, lse, score_mod, derivative, mask_mod):
    """The Numba backward pass; arrays in the kernel layout, as in
    :func:`attention_scratch.flex.backward_flex`; ``derivative`` is that of ``score_mod``."""
    a = problem.args
    q, k, v = _arrays(problem)
    d_out = a.folded(d_out, a.acc_dtype)  # (Hq', L, Ev)
    d = np.ascontiguousarray((d_out * a.folded(out, a.acc_dtype)).sum(axis=-1))  # (Hq', L)
    lse = np.ascontiguousarray(lse.reshape(q.shape[:2]), dtype=a.acc_dtype)  # (Hq', L)
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    if q.shape[0] and a.L and a.S:
        score, derivative, mask, has_score = _mods(score_mod, derivative, mask_mod)
        scale = q.dtype.type(a.scale)
        common = (problem.kinds, a.heads, problem.block_q, problem.block_k, score, derivative,
                  mask, has_score)
        with blas_one_thread(flops=2.5 * forward_flops(q, k, v)):  # as the flash backward
            dq_parallel(q, k, v, d_out, lse, d, dq, scale, *common)
            kv_parallel(q, k, v, d_out, lse, d, dk, dv, scale, *common)
    return dq.reshape(a.q.shape), dk.reshape(a.k.shape), dv.reshape(a.v.shape)
