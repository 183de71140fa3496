"""Checking tools: the float64 attention oracle, ``assert_close`` and gradient checks.

This module holds the library's single dense reference ("oracle") for attention.
It is written for obviousness, not speed: everything is cast to float64, the
mask is built from explicit index comparisons, and nothing is tiled. Every other
implementation in the package, and every exercise, is tested against it.
"""
import contextlib
import warnings

import numpy as np

from ._checks import array_module, check_broadcastable, check_ndim

# Tolerances per dtype of the array under test: (rtol, atol).
TOLERANCES = {
    np.dtype(np.float64): (1e-10, 1e-12),
    np.dtype(np.float32): (2e-5, 2e-6),
    np.dtype(np.float16): (1e-2, 1e-3),
}

_MAX_REPORTED = 5


def _to_numpy(a):
    """Bring a CuPy array to the host; leave NumPy arrays and scalars alone."""
    return a.get() if hasattr(a, "get") and array_module(a) is not np else np.asarray(a)


def assert_close(actual, expected, *, rtol=None, atol=None, dtype=None, what="result"):
    """Assert ``|actual - expected| <= atol + rtol * |expected|`` elementwise.

    The tolerances come from :data:`TOLERANCES` for ``dtype`` (default: the dtype
    of ``actual``) unless given. NaN matches only NaN, and infinities must match
    exactly. On failure the message gives the shapes, how many entries differ,
    the largest errors, and the first differing entries with their indices, in
    words a student can act on.

    Parameters
    ----------
    actual, expected : array_like
        The result under test and the reference.
    rtol, atol : float, optional
        Override the tolerance table.
    dtype : dtype, optional
        Which row of the tolerance table to use.
    what : str
        A description used in the failure message ("softmax of a row near 1000").
    """
    actual = _to_numpy(actual)
    expected = _to_numpy(expected)
    if actual.shape != expected.shape:
        raise AssertionError(
            f"{what}: wrong shape: got {actual.shape}, expected {expected.shape}"
        )
    key = np.dtype(dtype) if dtype is not None else actual.dtype
    default_rtol, default_atol = TOLERANCES.get(key, TOLERANCES[np.dtype(np.float64)])
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol

    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    both_nan = np.isnan(a) & np.isnan(e)
    same_inf = np.isinf(a) & np.isinf(e) & (np.sign(a) == np.sign(e))
    with np.errstate(invalid="ignore"):
        err = np.abs(a - e)
        # An infinity matches only the same infinity: rtol * inf would otherwise accept anything.
        finite = np.isfinite(a) & np.isfinite(e)
        ok = both_nan | same_inf | (finite & (err <= atol + rtol * np.abs(e)))
    if ok.all():
        return
    bad = np.argwhere(~ok)
    finite_err = np.where(ok | ~np.isfinite(err), 0.0, err)
    lines = [
        f"{what}: {len(bad)} of {a.size} entries differ "
        f"(tolerance atol={atol:g} + rtol={rtol:g}·|expected|)",
        f"  largest absolute error {finite_err.max():.3g}",
    ]
    if np.isnan(a).any() and not np.isnan(e).any():
        lines.append(f"  the result holds {int(np.isnan(a).sum())} NaN where none was expected")
    lines.append("  first differing entries (index: got vs expected):")
    for idx in bad[:_MAX_REPORTED]:
        i = tuple(int(k) for k in idx)
        lines.append(f"    {i}: {float(actual[i])!r} vs {float(expected[i])!r}")
    raise AssertionError("\n".join(lines))


def assert_shape(actual, expected_shape, what="result"):
    """Assert ``actual.shape == expected_shape`` with a readable message."""
    shape = tuple(np.shape(actual))
    if shape != tuple(expected_shape):
        raise AssertionError(f"{what}: wrong shape: got {shape}, expected {tuple(expected_shape)}")


@contextlib.contextmanager
def warnings_as_failures(hint):
    """Turn a NumPy ``RuntimeWarning`` raised in the block into an ``AssertionError``
    saying ``hint``.

    Overflow in ``exp``, ``0/0`` and ``inf - inf`` warn before they produce inf or
    NaN; a graded test wraps the call under test in this block so that the
    student reads what to fix, not only "overflow encountered in exp". The
    warning still fails the test, as it would under the test suite's
    ``error::RuntimeWarning`` filter.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            yield
        except RuntimeWarning as warning:
            raise AssertionError(f"{hint} (NumPy warned: {warning})") from None


# BEGIN EXERCISE 1.5 (2 points): central-difference gradients
def numerical_gradient(f, x, eps=1e-6):
    """The gradient of a scalar function ``f`` at ``x`` by central differences.

    For every index ``i``: ``(f(x + eps·e_i) - f(x - eps·e_i)) / (2·eps)``,
    where ``e_i`` is 1 at ``i`` and 0 elsewhere. The error of this formula is
    O(eps²), against O(eps) for the one-sided difference. Do not modify the
    caller's ``x``; work on a float64 copy (``x`` may be an integer or float32
    array, which cannot hold ``x + eps`` accurately), and call ``f`` with arrays of
    ``x``'s own shape.

    Shapes: ``x`` any shape; ``f(x)`` a scalar; the result has the shape of ``x``
    and dtype float64.
    """
    # BEGIN SOLUTION
    x = np.array(x, dtype=np.float64)  # a private float64 copy we may perturb
    grad = np.zeros_like(x)
    flat_x, flat_grad = x.reshape(-1), grad.reshape(-1)  # views of x and grad
    for i in range(flat_x.size):
        original = flat_x[i]
        flat_x[i] = original + eps
        f_plus = float(f(x))
        flat_x[i] = original - eps
        f_minus = float(f(x))
        flat_x[i] = original
        flat_grad[i] = (f_plus - f_minus) / (2 * eps)
    return grad
    # END SOLUTION


# END EXERCISE


def grad_check(forward, backward, inputs, *, wrt=None, rng=None, eps=1e-6, rtol=1e-6, atol=1e-8):
    """Check a hand-written backward pass against central differences.

    A random cotangent ``g`` turns the array-valued ``forward`` into the scalar
    ``L = sum(forward(*inputs) * g)``; the numerical gradient of ``L`` for each
    input named in ``wrt`` must match ``backward(g, *inputs)``.

    Parameters
    ----------
    forward : callable
        ``forward(*inputs) -> array``.
    backward : callable
        ``backward(grad_out, *inputs) -> tuple`` of gradients, one per input.
    inputs : sequence of arrays
        Float64 arrays (the check is meaningless in low precision).
    wrt : sequence of int, optional
        Indices of the inputs to check (default: all).
    rng : numpy.random.Generator, optional
        Draws the cotangent; default ``np.random.default_rng(0)``.
    eps, rtol, atol : float
        Step size and tolerances.

    Returns
    -------
    float
        The largest absolute difference seen, for reporting.

    Shapes
    ------
    ``backward`` returns one array per input, shaped like it; the cotangent has
    the shape of ``forward(*inputs)``.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    inputs = [np.asarray(a, dtype=np.float64) for a in inputs]
    wrt = range(len(inputs)) if wrt is None else wrt
    out = np.asarray(forward(*inputs))
    cotangent = rng.standard_normal(out.shape)
    analytic = backward(cotangent, *inputs)
    if len(analytic) != len(inputs):
        raise ValueError("backward must return one gradient per input "
                         f"({len(inputs)} inputs of shapes {[a.shape for a in inputs]}); "
                         f"got {len(analytic)}")
    worst = 0.0
    for k in wrt:

        def loss(x_k, k=k):
            args = list(inputs)
            args[k] = x_k
            return float(np.sum(np.asarray(forward(*args)) * cotangent))

        numeric = numerical_gradient(loss, inputs[k], eps=eps)
        assert_close(analytic[k], numeric, rtol=rtol, atol=atol, what=f"gradient of input {k}")
        worst = max(worst, float(np.max(np.abs(np.asarray(analytic[k]) - numeric), initial=0.0)))
    return worst


def _check_oracle_inputs(q, k, v):
    """Raise ``ValueError`` naming the argument and the shapes unless q, k, v fit the oracle.

    The oracle stays permissive where it can (leading axes broadcast, any ``Hkv``
    dividing ``Hq`` is grouped-query attention) but never fails with a bare NumPy
    broadcasting error.
    """
    for a, name in ((q, "query"), (k, "key"), (v, "value")):
        check_ndim(a, name, 3, "(..., heads, length, head_dim)")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"query (..., L, E) and key (..., S, E) must have the same E; got shapes "
                         f"{q.shape} and {k.shape}")
    if k.shape[:-1] != v.shape[:-1]:
        raise ValueError("key (..., Hkv, S, E) and value (..., Hkv, S, Ev) "
                         "must agree on every axis but the last; got shapes "
                         f"{k.shape} and {v.shape}")
    hq, hkv = q.shape[-3], k.shape[-3]
    if (hkv == 0 and hq > 0) or (hkv > 0 and hq % hkv):
        raise ValueError(f"the query heads ({hq}) must be a multiple of the key/value heads "
                         f"({hkv}); got query {q.shape} and key {k.shape}")
    try:
        np.broadcast_shapes(q.shape[:-3], k.shape[:-3])
    except ValueError:
        raise ValueError("query and key leading (batch) axes do not broadcast; "
                         f"got shapes {q.shape} and {k.shape}") from None


def _default_scale(E):
    """``1/sqrt(E)``, and 1 for ``E = 0`` (every score is an empty dot product, 0:
    uniform weights)."""
    return 1.0 / np.sqrt(E) if E > 0 else 1.0


def _repeat_kv_heads(x, num_q_heads):
    """(..., Hkv, S, E) -> (..., Hq, S, E) by repeating each key/value head
    (no heads: unchanged)."""
    return np.repeat(x, num_q_heads // max(x.shape[-3], 1), axis=-3)


def reference_mask(L, S, *, attn_mask=None, is_causal=False, causal_align="top_left", window=None):
    """The boolean "may attend" mask of the oracle, from explicit index comparisons.

    ``is_causal`` keeps key ``j`` for query ``i`` when ``j <= i`` (top-left) or
    ``j <= i + S - L`` (bottom-right). ``window=(left, right)`` keeps
    ``i' - left <= j <= i' + right`` with ``i' = i + S - L``; ``None`` is unlimited
    on that side. A boolean ``attn_mask`` is and-ed in; a float one is not a mask.

    Shapes: returns (L, S) or the broadcast shape of ``attn_mask`` with (L, S).
    """
    i = np.arange(L)[:, None]  # (L, 1)
    j = np.arange(S)[None, :]  # (1, S)
    keep = np.ones((L, S), dtype=bool)  # (L, S)
    if is_causal:
        offset = 0 if causal_align == "top_left" else S - L
        keep &= j <= i + offset
    if window is not None:
        left, right = window
        i_aligned = i + (S - L)
        if left is not None:
            keep &= j >= i_aligned - left
        if right is not None:
            keep &= j <= i_aligned + right
    if attn_mask is not None and np.asarray(attn_mask).dtype == bool:
        keep = keep & np.asarray(attn_mask)  # (..., L, S)
    return keep


def attention_oracle(query, key, value, attn_mask=None, is_causal=False, scale=None, *,
                     causal_align="top_left", window=None):
    """Dense attention in float64: the reference every implementation is tested against.

    Implements ``softmax(Q Kᵀ · scale + bias, masked) V`` with this library's
    conventions (docs/design.md §3): boolean masks are True where a query may attend;
    a float ``attn_mask`` is added to the scores; key/value heads are repeated for
    grouped-query attention when ``Hkv`` divides ``Hq``; a query row with nothing
    to attend to has output 0 and log-sum-exp ``+inf``.

    Parameters
    ----------
    query, key, value : array_like
        ``(..., Hq, L, E)``, ``(..., Hkv, S, E)``, ``(..., Hkv, S, Ev)``.
    attn_mask : array_like, optional
        Boolean or float, broadcastable to ``(..., Hq, L, S)``.
    is_causal : bool
        Apply a causal mask with ``causal_align`` ("top_left" or "bottom_right").
    scale : float, optional
        Defaults to ``1/sqrt(E)``.
    window : tuple, optional
        ``(left, right)`` sliding window, bottom-right aligned.

    Returns
    -------
    out : ndarray, float64, ``(..., Hq, L, Ev)``
    lse : ndarray, float64, ``(..., Hq, L)``; natural log-sum-exp of the scaled,
        masked scores, ``+inf`` on rows with nothing to attend to.
    probs : ndarray, float64, ``(..., Hq, L, S)``

    Shapes
    ------
    ``(..., Hq, L, E), (..., Hkv, S, E), (..., Hkv, S, Ev) -> (..., Hq, L, Ev)``,
    with ``Hkv`` dividing ``Hq``; wrong shapes raise ``ValueError`` naming them.
    """
    q = np.asarray(_to_numpy(query), dtype=np.float64)
    k = np.asarray(_to_numpy(key), dtype=np.float64)
    v = np.asarray(_to_numpy(value), dtype=np.float64)
    _check_oracle_inputs(q, k, v)
    if q.ndim >= 3:
        k = _repeat_kv_heads(k, q.shape[-3])  # (..., Hq, S, E)
        v = _repeat_kv_heads(v, q.shape[-3])  # (..., Hq, S, Ev)
    L, S = q.shape[-2], k.shape[-2]
    scale = _default_scale(q.shape[-1]) if scale is None else scale
    bias = None
    if attn_mask is not None:
        check_broadcastable(np.shape(attn_mask), q.shape[:-1] + (S,), "attn_mask")
        if np.asarray(attn_mask).dtype != bool:
            bias = np.asarray(_to_numpy(attn_mask), dtype=np.float64)
    keep = reference_mask(L, S, attn_mask=None if attn_mask is None else _to_numpy(attn_mask),
                          is_causal=is_causal, causal_align=causal_align, window=window)
    keep = np.broadcast_to(keep, q.shape[:-1] + (S,))  # (..., Hq, L, S)
    if bias is not None:
        keep = keep & (bias != -np.inf)  # a -inf bias hides the key
    has_key = keep.any(axis=-1, keepdims=True)  # (..., Hq, L, 1)
    # docs/design.md §3: a row seeing a NaN/±inf in K or V, or holding one in its query (or its
    # float mask, where it sees), is NaN; hidden ones change nothing. Compute on zeroed copies,
    # mark after.
    bad_q = ~np.isfinite(q).all(axis=-1)  # (..., Hq, L)
    bad_kv = ~(np.isfinite(k).all(axis=-1) & np.isfinite(v).all(axis=-1))  # (..., Hq, S)
    bad_score = np.broadcast_to(bad_kv[..., None, :], keep.shape)  # (..., Hq, L, S)
    if bias is not None:
        bad_score = bad_score | np.isnan(bias) | np.isposinf(bias)
    poisoned = has_key[..., 0] & (bad_q | (keep & bad_score).any(axis=-1))  # (..., Hq, L)
    q, k, v = (np.where(np.isfinite(a), a, 0.0) for a in (q, k, v))

    scores = np.einsum("...le,...se->...ls", q, k) * scale  # (..., Hq, L, S)
    if bias is not None:
        scores = scores + np.where(np.isfinite(bias), bias, 0.0)
    masked = np.where(keep, scores, -np.inf)  # (..., Hq, L, S)
    row_max = np.where(has_key, masked.max(axis=-1, keepdims=True, initial=-np.inf), 0.0)
    exps = np.where(keep, np.exp(masked - row_max), 0.0)  # (..., Hq, L, S)
    total = exps.sum(axis=-1, keepdims=True)  # (..., Hq, L, 1)
    probs = exps / np.where(has_key, total, 1.0)  # (..., Hq, L, S)
    out = np.einsum("...ls,...sv->...lv", probs, v)  # (..., Hq, L, Ev)
    with np.errstate(divide="ignore"):
        lse = np.where(has_key, np.log(np.where(has_key, total, 1.0)) + row_max, np.inf)[..., 0]
    nan = poisoned[..., None]  # (..., Hq, L, 1)
    return np.where(nan, np.nan, out), np.where(poisoned, np.nan, lse), np.where(nan, np.nan, probs)


def attention_oracle_backward(grad_out, query, key, value, attn_mask=None, is_causal=False,
                              scale=None, *, causal_align="top_left", window=None):
    """Gradients of :func:`attention_oracle` in float64, by the dense chain rule.

    ``dV = Pᵀ dO``; ``dP = dO Vᵀ``; ``dS = P ∘ (dP - rowsum(dP ∘ P))``;
    ``dQ = dS K · scale``; ``dK = dSᵀ Q · scale``. For grouped-query attention the
    gradients of the repeated key/value heads are summed back onto their group.

    Returns
    -------
    grad_query, grad_key, grad_value : float64 arrays shaped like the inputs.

    Shapes
    ------
    ``grad_out`` ``(..., Hq, L, Ev)``, the output's shape; the rest as in
    :func:`attention_oracle`.
    """
    q = np.asarray(_to_numpy(query), dtype=np.float64)
    k_in = np.asarray(_to_numpy(key), dtype=np.float64)
    v_in = np.asarray(_to_numpy(value), dtype=np.float64)
    d_out = np.asarray(_to_numpy(grad_out), dtype=np.float64)
    hq, hkv = q.shape[-3], k_in.shape[-3]
    scale = _default_scale(q.shape[-1]) if scale is None else scale
    _, _, p = attention_oracle(q, k_in, v_in, attn_mask, is_causal, scale,
                               causal_align=causal_align, window=window)  # p: (..., Hq, L, S)
    expected = p.shape[:-1] + v_in.shape[-1:]  # (..., Hq, L, Ev): the output's shape
    if d_out.shape != expected:
        raise ValueError(f"grad_out must have the output's shape {expected}; got {d_out.shape}")
    # docs/design.md §3: rows that are NaN in the forward, or whose grad_out is not finite, get
    # dQ NaN and make dK, dV NaN for every key they see (the rows' own mask); the rest is exact.
    clean_q, clean_k, clean_v = (np.where(np.isfinite(a), a, 0.0) for a in (q, k_in, v_in))
    _, _, p_clean = attention_oracle(clean_q, clean_k, clean_v, attn_mask, is_causal, scale,
                                     causal_align=causal_align, window=window)
    keep = reference_mask(q.shape[-2], k_in.shape[-2], attn_mask=None if attn_mask is None else
                          _to_numpy(attn_mask), is_causal=is_causal, causal_align=causal_align,
                          window=window)
    keep = np.broadcast_to(keep, p.shape)  # (..., Hq, L, S)
    if attn_mask is not None and np.asarray(attn_mask).dtype != bool:
        keep = keep & (np.asarray(_to_numpy(attn_mask), dtype=np.float64) != -np.inf)
    bad_grad = ~np.isfinite(d_out).all(axis=-1) & keep.any(axis=-1)  # (..., Hq, L)
    marked = np.isnan(p).any(axis=-1) | bad_grad  # (..., Hq, L)
    d_out = np.where(marked[..., None] | ~np.isfinite(d_out), 0.0, d_out)
    p = np.where(marked[..., None], 0.0, p_clean)  # (..., Hq, L, S)
    k = _repeat_kv_heads(clean_k, hq)  # (..., Hq, S, E)
    v = _repeat_kv_heads(clean_v, hq)  # (..., Hq, S, Ev)

    d_v = np.einsum("...ls,...lv->...sv", p, d_out)  # (..., Hq, S, Ev)
    d_p = np.einsum("...lv,...sv->...ls", d_out, v)  # (..., Hq, L, S)
    d_s = p * (d_p - (d_p * p).sum(axis=-1, keepdims=True))  # (..., Hq, L, S)
    d_q = np.einsum("...ls,...se->...le", d_s, k) * scale  # (..., Hq, L, E)
    d_k = np.einsum("...ls,...le->...se", d_s, clean_q) * scale  # (..., Hq, S, E)
    key_nan = (keep & marked[..., None]).any(axis=-2)[...,
                                                      None]  # (..., Hq, S, 1): seen by a marked row

    def fold_groups(g):  # (..., Hq, S, X) -> (..., Hkv, S, X): sum each group's heads
        return g.reshape(g.shape[:-3] + (hkv, hq // max(hkv, 1)) + g.shape[-2:]).sum(axis=-3)

    return (np.where(marked[..., None], np.nan, d_q), fold_groups(np.where(key_nan, np.nan, d_k)),
            fold_groups(np.where(key_nan, np.nan, d_v)))


def dense_reference(query, key, value, grad_out=None, *, is_causal=False, causal_align="top_left",
                    window=None, scale=None, upcast=True):
    """Dense attention the textbook way, with the whole ``(L, S)`` weight matrix; the baseline.

    ``upcast=True`` gives the float64 oracle's results (:func:`attention_oracle` and
    :func:`attention_oracle_backward`). ``upcast=False`` computes the same formulas in the
    dtype of the inputs, with the library's :func:`~attention_scratch.softmax` (float16
    accumulates in float32 there): the plain NumPy program that a low-precision kernel is
    judged against (its error against the oracle may be at most twice this one's) and the
    "naive numpy" contender of the benchmark. Finite inputs only: the non-finite rule is
    the oracle's business.

    Returns
    -------
    ``(out, probs)``, or ``(out, probs, (grad_query, grad_key, grad_value))`` with ``grad_out``.

    Shapes
    ------
    ``(..., Hq, L, E), (..., Hkv, S, E), (..., Hkv, S, Ev) -> out (..., Hq, L, Ev)``, ``probs``
    ``(..., Hq, L, S)``; ``grad_out`` like ``out``; gradients shaped like the inputs.
    """
    mask = dict(is_causal=is_causal, causal_align=causal_align, window=window)
    if upcast:
        out, _, probs = attention_oracle(query, key, value, None, scale=scale, **mask)
        if grad_out is None:
            return out, probs
        return out, probs, attention_oracle_backward(grad_out, query, key, value, scale=scale,
                                                     **mask)
    from .softmax import softmax

    q, k, v = (np.asarray(_to_numpy(a)) for a in (query, key, value))
    _check_oracle_inputs(q, k, v)
    kr, vr = _repeat_kv_heads(k, q.shape[-3]), _repeat_kv_heads(v, q.shape[-3])  # (..., Hq, S, ·)
    scale = q.dtype.type(_default_scale(q.shape[-1]) if scale is None else scale)
    keep = reference_mask(q.shape[-2], k.shape[-2], **mask)  # (L, S)
    probs = softmax((q @ np.swapaxes(kr, -1, -2)) * scale, where=keep)  # (..., Hq, L, S)
    out = probs @ vr  # (..., Hq, L, S) @ (..., Hq, S, Ev) -> (..., Hq, L, Ev)
    if grad_out is None:
        return out, probs
    return out, probs, dense_reference_backward(grad_out, q, k, v, probs, scale=scale)


def dense_reference_backward(grad_out, query, key, value, probs, *, scale=None):
    """The backward pass of :func:`dense_reference` from its weights ``probs``,
    in the inputs' dtype.

    ``dV = Pᵀ dO``, ``dS = P ∘ (dP - rowsum(dP ∘ P))`` with ``dP = dO Vᵀ``, ``dQ = dS K · scale``,
    ``dK = dSᵀ Q · scale``; key/value gradients of grouped-query attention summed per group.
    The benchmark times it apart from the forward pass, from stored weights.

    Shapes
    ------
    ``grad_out`` (..., Hq, L, Ev), ``probs`` (..., Hq, L, S), the rest as in
    :func:`dense_reference`; returns gradients shaped like ``query``, ``key``, ``value``.
    """
    q, k, v, g = (np.asarray(_to_numpy(a)) for a in (query, key, value, grad_out))
    hq, hkv = q.shape[-3], k.shape[-3]
    kr, vr = _repeat_kv_heads(k, hq), _repeat_kv_heads(v, hq)  # (..., Hq, S, ·)
    scale = q.dtype.type(_default_scale(q.shape[-1]) if scale is None else scale)
    d_v = np.swapaxes(probs, -1, -2) @ g  # (..., Hq, S, L) @ (..., Hq, L, Ev) -> (..., Hq, S, Ev)
    d_p = g @ np.swapaxes(vr, -1, -2)  # (..., Hq, L, Ev) @ (..., Hq, Ev, S) -> (..., Hq, L, S)
    d_s = probs * (d_p - (d_p * probs).sum(axis=-1, keepdims=True))  # (..., Hq, L, S)
    d_q = (d_s @ kr) * scale  # (..., Hq, L, S) @ (..., Hq, S, E) -> (..., Hq, L, E)
    d_k = (np.swapaxes(d_s, -1, -2)
           @ q) * scale  # (..., Hq, S, L) @ (..., Hq, L, E) -> (..., Hq, S, E)

    def fold_groups(x):  # (..., Hq, S, X) -> (..., Hkv, S, X): sum each group's heads
        return x.reshape(x.shape[:-3] + (hkv, hq // max(hkv, 1)) + x.shape[-2:]).sum(axis=-3)

    return d_q, fold_groups(d_k).astype(q.dtype), fold_groups(d_v).astype(q.dtype)
