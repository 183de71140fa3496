"""Programmable attention: FlexAttention's score and mask functions on the tiled kernels
(chapter 16).

One tiled kernel, two small user functions (Dong et al., 2024, PyTorch's
``torch.nn.attention.flex_attention``):

* ``score_mod(score, b, h, q_idx, kv_idx) -> score`` edits each scaled score before the softmax
  (a position bias, soft-capping);
* ``mask_mod(b, h, q_idx, kv_idx) -> bool`` says which (query, key) pairs exist. It reaches the
  kernel through a :class:`~attention_scratch.block_mask.BlockMask`, which says per tile whether
  to skip it, visit it whole, or visit it and ask ``mask_mod`` (the partial tiles only).

The NumPy kernels here follow :mod:`attention_scratch.flash` (FlashAttention-2 order) with the
block mask in place of the mask band. The functions are called with broadcastable integer index
arrays for a whole tile: ``b`` (N, 1, 1, 1), ``h`` (1, Hq, 1, 1), ``q_idx`` (bq, 1) and
``kv_idx`` (1, bk), with the scores of the tile as ``(N, Hq, bq, bk)``; ``b`` counts the
flattened leading (batch) axes and ``h`` the query heads.
"""
import numpy as np

from ._checks import check_flag
from ._nonfinite import backward_rows, clean_backward_inputs, nan_rows
from .backends.flex_dispatch import get_flex_backend
from .block_mask import (
    DEFAULT_BLOCK_SIZE,
    FULL,
    PARTIAL,
    SKIP,
    BlockMask,
    evaluate_mask_mod,
    full_block_mask,
    index_grids,
)
from .contract import attention_args
from .flash_tiles import d_term, dscores, finalize_rows, recompute_probs
from .flex_mods import ScoreMod


def fold_scores(scores, v_blk, m, row_sum, acc, keep=None):
    """One tile of the online softmax, from scores already computed (and modified).

    :func:`attention_scratch.flash_tiles.forward_tile` with the product ``q kᵀ`` taken out:
    hide the entries where ``keep`` is False, move the running maximum, rescale the old sum and
    output, add this tile's. A row that has seen nothing keeps ``m = -inf``, ``row_sum = 0``.

    Shapes
    ------
    ``scores`` (..., bq, bk), ``v_blk`` (..., bk, Ev), ``m`` and ``row_sum`` (..., bq), ``acc``
    (..., bq, Ev), ``keep`` None or broadcastable to ``scores``; returns ``(m, l, acc)``.
    """
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)  # (..., bq, bk)
    m_new = np.maximum(m, scores.max(axis=-1))  # (..., bq)
    shift = np.where(np.isneginf(m_new), 0.0, m_new)  # (..., bq): no key yet, no -inf + inf
    alpha = np.exp(m - shift)  # (..., bq)
    p = np.exp(scores - shift[..., None])  # (..., bq, bk)
    acc_new = alpha[..., None] * acc + p @ v_blk  # (..., bq, Ev)
    return m_new, alpha * row_sum + p.sum(axis=-1), acc_new


class FlexProblem:
    """The validated arguments of a flex call, in the kernel layout, with the block mask.

    ``q`` (N, Hkv, G, L, E), ``k`` (N, Hkv, 1, S, E), ``v`` (N, Hkv, 1, S, Ev) as in
    :class:`attention_scratch.contract.AttentionArgs` (``args``), whose checks they passed;
    ``kinds`` (Bm, Hm, nq, nk) the tile kinds, ``Bm`` in (1, N), ``Hm`` in (1, Hq).
    """

    def __init__(self, query, key, value, score_mod, block_mask, scale, enable_gqa):
        args = attention_args(query, key, value, False, scale, enable_gqa)  # non-finite rows: 0
        self.args = args
        N, Hq, L, S = args.q.shape[0], args.heads, args.L, args.S
        if score_mod is not None and not callable(score_mod):
            raise TypeError(f"score_mod must be None or a function (score, b, h, q_idx, kv_idx)"
                            f" -> score; got {type(score_mod).__name__}")
        if block_mask is None:
            block_mask = full_block_mask(L, S, DEFAULT_BLOCK_SIZE)
        if not isinstance(block_mask, BlockMask):
            raise TypeError(f"block_mask must be a BlockMask (create_block_mask) or None; got "
                            f"{type(block_mask).__name__}")
        if tuple(block_mask.seq_lengths) != (L, S):
            raise ValueError(f"block_mask was made for Q_LEN, KV_LEN = {block_mask.seq_lengths}; "
                             f"the query and key lengths are ({L}, {S})")
        Bm, Hm = block_mask.kinds.shape[:2]
        if Bm not in (1, N) or Hm not in (1, Hq):
            raise ValueError(f"block_mask has B, H = ({Bm}, {Hm}); the inputs have {N} batch "
                             f"entries and {Hq} query heads (B must be None/1 or {N}, H None/1 "
                             f"or {Hq})")
        self.score_mod, self.block_mask = score_mod, block_mask
        self.kinds = block_mask.kinds  # (Bm, Hm, nq, nk)
        self.block_q, self.block_k = block_mask.block_size

    def tile(self, qb, kb):
        """``(i0, i1, j0, j1, kind)`` of tile (qb, kb); ``kind`` (N, Hkv, G, 1, 1) or one int
        when every (batch, head) agrees."""
        a = self.args
        i0, j0 = qb * self.block_q, kb * self.block_k
        i1, j1 = min(i0 + self.block_q, a.L), min(j0 + self.block_k, a.S)
        kind = self.kinds[:, :, qb, kb]  # (Bm, Hm)
        if np.all(kind == kind.flat[0]):
            return i0, i1, j0, j1, int(kind.flat[0])
        kind = np.broadcast_to(kind, (a.q.shape[0], a.heads))  # (N, Hq)
        return i0, i1, j0, j1, kind.reshape((*a.q.shape[:3], 1, 1))  # (N, Hkv, G, 1, 1)

    def grids(self, i0, i1, j0, j1):
        """The index arrays of one tile: b (N,1,1,1), h (1,Hq,1,1), q (bq,1), kv (1,bk)."""
        return index_grids(self.args.q.shape[0], self.args.heads, np.arange(i0, i1),
                           np.arange(j0, j1))

    def as_heads(self, x):
        """(N, Hkv, G, bq, bk) -> (N, Hq, bq, bk), a view."""
        return x.reshape((x.shape[0], self.args.heads, *x.shape[-2:]))

    def keep(self, i0, i1, j0, j1, kind):
        """The tile's "may attend" mask, (N, Hkv, G, bq, bk) or broadcastable; None when full."""
        if isinstance(kind, int) and kind == FULL:
            return None
        a = self.args
        shape = (a.q.shape[0], a.heads, i1 - i0, j1 - j0)
        inside = evaluate_mask_mod(self.block_mask.mask_mod, *self.grids(i0, i1, j0, j1), shape)
        inside = inside.reshape(a.q.shape[:3] + shape[-2:])  # (N, Hkv, G, bq, bk)
        if isinstance(kind, int):
            return inside
        return (kind == FULL) | ((kind != SKIP) & inside)  # (N, Hkv, G, bq, bk)

    def modified(self, scores, i0, i1, j0, j1, fn=None):
        """``score_mod`` (or ``fn``, its derivative) of a tile's scaled scores.

        ``scores`` (N, Hkv, G, bq, bk) -> the same shape.
        """
        fn = self.score_mod if fn is None else fn
        out = fn(self.as_heads(scores), *self.grids(i0, i1, j0, j1))
        out = np.asarray(out, dtype=scores.dtype)
        try:
            return np.broadcast_to(out, self.as_heads(scores).shape).reshape(scores.shape)
        except ValueError:
            raise ValueError(f"score_mod returned shape {out.shape}, which does not broadcast "
                             f"to the tile's scores {self.as_heads(scores).shape}") from None


def forward_flex(problem):
    """The tiled forward pass over the block mask; ``out`` (N, Hkv, G, L, Ev), ``lse`` (N, Hkv,
    G, L)."""
    a, acc = problem.args, problem.args.acc_dtype
    L, S, Ev = a.L, a.S, a.Ev
    out = np.zeros((*a.q.shape[:-1], Ev), dtype=a.dtype)  # (N, Hkv, G, L, Ev)
    lse = np.full(a.q.shape[:-1], np.inf, dtype=acc)  # (N, Hkv, G, L)
    n_q, n_k = problem.kinds.shape[2:]
    for qb in range(n_q if S else 0):
        i0, i1 = qb * problem.block_q, min(qb * problem.block_q + problem.block_q, L)
        q_blk = a.q[..., i0:i1, :].astype(acc)  # (N, Hkv, G, bq, E)
        m = np.full(q_blk.shape[:-1], -np.inf, dtype=acc)  # (N, Hkv, G, bq)
        row_sum = np.zeros(q_blk.shape[:-1], dtype=acc)  # (N, Hkv, G, bq)
        o = np.zeros((*q_blk.shape[:-1], Ev), dtype=acc)  # (N, Hkv, G, bq, Ev)
        for kb in range(n_k):
            _, _, j0, j1, kind = problem.tile(qb, kb)
            if isinstance(kind, int) and kind == SKIP:
                continue  # the tile the mask leaves empty: never touched
            k_blk = a.k[..., j0:j1, :].astype(acc)  # (N, Hkv, 1, bk, E)
            v_blk = a.v[..., j0:j1, :].astype(acc)  # (N, Hkv, 1, bk, Ev)
            scores = (q_blk @ np.swapaxes(k_blk, -1, -2)) * a.scale  # (N, Hkv, G, bq, bk)
            if problem.score_mod is not None:
                scores = problem.modified(scores, i0, i1, j0, j1)  # (N, Hkv, G, bq, bk)
            keep = problem.keep(i0, i1, j0, j1, kind)  # (N, Hkv, G, bq, bk) or None
            m, row_sum, o = fold_scores(scores, v_blk, m, row_sum, o, keep)
        out[..., i0:i1, :], lse[..., i0:i1] = finalize_rows(m, row_sum, o)
    return out, lse


def visibility(problem, bad_kv=None, rows=None):
    """Who sees what under the block mask, for the rule on NaN and infinities (CONVENTIONS.md).

    Returns ``has_key`` (N, Hkv, G, L): the rows that see some key; ``sees_bad`` (N, Hkv, G, L):
    the rows that see a key flagged in ``bad_kv`` (N, Hkv, 1, S); ``seen_by`` (N, Hkv, 1, S): the
    keys some row flagged in ``rows`` (N, Hkv, G, L) sees. Runs only when an input is not finite.
    """
    a = problem.args
    has_key = np.zeros(a.q.shape[:-1], dtype=bool)  # (N, Hkv, G, L)
    sees_bad = np.zeros(a.q.shape[:-1], dtype=bool)  # (N, Hkv, G, L)
    seen_by = np.zeros(a.k.shape[:-1], dtype=bool)  # (N, Hkv, 1, S)
    n_q, n_k = problem.kinds.shape[2:]
    for qb in range(n_q if a.S else 0):
        for kb in range(n_k):
            i0, i1, j0, j1, kind = problem.tile(qb, kb)
            if isinstance(kind, int) and kind == SKIP:
                continue
            keep = problem.keep(i0, i1, j0, j1, kind)  # (N, Hkv, G, bq, bk) or None: all
            if keep is None:
                keep = np.ones((*a.q.shape[:3], i1 - i0, j1 - j0), dtype=bool)
            has_key[..., i0:i1] |= keep.any(axis=-1)
            if bad_kv is not None:
                sees_bad[..., i0:i1] |= (keep & bad_kv[..., None, j0:j1]).any(axis=-1)
            if rows is not None:
                hit = (keep & rows[..., i0:i1, None]).any(axis=(-3, -2))  # (N, Hkv, bk)
                seen_by[..., j0:j1] |= hit[:, :, None, :]
    return has_key, sees_bad, seen_by


def poisoned_rows(problem):
    """``(N, Hkv, G, L)``: the rows that see a non-finite input (or whose query is one); None
    when every input is finite."""
    if problem.args.nonfinite is None:
        return None
    bad_q, bad_kv = problem.args.nonfinite  # (N, Hkv, G, L), (N, Hkv, 1, S)
    has_key, sees_bad, _ = visibility(problem, bad_kv=bad_kv)
    return has_key & (bad_q | sees_bad)


def derivative_of(score_mod):
    """``d score_mod / d score`` as a function, ``None`` for no ``score_mod``; ``ValueError``
    when unknown."""
    if score_mod is None:
        return None
    if isinstance(score_mod, ScoreMod) and score_mod.derivative is not None:
        return score_mod.derivative
    raise ValueError(f"the backward pass needs the derivative of score_mod "
                     f"{getattr(score_mod, '__name__', score_mod)!r} with respect to the score; "
                     f"pass score_mod=at.ScoreMod(fn, derivative) (the library's mods in "
                     f"attention_scratch.flex_mods carry theirs)")


def plain(score_mod):
    """The function a ``score_mod`` calls (a :class:`ScoreMod` unwrapped), or ``None``."""
    return score_mod.fn if isinstance(score_mod, ScoreMod) else score_mod


def block_mask_mod(problem):
    """The ``mask_mod`` the kernels must call, or ``None`` when no tile is partial."""
    return problem.block_mask.mask_mod if np.any(problem.kinds == PARTIAL) else None


def backward_flex(problem, d_out, out, lse):
    """The tiled backward pass over the block mask (key blocks outer); returns dq, dk, dv in the
    kernel layout."""
    a, acc = problem.args, problem.args.acc_dtype
    deriv = derivative_of(problem.score_mod)
    big_d = d_term(d_out.astype(acc), out.astype(acc))  # (N, Hkv, G, L)
    lse = lse.astype(acc)  # (N, Hkv, G, L)
    dq = np.zeros(a.q.shape, dtype=acc)  # (N, Hkv, G, L, E)
    dk = np.zeros(a.k.shape, dtype=acc)  # (N, Hkv, 1, S, E)
    dv = np.zeros(a.v.shape, dtype=acc)  # (N, Hkv, 1, S, Ev)
    n_q, n_k = problem.kinds.shape[2:]
    for kb in range(n_k if a.L else 0):
        for qb in range(n_q):
            i0, i1, j0, j1, kind = problem.tile(qb, kb)
            if isinstance(kind, int) and kind == SKIP:
                continue
            k_blk = a.k[..., j0:j1, :].astype(acc)  # (N, Hkv, 1, bk, E)
            v_blk = a.v[..., j0:j1, :].astype(acc)  # (N, Hkv, 1, bk, Ev)
            q_blk = a.q[..., i0:i1, :].astype(acc)  # (N, Hkv, G, bq, E)
            do_blk = d_out[..., i0:i1, :].astype(acc)  # (N, Hkv, G, bq, Ev)
            raw = (q_blk @ np.swapaxes(k_blk, -1, -2)) * a.scale  # (N, Hkv, G, bq, bk)
            scores = raw if deriv is None else problem.modified(raw, i0, i1, j0, j1)
            keep = problem.keep(i0, i1, j0, j1, kind)
            p = recompute_probs(scores, lse[..., i0:i1], keep)  # (N, Hkv, G, bq, bk)
            dv[..., j0:j1, :] += (np.swapaxes(p, -1, -2) @ do_blk).sum(2, keepdims=True)
            dp = do_blk @ np.swapaxes(v_blk, -1, -2)  # (N, Hkv, G, bq, bk)
            ds = dscores(p, dp, big_d[..., i0:i1])  # (N, Hkv, G, bq, bk): d loss / d mod(score)
            if deriv is not None:  # chain rule through score_mod; 0 stays 0 where p = 0
                slope = problem.modified(raw, i0, i1, j0, j1, deriv)  # (N, Hkv, G, bq, bk)
                ds = np.where(p == 0, 0.0, ds * slope)  # (N, Hkv, G, bq, bk)
            dq[..., i0:i1, :] += (ds @ k_blk) * a.scale  # (N, Hkv, G, bq, E)
            dk[..., j0:j1, :] += (np.swapaxes(ds, -1, -2) @ q_blk).sum(2, keepdims=True) * a.scale
    return dq.astype(a.dtype), dk.astype(a.dtype), dv.astype(a.dtype)


def flex_attention(query, key, value, score_mod=None, block_mask=None, scale=None,
                   enable_gqa=False, return_lse=False, *, backend="numpy"):
    """Attention with a programmable score (``score_mod``) and mask (``block_mask``), tile by
    tile.

    Parameters
    ----------
    query, key, value : array_like
        ``(..., Hq, L, E)``, ``(..., Hkv, S, E)``, ``(..., Hkv, S, Ev)``.
    score_mod : callable, optional
        ``score_mod(score, b, h, q_idx, kv_idx) -> score``, applied to every scaled score of
        every visited tile, before the softmax.
    block_mask : BlockMask, optional
        From :func:`attention_scratch.create_block_mask`; ``None`` attends to every key.
        Its ``Q_LEN, KV_LEN`` must be ``L, S``; its ``B`` 1 or the product of the leading axes,
        its ``H`` 1 or ``Hq``.
    scale : float, optional
        Multiplies ``q · k`` before ``score_mod``; default ``1/sqrt(E)``.
    enable_gqa : bool
        Allow ``Hkv < Hq``: query head ``h`` reads key/value head ``h // (Hq / Hkv)``.
    return_lse : bool
        Also return the natural log-sum-exp of each row's modified, masked scores.
    backend : str
        ``"numpy"`` (this module), ``"numba"`` (compiled, parallel; the functions are compiled
        with ``numba.njit``) or ``"auto"`` (Numba when installed).

    Returns
    -------
    out : ``(..., Hq, L, Ev)``; 0 on a row with nothing to attend to.
    lse : ``(..., Hq, L)``, with ``return_lse``; ``+inf`` on a row with nothing to attend to
        (PyTorch's flex_attention writes ``-inf`` there).

    Shapes
    ------
    ``(..., Hq, L, E), (..., Hkv, S, E), (..., Hkv, S, Ev) -> (..., Hq, L, Ev)``.
    """
    return_lse = check_flag(return_lse, "return_lse")
    impl = get_flex_backend(backend)
    problem = FlexProblem(query, key, value, score_mod, block_mask, scale, enable_gqa)
    if impl is None:
        out, lse = forward_flex(problem)
    else:
        out, lse = impl.forward_flex(problem, plain(score_mod), block_mask_mod(problem))
    poisoned = poisoned_rows(problem)  # (N, Hkv, G, L) or None
    out, lse = nan_rows(out, poisoned), nan_rows(lse[..., None], poisoned)[..., 0]
    a = problem.args
    out = out.astype(a.dtype, copy=False).reshape(a.output_shape)  # (..., Hq, L, Ev)
    return (out, lse.reshape(a.lse_shape)) if return_lse else out


def flex_attention_backward(grad_out, query, key, value, out, lse, score_mod=None,
                            block_mask=None, scale=None, enable_gqa=False, *, backend="numpy"):
    """Gradients of :func:`flex_attention`, recomputing each visited tile from ``lse``.

    ``score_mod`` must carry its derivative (:class:`attention_scratch.ScoreMod`; the library's
    mods do), else ``ValueError``. The other arguments are those of the forward call.

    Returns
    -------
    grad_query, grad_key, grad_value : shaped like the inputs (GQA key/value gradients summed
    over each group).

    Shapes
    ------
    ``grad_out`` and ``out`` (..., Hq, L, Ev), ``lse`` (..., Hq, L).
    """
    impl = get_flex_backend(backend)
    problem = FlexProblem(query, key, value, score_mod, block_mask, scale, enable_gqa)
    derivative = derivative_of(score_mod)  # a clear error before any work
    a = problem.args
    layout = a.q.shape[:-1]  # (N, Hkv, G, L)
    arrays = []
    for name, arr, shape in (("grad_out", grad_out, a.output_shape), ("out", out, a.output_shape),
                             ("lse", lse, a.lse_shape)):
        arr = np.asarray(arr, dtype=a.acc_dtype)
        if arr.shape != shape:
            raise ValueError(f"{name} must have shape {shape} for these inputs; got {arr.shape}")
        arrays.append(arr.reshape(layout + shape[len(a.lead) + 2:]))
    rows = backward_rows(poisoned_rows(problem), *arrays)  # (N, Hkv, G, L) or None
    arrays = clean_backward_inputs(rows, *arrays)
    if impl is None:
        dq, dk, dv = backward_flex(problem, *arrays)
    else:
        dq, dk, dv = impl.backward_flex(problem, *arrays, plain(score_mod), derivative,
                                        block_mask_mod(problem))
    if rows is not None:  # NaN into dq of those rows and into dk, dv of every key they see
        has_key, _, keys = visibility(problem, rows=rows)  # a row without keys sees none
        rows = rows & has_key
        dq, dk, dv = nan_rows(dq, rows), nan_rows(dk, keys), nan_rows(dv, keys)
    kv_lead = (*a.lead, a.kv_heads)
    return (dq.astype(a.dtype).reshape((*a.lead, a.heads, a.L, a.E)),  # (..., Hq, L, E)
            dk.astype(a.dtype).reshape((*kv_lead, a.S, a.E)),  # (..., Hkv, S, E)
            dv.astype(a.dtype).reshape((*kv_lead, a.S, a.Ev)))  # (..., Hkv, S, Ev)
