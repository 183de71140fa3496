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

from ._checks import (array_module, as_float_array, check_flag, check_ndim, check_positive_int,
                      check_scale)
from ._nonfinite import band_backward_inputs, mark_band_backward, mark_band_forward, scan, zero_rows
from .backends import BACKENDS, check_backend_name, get_backend  # noqa: F401  (BACKENDS: public)
from .flash_tiles import (d_term, dscores, finalize_rows, forward_tile, key_block_range,
                          mask_band, query_block_range, reachable_keys, recompute_probs, tile_keep,
                          tile_kind)


def check_backend(backend):
    """Raise ``ValueError`` unless ``backend`` is one of ``"numpy"``, ``"numba"``, ``"cupy"``, ``"auto"``."""
    check_backend_name(backend)


def _check_window(window):
    if window is None:
        return None
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise ValueError(f"window must be None or a pair (left, right); got {window!r}")
    for side, value in zip(("left", "right"), window):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                  or value < 0):
            raise ValueError(f"window {side} must be None or a non-negative int; got {value!r}")
    return tuple(None if w is None else int(w) for w in window)


def zero_unreachable_keys(x, L, band):
    """``x`` (..., S, ·) with the rows of keys no query may attend to set to 0 (a copy; ``x`` itself
    when every key is reachable). Works on NumPy and CuPy arrays."""
    S = x.shape[-2]
    reach = reachable_keys(L, S, band)
    if len(reach) == S:
        return x
    xp = array_module(x)
    keep = xp.zeros((S, 1), dtype=bool)  # (S, 1)
    keep[reach.start:reach.stop] = True
    return xp.where(keep, x, 0).astype(x.dtype)  # (..., S, ·)


def default_scale(E):
    """``1/sqrt(E)``; 1 for ``E = 0``, where every score is an empty dot product, 0 whatever the scale."""
    return float(1.0 / np.sqrt(E)) if E > 0 else 1.0


def prepare(query, key, value, is_causal=False, scale=None, enable_gqa=False, *,
            causal_align="top_left", window=None, block_q=64, block_k=64, find_nonfinite=True):
    """Validate the arguments of a flash kernel and bring the inputs to the kernel layout.

    Returns a dict with ``q`` (N, Hkv, G, L, E), ``k`` (N, Hkv, 1, S, E),
    ``v`` (N, Hkv, 1, S, Ev) (views where possible), the float ``scale``, the mask
    ``band``, the block sizes, the output ``dtype``, the accumulation dtype
    ``acc`` (float32 for float16 input), the ``lead`` axes to restore and ``found``:
    ``None`` when every input is finite, else the rows of ``q`` and of ``k``/``v``
    holding NaN or ±inf (:func:`attention_scratch._nonfinite.scan`). Those rows are
    zeroed in ``q``, ``k``, ``v``, so no kernel ever meets a non-finite number; the
    caller marks the rows the rule of DESIGN.md §3 makes NaN (:func:`finish_forward`).
    ``find_nonfinite=False`` skips the scan (``found`` is ``None``): for callers that only
    validate, or scan the inputs where they live (the CUDA front end).
    """
    scale = check_scale(scale)
    is_causal, enable_gqa = check_flag(is_causal, "is_causal"), check_flag(enable_gqa, "enable_gqa")
    q, k, v = (as_float_array(a, n) for a, n in ((query, "query"), (key, "key"), (value, "value")))
    for a, n in ((q, "query"), (k, "key"), (v, "value")):
        check_ndim(a, n, 3, "(..., heads, length, head_dim)")
    if not q.shape[:-3] == k.shape[:-3] == v.shape[:-3]:
        raise ValueError(f"query, key and value must share their leading (batch) axes; got shapes "
                         f"{q.shape}, {k.shape}, {v.shape}")
    (hq, L, E), (hkv, S, Ek), (hv, Sv, Ev) = q.shape[-3:], k.shape[-3:], v.shape[-3:]
    if (hv, Sv) != (hkv, S):
        raise ValueError(f"key (..., Hkv, S, E) and value (..., Hkv, S, Ev) disagree on Hkv or S; "
                         f"got shapes {k.shape} and {v.shape}")
    if Ek != E:
        raise ValueError(f"query and key must have the same head dim E; got shapes {q.shape} and {k.shape}")
    if hq != hkv and not enable_gqa:
        raise ValueError(f"query has {hq} heads and key/value {hkv}: pass enable_gqa=True for "
                         f"grouped-query attention")
    if (hkv == 0 and hq > 0) or (hkv > 0 and hq % hkv):
        raise ValueError(f"the query heads ({hq}) must be a multiple of the key/value heads ({hkv}); "
                         f"got shapes {q.shape} and {k.shape}")
    if causal_align not in ("top_left", "bottom_right"):
        raise ValueError(f"causal_align must be 'top_left' or 'bottom_right'; got {causal_align!r}")
    window = _check_window(window)
    block_q = check_positive_int(block_q, "block_q")
    block_k = check_positive_int(block_k, "block_k")
    dtype = np.result_type(q.dtype, k.dtype, v.dtype)
    lead = q.shape[:-3]
    n = int(np.prod(lead, dtype=np.int64))
    band = mask_band(L, S, is_causal, causal_align, window)
    q = q.reshape((n, hkv, hq // max(hkv, 1), L, E))  # (N, Hkv, G, L, E): head h uses kv head h // G
    k, v = k.reshape((n, hkv, 1, S, E)), v.reshape((n, hkv, 1, S, Ev))  # (N, Hkv, 1, S, ·)
    found = scan(q, k, v) if find_nonfinite else None  # None when all is finite
    if found is not None:
        q, k, v = zero_rows(q, found[0]), zero_rows(k, found[1]), zero_rows(v, found[1])
    return dict(
        q=q, k=k, v=v, found=found,
        scale=default_scale(E) if scale is None else scale,
        band=band,
        block_q=block_q, block_k=block_k, dtype=dtype, lead=lead, hq=hq,
        acc=np.dtype(np.float32) if dtype == np.float16 else dtype)


def _shape(x):
    return tuple(x.shape) if hasattr(x, "shape") else np.shape(x)


def _device_keep(xp, i0, i1, j0, j1, band):
    """The mask of a partial tile as an array of module ``xp`` (None for a full tile)."""
    if tile_kind(i0, i1, j0, j1, band) != "partial":
        return None
    keep = tile_keep(i0, i1, j0, j1, band)  # (bq, bk), NumPy
    return keep if xp is np else xp.asarray(keep)


def check_backward_arrays(p, grad_out, out, lse, query, value):
    """Check ``grad_out``, ``out`` and ``lse`` against the shapes ``prepare`` found; return them as arrays.

    Returns ``{"grad_out": ..., "out": ..., "lse": ...}``, shaped ``(..., Hq, L, Ev)``,
    ``(..., Hq, L, Ev)`` and ``(..., Hq, L)``; raises ``ValueError`` naming the argument.
    """
    hq, L, Ev = p["hq"], p["q"].shape[-2], p["v"].shape[-1]
    expected = {"grad_out": p["lead"] + (hq, L, Ev), "out": p["lead"] + (hq, L, Ev),
                "lse": p["lead"] + (hq, L)}
    arrays = {}
    for name, arr in (("grad_out", grad_out), ("out", out), ("lse", lse)):
        arrays[name] = as_float_array(arr, name)
        if arrays[name].shape != expected[name]:
            raise ValueError(f"{name} must have shape {expected[name]} for query {_shape(query)} "
                             f"and value {_shape(value)}; got {arrays[name].shape}")
    return arrays


def forward_blocks(q, k, v, scale, band, block_q, block_k, dtype, acc):
    """The tiled forward pass on the kernel layout; returns ``out`` (dtype) and ``lse`` (acc).

    Shapes
    ------
    ``q`` (N, Hkv, G, L, E), ``k`` (N, Hkv, 1, S, E), ``v`` (N, Hkv, 1, S, Ev) ->
    ``out`` (N, Hkv, G, L, Ev), ``lse`` (N, Hkv, G, L). Works on NumPy and CuPy
    arrays alike: every new array comes from the inputs' array module ``xp``.
    """
    xp = array_module(q, k, v)
    L, S, Ev = q.shape[-2], k.shape[-2], v.shape[-1]
    out = xp.empty(q.shape[:-1] + (Ev,), dtype=dtype)  # (N, Hkv, G, L, Ev)
    lse = xp.empty(q.shape[:-1], dtype=acc)  # (N, Hkv, G, L)
    for i0 in range(0, L, block_q):
        i1 = min(i0 + block_q, L)
        q_blk = q[..., i0:i1, :].astype(acc)  # (N, Hkv, G, bq, E)
        m = xp.full(q_blk.shape[:-1], -np.inf, dtype=acc)  # (N, Hkv, G, bq)
        l = xp.zeros(q_blk.shape[:-1], dtype=acc)  # (N, Hkv, G, bq)
        o = xp.zeros(q_blk.shape[:-1] + (Ev,), dtype=acc)  # (N, Hkv, G, bq, Ev)
        for kb in key_block_range(i0, i1, S, block_k, band):
            j0, j1 = kb * block_k, min(kb * block_k + block_k, S)
            keep = _device_keep(xp, i0, i1, j0, j1, band)  # (bq, bk) or None
            m, l, o = forward_tile(q_blk, k[..., j0:j1, :].astype(acc),  # k tile (N, Hkv, 1, bk, E)
                                   v[..., j0:j1, :].astype(acc), m, l, o, scale, keep)
        out[..., i0:i1, :], lse[..., i0:i1] = finalize_rows(m, l, o)
    return out, lse


def backward_blocks(d_out, q, k, v, out, lse, scale, band, block_q, block_k, dtype, acc):
    """The tiled backward pass on the kernel layout (key blocks outer, as in FlashAttention-2).

    Shapes
    ------
    ``d_out`` and ``out`` (N, Hkv, G, L, Ev), ``lse`` (N, Hkv, G, L), the rest as in
    :func:`forward_blocks` -> ``dq`` like ``q``, ``dk`` like ``k``, ``dv`` like ``v``.
    """
    xp = array_module(q, k, v)
    L, S = q.shape[-2], k.shape[-2]
    big_d = d_term(d_out.astype(acc), out.astype(acc))  # (N, Hkv, G, L)
    lse = lse.astype(acc)  # (N, Hkv, G, L)
    dq = xp.zeros(q.shape, dtype=acc)  # (N, Hkv, G, L, E): accumulated over key blocks
    dk = xp.empty(k.shape, dtype=dtype)  # (N, Hkv, 1, S, E)
    dv = xp.empty(v.shape, dtype=dtype)  # (N, Hkv, 1, S, Ev)
    for j0 in range(0, S, block_k):
        j1 = min(j0 + block_k, S)
        k_blk, v_blk = k[..., j0:j1, :].astype(acc), v[..., j0:j1, :].astype(acc)  # (N, Hkv, 1, bk, ·)
        dk_blk = xp.zeros(k_blk.shape, dtype=acc)  # (N, Hkv, 1, bk, E)
        dv_blk = xp.zeros(v_blk.shape, dtype=acc)  # (N, Hkv, 1, bk, Ev)
        for qb in query_block_range(j0, j1, L, block_q, band):
            i0, i1 = qb * block_q, min(qb * block_q + block_q, L)
            keep = _device_keep(xp, i0, i1, j0, j1, band)  # (bq, bk) or None
            q_blk, do_blk = q[..., i0:i1, :].astype(acc), d_out[..., i0:i1, :].astype(acc)
            scores = (q_blk @ np.swapaxes(k_blk, -1, -2)) * scale  # (N, Hkv, G, bq, bk)
            p = recompute_probs(scores, lse[..., i0:i1], keep)  # (N, Hkv, G, bq, bk)
            dv_blk += (np.swapaxes(p, -1, -2) @ do_blk).sum(axis=2, keepdims=True)  # (N, Hkv, 1, bk, Ev)
            dp = do_blk @ np.swapaxes(v_blk, -1, -2)  # (N, Hkv, G, bq, bk)
            ds = dscores(p, dp, big_d[..., i0:i1])  # (N, Hkv, G, bq, bk)
            dq[..., i0:i1, :] += (ds @ k_blk) * scale  # (N, Hkv, G, bq, E)
            dk_blk += (np.swapaxes(ds, -1, -2) @ q_blk).sum(axis=2, keepdims=True) * scale  # (N, Hkv, 1, bk, E)
        dk[..., j0:j1, :], dv[..., j0:j1, :] = dk_blk, dv_blk
    return dq.astype(dtype), dk, dv


def flash_attention_numpy(query, key, value, is_causal=False, scale=None, enable_gqa=False, *,
                          causal_align="top_left", window=None, block_q=64, block_k=64,
                          return_lse=False):
    """The NumPy implementation behind :func:`flash_attention` (same arguments, no ``backend``)."""
    p = prepare(query, key, value, is_causal, scale, enable_gqa, causal_align=causal_align,
                window=window, block_q=block_q, block_k=block_k)
    out, lse = forward_blocks(p["q"], p["k"], p["v"], p["scale"], p["band"], p["block_q"],
                              p["block_k"], p["dtype"], p["acc"])  # (N, Hkv, G, L, Ev), (N, Hkv, G, L)
    return finish_forward(p, out, lse, return_lse)


def finish_forward(p, out, lse, return_lse):
    """The rows the rule of DESIGN.md §3 makes NaN marked, the caller's shapes restored.

    ``out`` and ``lse`` in the kernel layout (N, Hkv, G, L, Ev) and (N, Hkv, G, L) of ``p``
    (or any layout of the same size); returns ``out`` (..., Hq, L, Ev) [and ``lse`` (..., Hq, L)].
    """
    L, Ev = p["q"].shape[-2], p["v"].shape[-1]
    out, lse = mark_band_forward(p["found"], p["band"], out.reshape(p["q"].shape[:-1] + (Ev,)),
                                 lse.reshape(p["q"].shape[:-1]))  # (N, Hkv, G, L, Ev), (N, Hkv, G, L)
    out = out.reshape(p["lead"] + (p["hq"], L, Ev))  # (..., Hq, L, Ev)
    return (out, lse.reshape(p["lead"] + (p["hq"], L))) if return_lse else out


def flash_attention(query, key, value, is_causal=False, scale=None, enable_gqa=False, *,
                    causal_align="top_left", window=None, block_q=64, block_k=64,
                    return_lse=False, backend="numpy"):
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
        Tile sizes: query rows per outer step, keys per inner step. Any positive
        value works; the last block of a sequence may be shorter.
    return_lse : bool
        Also return the natural log-sum-exp of each row's scaled, masked scores.
    backend : str
        ``"numpy"`` (this module's reference), ``"numba"`` (the parallel CPU kernel
        of :mod:`attention_scratch.backends.numba_cpu`), ``"cupy"`` (the GPU) or
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
    NaN and infinities, on every backend alike ("masked means absent", DESIGN.md §3): a row
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
    return run(query, key, value, is_causal, scale, enable_gqa, causal_align=causal_align,
               window=window, block_q=block_q, block_k=block_k, return_lse=return_lse)


def flash_attention_backward_numpy(grad_out, query, key, value, out, lse, is_causal=False,
                                   scale=None, enable_gqa=False, *, causal_align="top_left",
                                   window=None, block_q=64, block_k=64):
    """The NumPy implementation behind :func:`flash_attention_backward` (no ``backend``)."""
    p = prepare(query, key, value, is_causal, scale, enable_gqa, causal_align=causal_align,
                window=window, block_q=block_q, block_k=block_k)
    rows, g, o, lse = backward_inputs(p, grad_out, out, lse, query, value)  # kernel layout
    dq, dk, dv = backward_blocks(g, p["q"], p["k"], p["v"], o, lse, p["scale"], p["band"], p["block_q"],
                                 p["block_k"], p["dtype"], p["acc"])
    return finish_backward(p, rows, dq, dk, dv)


def backward_inputs(p, grad_out, out, lse, query, value):
    """Check ``grad_out``, ``out``, ``lse``; return ``(rows, grad_out, out, lse)`` in the kernel layout
    (N, Hkv, G, L, Ev) / (N, Hkv, G, L), with the rows whose inputs are not finite cleaned
    (``rows``: those rows, or ``None``; see :func:`attention_scratch._nonfinite.band_backward_inputs`)."""
    arrays = check_backward_arrays(p, grad_out, out, lse, query, value)
    layout = p["q"].shape[:-1]  # (N, Hkv, G, L)
    Ev = p["v"].shape[-1]
    return band_backward_inputs(p["found"], p["band"], arrays["grad_out"].reshape(layout + (Ev,)),
                                arrays["out"].reshape(layout + (Ev,)), arrays["lse"].reshape(layout))


def finish_backward(p, rows, dq, dk, dv):
    """NaN where the rule of DESIGN.md §3 puts it, the caller's shapes restored.

    ``dq`` (N, Hkv, G, L, E), ``dk`` (N, Hkv, 1, S, E), ``dv`` (N, Hkv, 1, S, Ev) (or any
    layout of the same sizes) -> ``(..., Hq, L, E)``, ``(..., Hkv, S, E)``, ``(..., Hkv, S, Ev)``.
    """
    dq, dk, dv = (a.reshape(p[n].shape) for a, n in ((dq, "q"), (dk, "k"), (dv, "v")))
    dq, dk, dv = mark_band_backward(rows, p["band"], dq, dk, dv)
    hq, L, S = p["hq"], p["q"].shape[-2], p["k"].shape[-2]
    kv_lead = p["lead"] + (p["k"].shape[1],)
    return (dq.reshape(p["lead"] + (hq, L, dq.shape[-1])),  # (..., Hq, L, E)
            dk.reshape(kv_lead + (S, dk.shape[-1])),  # (..., Hkv, S, E)
            dv.reshape(kv_lead + (S, dv.shape[-1])))  # (..., Hkv, S, Ev)


def flash_attention_backward(grad_out, query, key, value, out, lse, is_causal=False, scale=None,
                             enable_gqa=False, *, causal_align="top_left", window=None,
                             block_q=64, block_k=64, backend="numpy"):
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
        changes (DESIGN.md §3).

    Shapes
    ------
    ``(..., Hq, L, E)``, ``(..., Hkv, S, E)``, ``(..., Hkv, S, Ev)``; empty axes as in
    :func:`flash_attention` (gradients of empty arrays are empty, those of keys no row sees 0).
    """
    impl = get_backend(backend, query, key, value)
    run = flash_attention_backward_numpy if impl is None else impl.flash_attention_backward
    return run(grad_out, query, key, value, out, lse, is_causal, scale, enable_gqa,
               causal_align=causal_align, window=window, block_q=block_q, block_k=block_k)


def block_schedule(L, S, block_q=64, block_k=64, is_causal=False, causal_align="top_left",
                   window=None):
    """The tiles the forward pass visits, in order: a list of ``(q_block, k_block, kind)``.

    ``kind`` is ``"full"`` (no mask needed) or ``"partial"`` (masked on this tile
    only); tiles the mask leaves empty are skipped and not listed. Without a mask
    every one of ``ceil(L/block_q)·ceil(S/block_k)`` tiles is visited.
    """
    window = _check_window(window)
    band = mask_band(L, S, is_causal, causal_align, window)
    schedule = []
    for i0 in range(0, L, block_q):
        i1 = min(i0 + block_q, L)
        for kb in key_block_range(i0, i1, S, block_k, band):
            j0, j1 = kb * block_k, min(kb * block_k + block_k, S)
            schedule.append((i0 // block_q, kb, tile_kind(i0, i1, j0, j1, band)))
    return schedule
