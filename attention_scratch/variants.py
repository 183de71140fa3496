"""Efficient attention variants: sliding-window and linear attention (chapter 14).

Two ways to escape the ``L × S`` cost of dense attention:

* **Sliding-window (banded) attention** keeps the softmax and gives up the keys
  outside a window of width ``w`` around each query. Computed block by block, a
  block of ``b`` queries needs one slice of ``b + w`` keys, so the cost is
  ``O(L·(b + w)·E)`` instead of ``O(L·S·E)``, and the result is *exact* for the
  banded mask (it equals the dense oracle with that mask).
* **Linear attention** (Katharopoulos et al., 2020) replaces ``exp(q·k)`` by a
  product of feature maps ``φ(q)·φ(k)``. Associativity then lets us compute
  ``φ(Q) (φ(K)ᵀ V)`` in ``O(N·F·Ev)``; causal linear attention is a recurrence
  with a constant-size state, i.e. an RNN. The result is a *different* model,
  not an approximation of softmax attention.

Random features that approximate the softmax kernel itself (Performer) live in
:mod:`attention_scratch.random_features`.
"""
import numpy as np

from ._checks import array_module, as_float_array, check_flag, check_ndim, check_positive_int
from ._nonfinite import nan_rows, poisoned_band_rows, scan, zero_rows
from .bands import mask_band
from .contract import DEFAULT_BLOCK, acc_dtype_of, attention_args
from .flash_tiles import finalize_rows, forward_tile, tile_keep


def sliding_window_attention(query, key, value, window, is_causal=False, scale=None,
                             enable_gqa=False, *, causal_align="top_left", block=DEFAULT_BLOCK,
                             return_lse=False):
    """Exact attention under a sliding-window mask, computed in ``O(L·(block + w))`` per head.

    Query block ``i0..i1-1`` may see keys ``i + lo .. i + hi`` (the band of the
    mask), so it reads the single key slice ``i0 + lo .. i1 - 1 + hi`` of length
    at most ``block + hi - lo``. That slice is one tile of chapter 9: it is folded
    into an empty running state with :func:`~attention_scratch.flash_tiles.forward_tile`
    and normalised with :func:`~attention_scratch.flash_tiles.finalize_rows`.
    Only ``(block, block + w)`` score tiles are formed.

    Parameters
    ----------
    query, key, value : array_like
        ``(..., Hq, L, E)``, ``(..., Hkv, S, E)``, ``(..., Hkv, S, Ev)``.
    window : (int or None, int or None)
        ``(left, right)``: query ``i`` keeps keys ``i' - left <= j <= i' + right`` with
        ``i' = i + S - L`` (as in :func:`attention_scratch.flash_attention`). The band must be
        bounded on both sides, by the window or by ``is_causal``; otherwise the cost is not
        ``O(L·w)`` and :func:`attention_scratch.flash_attention` is the right tool.
    is_causal, scale, enable_gqa, causal_align
        As in :func:`attention_scratch.flash_attention`.
    block : int
        Queries per block.
    return_lse : bool
        Also return the natural log-sum-exp per row (``+inf`` on empty rows).

    Returns
    -------
    out : ndarray of the input dtype, ``(..., Hq, L, Ev)``; 0 on rows with no key in the window.
    lse : ndarray, ``(..., Hq, L)``, only with ``return_lse``.

    Shapes
    ------
    ``(..., Hq, L, E), (..., Hkv, S, E), (..., Hkv, S, Ev) -> (..., Hq, L, Ev)``.
    """
    if window is None:
        raise ValueError("window must be a pair (left, right); got None (use flash_attention "
                         "for attention without a window)")
    args = attention_args(query, key, value, is_causal, scale, enable_gqa,
                          causal_align=causal_align, window=window, block_q=block, block_k=block)
    lo, hi = mask_band(args.L, args.S, is_causal, causal_align, window)
    if lo is None or hi is None:
        raise ValueError(f"window={window!r} with is_causal={is_causal} leaves the band unbounded "
                         f"(j - i in [{lo}, {hi}]); sliding-window attention needs both bounds")
    lo, hi = args.band
    q, k, v, acc_dtype, block = args.q, args.k, args.v, args.acc_dtype, args.plan.block_q
    L, S, Ev = args.L, args.S, args.Ev
    xp = array_module(q)  # NumPy or CuPy
    out = xp.zeros(q.shape[:-1] + (Ev,), dtype=args.dtype)  # (N, Hkv, G, L, Ev)
    lse = xp.full(q.shape[:-1], np.inf, dtype=acc_dtype)  # (N, Hkv, G, L)
    for i0 in range(0, L, block):
        i1 = min(i0 + block, L)
        j0, j1 = max(0, i0 + lo), min(S, i1 + hi)  # keys i0+lo .. i1-1+hi, clipped
        if j0 >= j1:
            continue  # no query of this block has a key: out 0, lse +inf
        q_blk = q[..., i0:i1, :].astype(acc_dtype)  # (N, Hkv, G, bq, E)
        state = (xp.full(q_blk.shape[:-1], -np.inf, dtype=acc_dtype),  # m (N, Hkv, G, bq)
                 xp.zeros(q_blk.shape[:-1], dtype=acc_dtype),  # l (N, Hkv, G, bq)
                 xp.zeros(q_blk.shape[:-1] + (Ev,), dtype=acc_dtype))  # acc (N, Hkv, G, bq, Ev)
        keep = xp.asarray(tile_keep(i0, i1, j0, j1,
                                    args.band))  # (bq, bk) with bk <= block + hi - lo
        state = forward_tile(q_blk, k[..., j0:j1, :].astype(acc_dtype),
                             v[..., j0:j1, :].astype(acc_dtype), *state, args.scale, keep)
        out[..., i0:i1, :], lse[..., i0:i1] = finalize_rows(*state)
    # NaN rows marked (CONVENTIONS.md), (..., Hq, L, Ev)
    return args.finish_forward(out, lse, return_lse)


# BEGIN EXERCISE 14.1 (1 point): the elu + 1 feature map
def elu_feature_map(x):
    """``φ(x) = elu(x) + 1``: ``x + 1`` for ``x > 0`` and ``exp(x)`` otherwise.

    The feature map of Katharopoulos et al. (2020). It is positive, so every
    attention weight ``φ(q)·φ(k)`` is positive and the normaliser never vanishes.
    ``np.where`` computes both of its branches everywhere, so ``exp(x)`` would
    overflow for ``x = 1000`` even where ``x + 1`` is chosen: give ``exp`` only
    numbers ``<= 0``, so that no overflow warning reaches the caller (that
    warning is what the tests can see). Return a new array: ``x`` stays as it was.

    Shapes: any shape in, the same shape and dtype out (float32 stays float32).
    """
    # BEGIN SOLUTION
    return np.where(x > 0, x + 1, np.exp(np.minimum(x, 0))).astype(x.dtype)  # exp only of x <= 0
    # END SOLUTION


# END EXERCISE


def _check_qkv(query, key, value):
    """Validate linear-attention inputs: same leading axes, ``E`` and ``S`` agree."""
    q, k, v = (as_float_array(a, n) for a, n in ((query, "query"), (key, "key"), (value, "value")))
    for a, n in ((q, "query"), (k, "key"), (v, "value")):
        check_ndim(a, n, 2, "(..., length, head_dim)")
    if not q.shape[:-2] == k.shape[:-2] == v.shape[:-2]:
        raise ValueError(f"query, key and value must share their leading axes; got shapes "
                         f"{q.shape}, {k.shape}, {v.shape}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError("query and key must have the same head dim; got shapes "
                         f"{q.shape} and {k.shape}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError("key and value must have the same length S; got shapes "
                         f"{k.shape} and {v.shape}")
    return q, k, v


def absent_nonfinite(q, k, v, is_causal):
    """``CONVENTIONS.md`` for the linear-attention family: ``(q, k, v, rows)`` with the rows
    holding NaN or ±inf zeroed and ``rows`` (..., L) the output rows to set to NaN (``None`` when
    all is finite).

    Row ``i`` sees keys ``j <= i`` (causal, top-left) or all keys: it is NaN when its query or a key
    or value it sees holds NaN or ±inf; one it does not see never reaches it.

    Shapes: ``q`` (..., L, E), ``k`` (..., S, E), ``v`` (..., S, Ev); ``rows`` (..., L).
    """
    found = scan(q, k, v)
    if found is None:
        return q, k, v, None
    rows = poisoned_band_rows(found, q.shape[-2], k.shape[-2],
                              (None, 0) if is_causal else (None, None))
    return zero_rows(q, found[0]), zero_rows(k, found[1]), zero_rows(v, found[1]), rows


def linear_attention_features(phi_q, phi_k, value, is_causal=False, eps=1e-6):
    """Linear attention from feature vectors: ``out_i = Σ_j (φ_i·ψ_j) v_j / (Σ_j φ_i·ψ_j + eps)``.

    A row whose weights are all 0 (possible with ``eps = 0``) gives output 0.
    Non-causal: ``φ(Q) (φ(K)ᵀ V)`` and ``φ(Q) (φ(K)ᵀ 1)`` — never an ``(L, S)``
    matrix. Causal (``j <= i``, top-left): the *parallel* form, the masked
    ``(L, S)`` matrix of weights ``φ(Q) φ(K)ᵀ`` with its lower triangle kept.

    Shapes
    ------
    ``phi_q`` (..., L, F), ``phi_k`` (..., S, F), ``value`` (..., S, Ev) -> (..., L, Ev).
    """
    if is_causal:
        weights = phi_q @ np.swapaxes(phi_k, -1, -2)  # (..., L, S)
        weights = np.tril(weights)  # (..., L, S): keep j <= i
        numerator, denominator = weights @ value, weights.sum(axis=-1)  # (..., L, Ev), (..., L)
    else:
        kv = np.swapaxes(phi_k, -1, -2) @ value  # (..., F, Ev): Σ_j ψ_j v_jᵀ
        z = phi_k.sum(axis=-2)  # (..., F): Σ_j ψ_j
        numerator = phi_q @ kv  # (..., L, Ev)
        denominator = np.einsum("...lf,...f->...l", phi_q, z)  # (..., L)
    denominator = denominator + eps  # (..., L)
    return numerator / np.where(denominator > 0, denominator,
                                1.0)[..., None]  # (..., L, Ev); 0 if no weight


def linear_attention(query, key, value, is_causal=False, *, feature_map=elu_feature_map, eps=1e-6):
    """Linear attention of Katharopoulos et al. (2020), in its parallel form.

    ``out_i = φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ / (φ(q_i)ᵀ Σ_j φ(k_j) + eps)``, the sums over
    all ``j`` (non-causal, ``O((L + S)·F·Ev)``) or ``j <= i`` (causal, the masked
    quadratic form; :func:`linear_attention_recurrent` and
    :func:`linear_attention_chunked` compute the same in linear time).

    Parameters
    ----------
    query, key, value : array_like
        ``(..., L, F)``, ``(..., S, F)``, ``(..., S, Ev)`` (any leading axes, e.g. (B, H)).
    is_causal : bool
        Keep ``j <= i`` (top-left alignment).
    feature_map : callable
        ``φ``; must return positive features. Default :func:`elu_feature_map`.
    eps : float
        Added to the normaliser.

    Returns
    -------
    ndarray, ``(..., L, Ev)``, the input dtype (float16 accumulates in float32).
    """
    is_causal = check_flag(is_causal, "is_causal")
    q, k, v = _check_qkv(query, key, value)
    dtype = np.result_type(q, k, v)
    acc_dtype = acc_dtype_of(dtype)
    q, k, v, rows = absent_nonfinite(q, k, v, is_causal)
    phi_q = feature_map(q.astype(acc_dtype))  # (..., L, F)
    phi_k = feature_map(k.astype(acc_dtype))  # (..., S, F)
    v = v.astype(acc_dtype)
    out = linear_attention_features(phi_q, phi_k, v, is_causal, eps)  # (..., L, Ev)
    return nan_rows(out, rows).astype(dtype)


# BEGIN EXERCISE 14.2 (2 points): one step of recurrent linear attention
def linear_attention_step(phi_q, phi_k, v, state, normalizer, eps=1e-6):
    """One token of causal linear attention as an RNN step.

    The state is ``S = Σ_{j<=t} φ(k_j) v_jᵀ`` and the normaliser ``z = Σ_{j<=t} φ(k_j)``.
    First add the new key and value: ``S += φ(k_t) v_tᵀ``, ``z += φ(k_t)``; then
    ``out_t = φ(q_t)ᵀ S / (φ(q_t)ᵀ z + eps)``, so the token attends to itself too.
    Return new arrays; do not modify ``state`` or ``normalizer`` in place (the
    caller may still need the old ones).

    Every leading axis ``...`` (batch, heads) is independent: one state per
    sequence and head. The results keep the dtype of the inputs (float32 in,
    float32 out).

    Shapes: ``phi_q``, ``phi_k`` (..., F); ``v`` (..., Ev); ``state`` (..., F, Ev);
    ``normalizer`` (..., F). Returns ``(out (..., Ev), state (..., F, Ev),
    normalizer (..., F))``.
    """
    # BEGIN SOLUTION
    state = state + phi_k[..., :, None] * v[..., None, :]  # (..., F, Ev): rank-one update
    normalizer = normalizer + phi_k  # (..., F)
    numerator = np.einsum("...f,...fv->...v", phi_q, state)  # (..., Ev)
    denominator = np.einsum("...f,...f->...", phi_q, normalizer)  # (...,)
    return numerator / (denominator[..., None] + eps), state, normalizer
    # END SOLUTION


# END EXERCISE


def _causal_start(query, key, value, feature_map, form):
    """Checked features and an empty state for the recurrent and chunked causal forms.

    Shapes
    ------
    ``(..., N, E), (..., N, E), (..., N, Ev)`` -> ``phi_q``, ``phi_k`` (..., N, F), ``v``
    (..., N, Ev), ``state`` (..., F, Ev) and ``normalizer`` (..., F) of zeros, in the accumulation
    dtype; plus the dtype of the result and the rows to set to NaN (:func:`absent_nonfinite`).
    """
    q, k, v = _check_qkv(query, key, value)
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(f"{form} linear attention needs L == S; got query {q.shape} "
                         f"and key {k.shape}")
    dtype = np.result_type(q, k, v)
    acc_dtype = acc_dtype_of(dtype)
    q, k, v, rows = absent_nonfinite(q, k, v, True)
    phi_q, phi_k = feature_map(q.astype(acc_dtype)), feature_map(k.astype(acc_dtype))
    v = v.astype(acc_dtype)
    xp = array_module(phi_k)  # NumPy or CuPy
    state = xp.zeros(phi_k.shape[:-2] + (phi_k.shape[-1], v.shape[-1]),
                     dtype=acc_dtype)  # (..., F, Ev)
    normalizer = xp.zeros(phi_k.shape[:-2] + phi_k.shape[-1:], dtype=acc_dtype)  # (..., F)
    return phi_q, phi_k, v, state, normalizer, dtype, rows


def linear_attention_recurrent(query, key, value, *, feature_map=elu_feature_map, eps=1e-6):
    """Causal linear attention token by token with :func:`linear_attention_step` (an RNN).

    Memory is ``O(F·Ev)`` per head however long the sequence: the state replaces
    the KV cache. Equal to ``linear_attention(..., is_causal=True)``.

    Shapes
    ------
    ``(..., N, F), (..., N, F), (..., N, Ev) -> (..., N, Ev)``; query and key of one length.
    """
    phi_q, phi_k, v, state, normalizer, dtype, rows = _causal_start(query, key, value, feature_map,
                                                                    "recurrent")
    out = array_module(v).empty(v.shape, dtype=v.dtype)  # (..., N, Ev)
    for t in range(phi_q.shape[-2]):
        out[..., t, :], state, normalizer = linear_attention_step(
            phi_q[..., t, :], phi_k[..., t, :], v[..., t, :], state, normalizer, eps)
    return nan_rows(out, rows).astype(dtype)


def linear_attention_chunked(query, key, value, chunk=64, *, feature_map=elu_feature_map, eps=1e-6):
    """Causal linear attention in chunks: quadratic inside a chunk, the RNN state between chunks.

    For the chunk ``c0..c1-1``: ``out = (tril(φQ_c φK_cᵀ) V_c + φQ_c S) /
    (rowsum(tril(φQ_c φK_cᵀ)) + φQ_c z + eps)``, then ``S += φK_cᵀ V_c`` and
    ``z += Σ φK_c``. Cost ``O(N·(chunk + F)·Ev)``, with matrix products instead of
    a Python loop per token. Equal to ``linear_attention(..., is_causal=True)``.

    Shapes
    ------
    ``(..., N, F), (..., N, F), (..., N, Ev) -> (..., N, Ev)``.
    """
    chunk = check_positive_int(chunk, "chunk")
    phi_q, phi_k, v, state, normalizer, dtype, rows = _causal_start(query, key, value, feature_map,
                                                                    "chunked")
    N = phi_q.shape[-2]
    out = array_module(v).empty(v.shape, dtype=v.dtype)  # (..., N, Ev)
    for c0 in range(0, N, chunk):
        c1 = min(c0 + chunk, N)
        fq, fk, vc = phi_q[..., c0:c1, :], phi_k[..., c0:c1, :], v[..., c0:c1, :]  # (..., C, ·)
        local = np.tril(fq @ np.swapaxes(fk, -1, -2))  # (..., C, C): j <= i inside the chunk
        numerator = local @ vc + fq @ state  # (..., C, Ev)
        denominator = local.sum(axis=-1) + np.einsum("...cf,...f->...c", fq, normalizer)  # (..., C)
        out[..., c0:c1, :] = numerator / (denominator[..., None] + eps)
        state = state + np.swapaxes(fk, -1, -2) @ vc  # (..., F, Ev)
        normalizer = normalizer + fk.sum(axis=-2)  # (..., F)
    return nan_rows(out, rows).astype(dtype)
