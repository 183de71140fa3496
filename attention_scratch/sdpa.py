"""Scaled dot-product attention, forward and backward, with masks, GQA and dropout (chapter 4).

``softmax(Q Kᵀ · scale + bias, masked) V`` with PyTorch's argument names
(``torch.nn.functional.scaled_dot_product_attention``) and this library's
conventions (``CONVENTIONS.md``): boolean masks are True where a query may attend,
a float ``attn_mask`` is added to the scores, masks are applied with ``where``
so a row with nothing to attend to gives 0, float16 is accumulated in float32 and
returned as float16. NaN and infinities follow "masked means absent" (``CONVENTIONS.md``,
:mod:`attention_scratch._nonfinite`): a row that sees one (in its query, a key or value
it may attend, or its float mask where it may attend) is NaN, output and weights; one
that a row does not see never reaches it, forward or backward.

Internally the heads are laid out as ``(N, Hkv, G, L, E)`` (``G = Hq / Hkv``
query heads per key/value head, ``N`` the flattened leading axes), the layout
of :class:`attention_scratch.contract.AttentionArgs`, so grouped-query attention never
copies the keys: they broadcast over ``G``.
"""
import dataclasses
from typing import Any

import numpy as np

from ._checks import array_module, check_dropout_p, check_flag
from ._nonfinite import bad_rows, dense_seen_by, dense_sees, nan_rows, zero_rows
from .contract import AttentionArgs, attention_args
from .masks import causal_mask, check_attn_mask
from .softmax import masked_softmax, softmax_vjp


# BEGIN EXERCISE 4.1 (2 points): the scaled scores
def scaled_scores(query, key, scale):
    """``Q Kᵀ · scale``: the similarity of every query with every key.

    With ``scale = 1/sqrt(E)`` and entries of unit variance, each score has
    variance about 1 whatever the head dim ``E``; ``scale`` is a Python float,
    used as given (it need not be ``1/sqrt(E)``).

    Shapes: ``query`` (..., L, E), ``key`` (..., S, E) with leading axes that
    broadcast against each other (as in a NumPy matrix product); returns
    (..., L, S) in the dtype of the inputs (float32 in, float32 out).
    """
    # BEGIN SOLUTION
    return (query @ np.swapaxes(key, -1, -2)) * scale  # (..., L, E) @ (..., E, S) -> (..., L, S)
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 4.2 (2 points): inverted dropout on the attention weights
# uses: from attention_scratch._checks import array_module
def dropout_weights(weights, p, rng):
    """Drop each weight with probability ``p`` and scale the survivors by ``1 / (1 - p)``.

    Draw exactly one ``rng.random(weights.shape)``, whatever ``p`` (0 and 1
    too), and keep the entries where it is ``>= p``, so that a generator in the
    same state reproduces the same mask (the backward pass relies on it).
    Scaling by ``1/(1-p)`` keeps the expected weights unchanged. Return
    ``(dropped, keep)``; with ``p == 1`` every weight is 0 (not NaN). ``weights``
    itself is left unchanged.

    Shapes: ``weights`` any shape; ``dropped`` (the dtype of ``weights``) and
    ``keep`` (bool, True where a weight survives) the same shape.
    """
    # BEGIN SOLUTION
    keep = array_module(weights).asarray(rng.random(weights.shape) >= p)  # drawn on the host
    factor = 0.0 if p >= 1 else 1.0 / (1.0 - p)
    return np.where(keep, weights * factor, 0.0).astype(weights.dtype), keep
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 4.3 (3 points): the gradient of the scores
def scores_gradient(grad_out, value, probs):
    """``dS``, the gradient of the (scaled, masked) scores, from ``dO``, ``V`` and ``P``.

    ``O = P V``, so ``dP = dO Vᵀ``; through the softmax of each row
    ``dS = P ∘ (dP - rowsum(dP ∘ P))``. Masked entries have ``P = 0`` and get 0.

    Shapes: ``grad_out`` (..., L, Ev), ``value`` (..., S, Ev), ``probs`` (..., L, S)
    with leading axes that broadcast against each other; returns (..., L, S) in the
    dtype of the inputs (float32 in, float32 out).
    """
    # BEGIN SOLUTION
    d_probs = grad_out @ np.swapaxes(value, -1, -2)  # (..., L, Ev) @ (..., Ev, S) -> (..., L, S)
    return probs * (d_probs - (d_probs * probs).sum(axis=-1, keepdims=True))  # (..., L, S)
    # END SOLUTION


# END EXERCISE


@dataclasses.dataclass(frozen=True)
class DenseMask:
    """The mask of one call in the kernel layout, and the rows the non-finite rule makes NaN.

    ``keep``: bool, (L, S) or (N, Hkv, G, L, S), or None (every key); ``bias``: the float
    mask, finite or ``-inf`` (NaN and ``+inf`` cleaned to 0), or None; ``poisoned``
    (N, Hkv, G, L) and ``visible`` (N, Hkv, G, L, S), set only when some input or the float
    mask is not finite.
    """

    keep: Any = None
    bias: Any = None
    poisoned: Any | None = None
    visible: Any | None = None


def _setup(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, causal_align,
           rng):
    """Validate; return the :class:`~attention_scratch.contract.AttentionArgs` and the
    :class:`DenseMask`."""
    args = attention_args(query, key, value, is_causal, scale, enable_gqa,
                          causal_align=causal_align)
    n, hkv, g, L, S = args.q.shape[0], args.kv_heads, args.group, args.L, args.S
    xp = array_module(args.q)  # masks follow the inputs to the device
    mask = check_attn_mask(attn_mask, args.lead + (args.heads, L, S))
    mask = None if mask is None else xp.asarray(mask)
    if mask is not None and mask.ndim > 2:  # bring (..., Hq, L, S) to (N, Hkv, G, L, S)
        mask = xp.broadcast_to(mask, args.lead + (args.heads, L, S)).reshape((n, hkv, g, L, S))
    keep = xp.asarray(causal_mask(L, S, causal_align)) if is_causal else None  # (L, S)
    bias = None
    if mask is not None and mask.dtype == bool:
        keep = mask if keep is None else keep & mask  # (N, Hkv, G, L, S) or (L, S)
    elif mask is not None:
        bias = mask.astype(args.acc_dtype)
    dropout_p = check_dropout_p(dropout_p)
    if dropout_p > 0 and not isinstance(rng, np.random.Generator):
        raise TypeError(f"dropout_p={dropout_p} needs rng=np.random.Generator(...); got {rng!r}")
    return args, _find_poisoned(args, DenseMask(keep, bias), xp)


def _visible(args, mask, xp):
    """(N, Hkv, G, L, S) bool: where a row sees a key
    (the boolean mask keeps it, the bias is not -inf)."""
    shape = args.q.shape[:-1] + (args.S,)  # (N, Hkv, G, L, S)
    visible = xp.ones(shape, dtype=bool) if mask.keep is None else xp.broadcast_to(mask.keep, shape)
    return visible if mask.bias is None else visible & (mask.bias != -np.inf)


def _find_poisoned(args, mask, xp):
    """``mask`` with ``poisoned`` and ``visible`` filled when an input or the float mask
    holds NaN or ±inf.

    A row is poisoned when it sees a key (the mask keeps it and the bias is not ``-inf``) and its
    query, a key or value it sees, or its bias where it sees, holds NaN or ±inf (``-inf`` in the
    bias only hides). The bias is cleaned (NaN and ``+inf`` become 0) so that the softmax never
    meets them; the callers mark the poisoned rows.
    """
    bias, found = mask.bias, args.nonfinite
    bad_bias = None
    if bias is not None:
        bad_bias = xp.isnan(bias) | xp.isposinf(bias)  # (L, S) or (N, Hkv, G, L, S)
        if not bool(bad_bias.any()):
            bad_bias = None
    if found is None and bad_bias is None:
        return mask
    visible = _visible(args, mask, xp)  # (N, Hkv, G, L, S)
    if found is None:  # only the float mask is not finite
        n, hkv = args.q.shape[:2]
        found = xp.zeros(visible.shape[:-1], dtype=bool), xp.zeros((n, hkv, 1, args.S), dtype=bool)
    bad_q, bad_kv = found  # (N, Hkv, G, L), (N, Hkv, 1, S)
    has_key, sees_bad = dense_sees(visible, bad_kv)  # (N, Hkv, G, L) each
    if bad_bias is not None:
        sees_bad = sees_bad | (visible & bad_bias).any(axis=-1)  # (N, Hkv, G, L)
        bias = xp.where(bad_bias, 0, bias).astype(bias.dtype)
    return DenseMask(mask.keep, bias, has_key & (bad_q | sees_bad), visible)


def _two_dimensional(query, key, value):
    return np.ndim(query) == np.ndim(key) == np.ndim(value) == 2


def _add_head_axis(*arrays):
    """(n, d) -> (1, n, d) for each array (NumPy or CuPy)."""
    return tuple(array_module(a).asarray(a)[None] for a in arrays)


def _probs(args: AttentionArgs, mask: DenseMask):
    """The attention weights in the accumulation dtype, (N, Hkv, G, L, S)."""
    acc_dtype = args.acc_dtype
    scores = scaled_scores(args.q.astype(acc_dtype), args.k.astype(acc_dtype),
                           args.scale)  # (N, Hkv, G, L, S)
    if mask.bias is not None:
        scores = scores + mask.bias  # (N, Hkv, G, L, S)
    if args.S == 0:  # no keys at all: every row is empty (the max of an empty row is undefined)
        return scores
    return masked_softmax(scores, True if mask.keep is None else mask.keep)  # 0 on masked entries


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, enable_gqa=False, *, causal_align="top_left", rng=None,
                                 return_weights=False):
    """Scaled dot-product attention: ``softmax(Q Kᵀ · scale + mask) V``.

    Parameters
    ----------
    query, key, value : array_like
        ``(..., Hq, L, E)``, ``(..., Hkv, S, E)``, ``(..., Hkv, S, Ev)``, any number
        of matching leading axes, or ``(L, E)``, ``(S, E)``, ``(S, Ev)`` (one head, as
        PyTorch allows). float16 is accumulated in float32.
    attn_mask : array_like, optional
        Boolean (True = may attend) or float (added to the scores; ``-inf`` hides a
        key), broadcastable to ``(..., Hq, L, S)``.
    dropout_p : float
        Probability of dropping each attention weight (inverted dropout: the
        survivors are scaled by ``1/(1-p)``). Needs ``rng``.
    is_causal : bool
        Apply a causal mask, aligned by ``causal_align``; and-ed with ``attn_mask``.
    scale : float, optional
        Multiplies ``Q Kᵀ``; default ``1/sqrt(E)``.
    enable_gqa : bool
        Allow ``Hkv < Hq`` (``Hkv`` must divide ``Hq``): query head ``h`` reads
        key/value head ``h // (Hq/Hkv)``, as PyTorch does.
    causal_align : {"top_left", "bottom_right"}
        ``"top_left"``: ``j <= i`` (PyTorch); ``"bottom_right"``: ``j <= i + S - L``.
    rng : numpy.random.Generator, optional
        Draws the dropout mask, one ``rng.random((..., Hq, L, S))`` call. To get the
        same mask in :func:`scaled_dot_product_attention_backward`, pass it a
        generator in the same state (e.g. ``copy.deepcopy(rng)`` taken before this call).
    return_weights : bool
        Also return the attention weights actually applied to ``value`` (after
        dropout and its ``1/(1-p)`` scaling).

    Returns
    -------
    out : ndarray of the input dtype, ``(..., Hq, L, Ev)``; 0 on rows with nothing to attend to.
    weights : ndarray ``(..., Hq, L, S)``, only with ``return_weights``.

    Notes
    -----
    NaN and infinities ("masked means absent", ``CONVENTIONS.md``): a row whose query, a key or
    value it may attend, or its float mask where it may attend, holds NaN or ``+inf`` (±inf
    in the inputs) is NaN, output and weights, as in PyTorch. One that the mask hides from a
    row (False, ``-inf``, causality) never reaches that row, forward or backward; PyTorch
    lets it through ``0 · NaN``.

    Shapes
    ------
    ``(..., Hq, L, E), (..., Hkv, S, E), (..., Hkv, S, Ev) -> (..., Hq, L, Ev)``. Empty axes
    behave as in PyTorch: a batch axis, ``Hq`` (with ``Hkv``) or ``L`` = 0 gives an empty
    result; ``S = 0`` gives output 0; ``E = 0`` makes every score 0, so each row averages the
    values it may attend (the default scale is then 1).
    """
    return_weights = check_flag(return_weights, "return_weights")
    if _two_dimensional(query, key, value):  # (L, E): one head and no batch, as PyTorch allows
        result = scaled_dot_product_attention(
            *_add_head_axis(query, key, value), attn_mask, dropout_p, is_causal, scale, enable_gqa,
            causal_align=causal_align, rng=rng, return_weights=return_weights)
        return tuple(a[0] for a in result) if return_weights else result[0]
    args, mask = _setup(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                        causal_align, rng)
    probs = _probs(args, mask)  # (N, Hkv, G, L, S)
    if dropout_p > 0:
        probs, _ = dropout_weights(probs, dropout_p, rng)  # (N, Hkv, G, L, S)
    # (N, Hkv, G, L, S) @ (N, Hkv, 1, S, Ev) -> (N, Hkv, G, L, Ev)
    out = probs @ args.v.astype(args.acc_dtype)
    out = nan_rows(out, mask.poisoned).astype(args.dtype)  # (N, Hkv, G, L, Ev)
    out = out.reshape(args.output_shape)  # (..., Hq, L, Ev)
    if return_weights:
        probs = nan_rows(probs, mask.poisoned).astype(args.dtype)  # (N, Hkv, G, L, S)
        return out, probs.reshape(args.lse_shape + (args.S,))  # (..., Hq, L, S)
    return out


def scaled_dot_product_attention_backward(grad_out, query, key, value, attn_mask=None,
                                          is_causal=False, scale=None, enable_gqa=False, *,
                                          causal_align="top_left", dropout_p=0.0, rng=None):
    """Gradients of :func:`scaled_dot_product_attention` for ``query``, ``key`` and ``value``.

    The weights are recomputed from the inputs. ``dV = Pᵀ dO``, ``dS = P ∘ (dP - rowsum(dP ∘ P))``
    with ``dP = dO Vᵀ``, ``dQ = dS K · scale``, ``dK = dSᵀ Q · scale``; with GQA the
    key/value gradients of the query heads that share a key/value head are summed.

    Parameters
    ----------
    grad_out : array_like
        dL/dout, ``(..., Hq, L, Ev)``.
    query, key, value, attn_mask, is_causal, scale, enable_gqa, causal_align
        As in the forward call.
    dropout_p, rng
        With dropout, the same ``dropout_p`` and a generator in the state the forward
        call's ``rng`` had before it ran, so that the same dropout mask is drawn.

    Returns
    -------
    grad_query, grad_key, grad_value : ndarrays of the input dtype, shaped like the inputs;
        rows with nothing to attend to contribute 0. The float ``attn_mask`` gets no gradient.
        A row that is NaN in the forward pass, or whose ``grad_out`` holds NaN or ±inf, has
        ``grad_query`` NaN and makes ``grad_key``, ``grad_value`` NaN for every key it may
        attend; nothing else changes (``CONVENTIONS.md``).

    Shapes
    ------
    ``(..., Hq, L, E)``, ``(..., Hkv, S, E)``, ``(..., Hkv, S, Ev)``.
    """
    if _two_dimensional(query, key, value):  # (L, E): one head and no batch, as PyTorch allows
        grads = scaled_dot_product_attention_backward(
            *_add_head_axis(grad_out, query, key, value), attn_mask, is_causal, scale, enable_gqa,
            causal_align=causal_align, dropout_p=dropout_p, rng=rng)
        return tuple(g[0] for g in grads)
    args, mask = _setup(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                        causal_align, rng)
    acc_dtype = args.acc_dtype
    d_out = array_module(grad_out).asarray(grad_out)
    if d_out.shape != args.output_shape:
        raise ValueError(f"grad_out must have the output's shape {args.output_shape}; "
                         f"got {d_out.shape}")
    d_out = d_out.astype(acc_dtype).reshape(args.q.shape[:-1] + (args.Ev,))  # (N, Hkv, G, L, Ev)
    rows = bad_rows(d_out)  # (N, Hkv, G, L): a non-finite dO row is NaN as well (CONVENTIONS.md)
    rows = rows if mask.poisoned is None else rows | mask.poisoned
    d_out = zero_rows(d_out, rows)
    probs = _probs(args, mask)  # (N, Hkv, G, L, S)
    used, keep = probs, None
    if dropout_p > 0:
        used, keep = dropout_weights(probs, dropout_p, rng)  # (N, Hkv, G, L, S)
    # finite: non-finite rows zeroed
    q, k, v = (x.astype(acc_dtype) for x in (args.q, args.k, args.v))
    d_v = (np.swapaxes(used, -1, -2) @ d_out).sum(axis=2, keepdims=True)  # (N, Hkv, 1, S, Ev)
    if keep is None:
        d_s = scores_gradient(d_out, v, probs)  # (N, Hkv, G, L, S)
    else:  # dL/dP = dL/dP_used ∘ keep / (1 - p), then through the softmax
        factor = 0.0 if dropout_p >= 1 else 1.0 / (1.0 - dropout_p)
        d_probs = np.where(keep, (d_out @ np.swapaxes(v, -1, -2)) * factor,
                           0.0)  # (N, Hkv, G, L, S)
        d_s = softmax_vjp(d_probs, probs)  # (N, Hkv, G, L, S)
    d_q = (d_s @ k) * args.scale  # (N, Hkv, G, L, S) @ (N, Hkv, 1, S, E) -> (N, Hkv, G, L, E)
    d_k = (np.swapaxes(d_s, -1, -2) @ q).sum(axis=2,
                                             keepdims=True) * args.scale  # (N, Hkv, 1, S, E)
    if bool(rows.any()):  # rows with a non-finite input: dQ NaN, and dK, dV of every key they see
        visible = _visible(args, mask, array_module(d_q)) if mask.visible is None else mask.visible
        rows = rows & visible.any(axis=-1)  # (N, Hkv, G, L): rows seeing no key stay 0
        keys = dense_seen_by(rows, visible)  # (N, Hkv, 1, S)
        d_q, d_k, d_v = nan_rows(d_q, rows), nan_rows(d_k, keys), nan_rows(d_v, keys)
    kv_lead = args.lead + (args.kv_heads,)
    return (d_q.astype(args.dtype).reshape(np.shape(query)),  # (..., Hq, L, E)
            d_k.astype(args.dtype).reshape(kv_lead + d_k.shape[-2:]),  # (..., Hkv, S, E)
            d_v.astype(args.dtype).reshape(kv_lead + d_v.shape[-2:]))  # (..., Hkv, S, Ev)
