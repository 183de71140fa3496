"""Flash attention in NumPy: the tiled forward and backward passes (chapters 9 and 10).

FlashAttention-2 (Dao, 2024) ordering: the outer loop runs over query blocks,
the inner loop over the key/value blocks that block may see. Each query block
keeps an unnormalised output, a running maximum and a running sum; the output
is divided once, after the last key block, and the natural log-sum-exp of each
row is stored. No ``(L, S)`` array is ever formed: the largest temporaries are
``(block_q, block_k)`` tiles. The backward pass recomputes the attention weights
of each tile from the log-sum-exp, with ``D = rowsum(dO ∘ O)``.

The public functions dispatch on ``backend``; this module provides the NumPy
implementations :func:`flash_attention_numpy` and
:func:`flash_attention_backward_numpy`, the reference the accelerated backends
are tested against.
"""
import numpy as np

from ._checks import array_module, check_flag
from .backends import get_backend
from .bands import integer_band, mask_band
from .contract import AUTO_BLOCK, DEFAULT_BLOCK, attention_args, check_window
from .flash_tiles import (
    d_term,
    dscores,
    finalize_rows,
    forward_tile,
    key_block_range,
    query_block_range,
    recompute_probs,
    tile_keep,
    tile_kind,
)


def _device_keep(xp, i0, i1, j0, j1, band):
    """The mask of a partial tile as an array of module ``xp`` (None for a full tile)."""
    if tile_kind(i0, i1, j0, j1, band) != "partial":
        return None
    keep = tile_keep(i0, i1, j0, j1, band)  # (bq, bk), NumPy
    return keep if xp is np else xp.asarray(keep)


def _blocks_for(impl, block_q, block_k):
    """The tile sizes to hand to backend ``impl``: the Numba backend gets the default marker
    (:data:`~attention_scratch.contract.AUTO_BLOCK`, which it tunes), the
    others plain ints."""
    if impl is not None and impl.__name__.endswith(".numba.cpu"):
        return block_q, block_k
    return int(block_q) if block_q is AUTO_BLOCK else block_q, (
        int(block_k) if block_k is AUTO_BLOCK else block_k)


def forward_blocks(q, k, v, scale, band, block_q, block_k, dtype, acc_dtype):
    """The tiled forward pass on the kernel layout; returns ``out`` (``dtype``) and ``lse``
    (``acc_dtype``).

    Shapes
    ------
    ``q`` (N, Hkv, G, L, E), ``k`` (N, Hkv, 1, S, E), ``v`` (N, Hkv, 1, S, Ev) ->
    ``out`` (N, Hkv, G, L, Ev), ``lse`` (N, Hkv, G, L). Works on NumPy and CuPy
    arrays alike: every new array comes from the inputs' array module ``xp``. ``band`` is the
    mask band ``(lo, hi)`` (:mod:`attention_scratch.bands`); it accumulates in ``acc_dtype``.
    """
    xp = array_module(q, k, v)
    L, S, Ev = q.shape[-2], k.shape[-2], v.shape[-1]
    out = xp.empty(q.shape[:-1] + (Ev,), dtype=dtype)  # (N, Hkv, G, L, Ev)
    lse = xp.empty(q.shape[:-1], dtype=acc_dtype)  # (N, Hkv, G, L)
    for i0 in range(0, L, block_q):
        i1 = min(i0 + block_q, L)
        q_blk = q[..., i0:i1, :].astype(acc_dtype, copy=False)  # (N, Hkv, G, bq, E)
        m = xp.full(q_blk.shape[:-1], -np.inf, dtype=acc_dtype)  # (N, Hkv, G, bq)
        l = xp.zeros(q_blk.shape[:-1], dtype=acc_dtype)  # (N, Hkv, G, bq)
        o = xp.zeros(q_blk.shape[:-1] + (Ev,), dtype=acc_dtype)  # (N, Hkv, G, bq, Ev)
        for kb in key_block_range(i0, i1, S, block_k, band):
            j0, j1 = kb * block_k, min(kb * block_k + block_k, S)
            keep = _device_keep(xp, i0, i1, j0, j1, band)  # (bq, bk) or None
            k_blk = k[..., j0:j1, :].astype(acc_dtype, copy=False)  # (N, Hkv, 1, bk, E)
            v_blk = v[..., j0:j1, :].astype(acc_dtype, copy=False)  # (N, Hkv, 1, bk, Ev)
            m, l, o = forward_tile(q_blk, k_blk, v_blk, m, l, o, scale, keep)
        out[..., i0:i1, :], lse[..., i0:i1] = finalize_rows(m, l, o)
    return out, lse


def backward_blocks(d_out, q, k, v, out, lse, scale, band, block_q, block_k, dtype, acc_dtype):
    """The tiled backward pass on the kernel layout (key blocks outer, as in FlashAttention-2).

    Shapes
    ------
    ``d_out`` and ``out`` (N, Hkv, G, L, Ev), ``lse`` (N, Hkv, G, L), the rest as in
    :func:`forward_blocks` -> ``dq`` like ``q``, ``dk`` like ``k``, ``dv`` like ``v``.
    """
    xp = array_module(q, k, v)
    L, S, Ev = q.shape[-2], k.shape[-2], v.shape[-1]
    big_d = d_term(d_out.astype(acc_dtype), out.astype(acc_dtype))  # (N, Hkv, G, L)
    lse = lse.astype(acc_dtype)  # (N, Hkv, G, L)
    # D rides along in the dP product as one more column, [dO, D] [V, -1]ᵀ = dP - D, so that no
    # sweep over a tile subtracts it. (Not so for lse: S must be the forward's scores bit for
    # bit, else at large logits S - lse may come out above 0 and exp overflow.)
    minus_ones = -xp.ones(v.shape[:-1] + (1,), dtype=acc_dtype)  # (N, Hkv, 1, S, 1)
    do_d = xp.concatenate([d_out.astype(acc_dtype), big_d[..., None]],
                          axis=-1)  # (N, Hkv, G, L, Ev + 1)
    v_minus_one = xp.concatenate([v.astype(acc_dtype), minus_ones],
                                 axis=-1)  # (N, Hkv, 1, S, Ev + 1)
    dq = xp.zeros(q.shape, dtype=acc_dtype)  # (N, Hkv, G, L, E): dS K, summed over key blocks
    dk = xp.empty(k.shape, dtype=dtype)  # (N, Hkv, 1, S, E)
    dv = xp.empty(v.shape, dtype=dtype)  # (N, Hkv, 1, S, Ev)
    for j0 in range(0, S, block_k):
        j1 = min(j0 + block_k, S)
        k_blk = k[..., j0:j1, :].astype(acc_dtype, copy=False)  # (N, Hkv, 1, bk, E)
        v_blk = v_minus_one[..., j0:j1, :]  # (N, Hkv, 1, bk, Ev + 1): [V, -1]
        dk_blk = xp.zeros(k_blk.shape, dtype=acc_dtype)  # (N, Hkv, 1, bk, E)
        dv_blk = xp.zeros(v_blk.shape[:-1] + (Ev,), dtype=acc_dtype)  # (N, Hkv, 1, bk, Ev)
        for qb in query_block_range(j0, j1, L, block_q, band):
            i0, i1 = qb * block_q, min(qb * block_q + block_q, L)
            keep = _device_keep(xp, i0, i1, j0, j1, band)  # (bq, bk) or None
            q_blk = q[..., i0:i1, :].astype(acc_dtype, copy=False)  # (N, Hkv, G, bq, E)
            do_blk = do_d[..., i0:i1, :]  # (N, Hkv, G, bq, Ev + 1): [dO, D]
            scores = q_blk @ np.swapaxes(k_blk, -1, -2)  # (N, Hkv, G, bq, bk): the forward's
            scores *= scale  # (N, Hkv, G, bq, bk): S, scaled in place as forward_tile scales it
            p = recompute_probs(scores, lse[..., i0:i1], keep)  # (N, Hkv, G, bq, bk)
            p_do = np.swapaxes(p, -1, -2) @ do_blk[..., :Ev]  # (N, Hkv, G, bk, Ev)
            dv_blk += p_do.sum(2, keepdims=True)  # (N, Hkv, 1, bk, Ev): summed over the group
            ds = do_blk @ np.swapaxes(v_blk, -1, -2)  # (N, Hkv, G, bq, bk): dP - D
            ds *= p  # (N, Hkv, G, bq, bk): dS = P ∘ (dP - D), in place on the tile we own
            if ds.size and xp.isnan(ds.max()):  # rare: a NaN, maybe 0 · NaN where P = 0 (dscores)
                dp = do_blk[..., :Ev] @ np.swapaxes(v_blk[..., :Ev], -1, -2)  # (N, Hkv, G, bq, bk)
                ds = dscores(p, dp, big_d[..., i0:i1])  # (N, Hkv, G, bq, bk)
            dq[..., i0:i1, :] += ds @ k_blk  # (N, Hkv, G, bq, E): scaled once, at the end
            ds_q = np.swapaxes(ds, -1, -2) @ q_blk  # (N, Hkv, G, bk, E)
            dk_blk += ds_q.sum(2, keepdims=True)  # (N, Hkv, 1, bk, E): summed over the group
        dk[..., j0:j1, :], dv[..., j0:j1, :] = dk_blk * scale, dv_blk
    dq *= scale  # (N, Hkv, G, L, E): dQ = dS K · scale
    return dq.astype(dtype), dk, dv


def flash_attention_numpy(query, key, value, is_causal=False, scale=None, enable_gqa=False, *,
                          causal_align="top_left", window=None, block_q=DEFAULT_BLOCK,
                          block_k=DEFAULT_BLOCK, return_lse=False):
    """The NumPy implementation behind :func:`flash_attention` (same arguments, no ``backend``)."""
    args = attention_args(query, key, value, is_causal, scale, enable_gqa,
                          causal_align=causal_align, window=window, block_q=block_q,
                          block_k=block_k)
    out, lse = forward_blocks(args.q, args.k, args.v, args.scale, args.band, args.plan.block_q,
                              args.plan.block_k, args.dtype, args.acc_dtype)  # kernel layout
    return args.finish_forward(out, lse, return_lse)  # (..., Hq, L, Ev) [, (..., Hq, L)]


def flash_attention(query, key, value, is_causal=False, scale=None, enable_gqa=False, *,
                    causal_align="top_left", window=None, block_q=AUTO_BLOCK,
                    block_k=AUTO_BLOCK, return_lse=False, backend="numpy"):
    """Exact scaled dot-product attention, computed tile by tile without the (L, S) matrix.

    Parameters
    ----------
    query, key, value : array_like
        ``(..., Hq, L, E)``, ``(..., Hkv, S, E)``, ``(..., Hkv, S, Ev)``; the
        leading axes must match. float16 input is accumulated in float32.
    is_causal : bool
        Causal mask, aligned by ``causal_align``: ``"top_left"`` (key ``j <= i``,
        as PyTorch SDPA) or ``"bottom_right"`` (``j <= i + S - L``, the KV-cache alignment).
    scale : float, optional
        Multiplies the scores; default ``1/sqrt(E)``.
    enable_gqa : bool
        Allow ``Hkv < Hq`` (grouped-query attention): query head ``h`` reads
        key/value head ``h // (Hq / Hkv)``.
    window : (int or None, int or None), optional
        Sliding window ``(left, right)``: query ``i`` keeps keys
        ``i' - left <= j <= i' + right`` with ``i' = i + S - L``; combined with
        ``is_causal`` when both are given.
    block_q, block_k : int
        Tile sizes requested: query rows per outer step, keys per inner step. Any
        positive value works, and the last block of a sequence may be shorter. The
        NumPy and Numba backends use them as given; left at the default (64), the Numba
        backend tunes them for the machine and caches the choice
        (:mod:`attention_scratch.backends.numba.autotune`); on the CUDA backend they are
        requests: float16/bfloat16 input with the default 64 × 64 runs on a
        tensor-core kernel with its own tiles (128-row query tiles for ``mma.sync``),
        and other sizes are reduced to what one thread block holds.
        :func:`attention_scratch.backends.tile_plan` says which tiles run.
    return_lse : bool
        Also return the natural log-sum-exp of each row's scaled, masked scores.
    backend : str
        ``"numpy"`` (this module's reference), ``"numba"`` (the parallel CPU kernel
        of :mod:`attention_scratch.backends.numba`), ``"cupy"`` (the GPU) or
        ``"auto"`` (CuPy for CuPy arrays when usable, else Numba when installed,
        else NumPy). An unknown name raises ``ValueError``; a backend that cannot
        run here raises :class:`attention_scratch.backends.BackendUnavailable`.

    Returns
    -------
    out : ndarray of the input dtype, ``(..., Hq, L, Ev)``; 0 on rows with nothing to attend to.
    lse : ndarray, ``(..., Hq, L)``, only with ``return_lse``; float32 for float16
        input, ``+inf`` on rows with nothing to attend to.

    Notes
    -----
    NaN and infinities, on every backend alike ("masked means absent", ``CONVENTIONS.md``): a row
    whose query, or a key or value it may attend, holds NaN or ±inf has output and lse NaN;
    one in a key or value the mask hides from a row (causality, the window) never reaches
    that row. Scores that overflow from finite inputs are outside this rule.

    Shapes
    ------
    ``(..., Hq, L, E), (..., Hkv, S, E), (..., Hkv, S, Ev) -> (..., Hq, L, Ev)``. Any axis may
    be empty, as in PyTorch: a batch axis, ``Hq`` (with ``Hkv``) or ``L`` = 0 gives an empty
    result; ``S = 0`` leaves every row with nothing to attend to (output 0, lse ``+inf``);
    ``E = 0`` makes every score an empty dot product, 0, so each row averages the values it
    may attend (the default scale is then 1).
    """
    return_lse = check_flag(return_lse, "return_lse")
    impl = get_backend(backend, query, key, value)
    run = flash_attention_numpy if impl is None else impl.flash_attention
    block_q, block_k = _blocks_for(impl, block_q, block_k)
    return run(query, key, value, is_causal, scale, enable_gqa, causal_align=causal_align,
               window=window, block_q=block_q, block_k=block_k, return_lse=return_lse)


# the bytes of tiles one step of the NumPy backward may hold: about a core's L2 cache (512 KiB on
# the 2-core AMD EPYC of chapter 12); 1 MiB ran faster there than 2, 4 or 8 MiB
TILE_CACHE_BYTES = 2**20


def flash_attention_backward_numpy(grad_out, query, key, value, out, lse, is_causal=False,
                                   scale=None, enable_gqa=False, *, causal_align="top_left",
                                   window=None, block_q=DEFAULT_BLOCK, block_k=DEFAULT_BLOCK):
    """The NumPy implementation behind :func:`flash_attention_backward` (no ``backend``)."""
    args = attention_args(query, key, value, is_causal, scale, enable_gqa,
                          causal_align=causal_align, window=window, block_q=block_q,
                          block_k=block_k)
    rows, d_out, out, lse = args.backward_inputs(grad_out, out, lse)  # kernel layout, rows cleaned
    arrays = (d_out, args.q, args.k, args.v, out, lse)
    n_heads = args.q.shape[0] * args.q.shape[1]  # N · Hkv, folded into one axis of heads below
    d_out, q, k, v, out, lse = (a.reshape((1, n_heads) + a.shape[2:]) for a in arrays)
    xp = array_module(q)
    dq = xp.empty(q.shape, dtype=args.dtype)  # (1, N·Hkv, G, L, E)
    dk, dv = xp.empty(k.shape, dtype=args.dtype), xp.empty(v.shape, dtype=args.dtype)
    # a few heads at a time on a CPU, so that one step's tiles stay in a core's cache
    for h in _head_steps(xp, q.shape, k.shape[-2], args.plan.block_q, args.plan.block_k,
                         args.acc_dtype):
        dq[:, h], dk[:, h], dv[:, h] = backward_blocks(
            d_out[:, h], q[:, h], k[:, h], v[:, h], out[:, h], lse[:, h], args.scale, args.band,
            args.plan.block_q, args.plan.block_k, args.dtype, args.acc_dtype)
    return args.finish_backward(rows, dq, dk, dv)  # shaped like query, key, value


def _head_steps(xp, q_shape, S, block_q, block_k, acc_dtype):
    """The slices of the head axis that the NumPy backward pass works on at once.

    On a CPU, as many heads as keep one step's tiles, ``(heads, G, block_q, block_k)`` in
    ``acc_dtype``, within :data:`TILE_CACHE_BYTES` (at least one): the pass makes several
    sweeps over each tile, and 8 heads of 512 × 512 float32 tiles (8 MiB) would send each
    sweep out of the core's own caches. On a GPU, every head at once (one big kernel beats many
    small ones).

    Shapes
    ------
    ``q_shape`` (1, heads, G, L, E), ``S`` keys.
    """
    heads, group, L = q_shape[1], q_shape[2], q_shape[3]
    tile_bytes = group * min(block_q, L) * min(block_k, S) * np.dtype(acc_dtype).itemsize
    step = heads if xp is not np else TILE_CACHE_BYTES // max(tile_bytes, 1)
    step = max(step, 1)
    return [slice(h0, min(h0 + step, heads)) for h0 in range(0, heads, step)]


def flash_attention_backward(grad_out, query, key, value, out, lse, is_causal=False, scale=None,
                             enable_gqa=False, *, causal_align="top_left", window=None,
                             block_q=AUTO_BLOCK, block_k=AUTO_BLOCK, backend="numpy"):
    """Gradients of :func:`flash_attention`, recomputing the weights tile by tile from ``lse``.

    Parameters
    ----------
    grad_out : array_like
        dL/dout, ``(..., Hq, L, Ev)``.
    query, key, value : array_like
        The forward inputs.
    out, lse : array_like
        The forward output and log-sum-exp (``flash_attention(..., return_lse=True)``).
    is_causal, scale, enable_gqa, causal_align, window, block_q, block_k, backend
        As in :func:`flash_attention`; the mask arguments must be those of the forward call.

    Returns
    -------
    grad_query, grad_key, grad_value : ndarrays of the input dtype, shaped like the
        inputs. Key/value gradients of grouped-query attention are summed over each
        group. Rows with nothing to attend to contribute 0. A row that is NaN in the
        forward pass, or whose ``grad_out`` holds NaN or ±inf, has ``grad_query`` NaN and
        makes ``grad_key`` and ``grad_value`` NaN for every key it may attend; nothing else
        changes (``CONVENTIONS.md``).

    Shapes
    ------
    ``(..., Hq, L, E)``, ``(..., Hkv, S, E)``, ``(..., Hkv, S, Ev)``; empty axes as in
    :func:`flash_attention` (gradients of empty arrays are empty, those of keys no row sees 0).
    """
    impl = get_backend(backend, query, key, value)
    run = flash_attention_backward_numpy if impl is None else impl.flash_attention_backward
    block_q, block_k = _blocks_for(impl, block_q, block_k)
    return run(grad_out, query, key, value, out, lse, is_causal, scale, enable_gqa,
               causal_align=causal_align, window=window, block_q=block_q, block_k=block_k)


def block_schedule(L, S, block_q=DEFAULT_BLOCK, block_k=DEFAULT_BLOCK, is_causal=False,
                   causal_align="top_left", window=None):
    """The tiles the forward pass visits, in order: a list of ``(q_block, k_block, kind)``.

    ``kind`` is ``"full"`` (no mask needed) or ``"partial"`` (masked on this tile
    only); tiles the mask leaves empty are skipped and not listed. Without a mask
    every one of ``ceil(L/block_q)·ceil(S/block_k)`` tiles is visited.
    """
    band = integer_band(mask_band(L, S, is_causal, causal_align, check_window(window)), L, S)
    schedule = []
    for i0 in range(0, L, block_q):
        i1 = min(i0 + block_q, L)
        for kb in key_block_range(i0, i1, S, block_k, band):
            j0, j1 = kb * block_k, min(kb * block_k + block_k, S)
            schedule.append((i0 // block_q, kb, tile_kind(i0, i1, j0, j1, band)))
    return schedule
