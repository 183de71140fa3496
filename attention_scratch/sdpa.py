"""Scaled dot-product attention, forward and backward, with masks, GQA and dropout (chapter 4).

``softmax(Q Kᵀ · scale + bias, masked) V`` with PyTorch's argument names
(``torch.nn.functional.scaled_dot_product_attention``) and this library's
conventions (DESIGN.md §3): boolean masks are True where a query may attend,
a float ``attn_mask`` is added to the scores, masks are applied with ``where``
so a row with nothing to attend to gives 0 and NaN behind a mask never leaks,
float16 is accumulated in float32 and returned as float16.

Internally the heads are laid out as ``(N, Hkv, G, L, E)`` (``G = Hq / Hkv``
query heads per key/value head, ``N`` the flattened leading axes), the layout
of :func:`attention_scratch.flash.prepare`, so grouped-query attention never
copies the keys: they broadcast over ``G``.
"""
import numpy as np

from ._checks import array_module
from .flash import prepare
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


def _setup(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, causal_align, rng):
    """Validate; return the kernel layout of :func:`flash.prepare` plus the mask pieces."""
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float, np.number))
                              or np.iscomplexobj(scale)):
        raise TypeError(f"scale must be a real number or None (meaning 1/sqrt(E)); got {scale!r}")
    # _zero_unseen below zeroes every key no weight reaches (a superset of prepare's band-based zeroing)
    p = prepare(query, key, value, is_causal, scale, enable_gqa, causal_align=causal_align,
                zero_unreachable=False)
    n, hkv, g, L, _ = p["q"].shape
    S = p["k"].shape[-2]
    score_shape = p["lead"] + (p["hq"], L, S)  # (..., Hq, L, S)
    xp = array_module(p["q"])  # masks follow the inputs to the device
    mask = check_attn_mask(attn_mask, score_shape)
    mask = None if mask is None else xp.asarray(mask)
    if mask is not None and mask.ndim > 2:  # bring (..., Hq, L, S) to (N, Hkv, G, L, S)
        mask = xp.broadcast_to(mask, score_shape).reshape((n, hkv, g, L, S))
    keep = xp.asarray(causal_mask(L, S, causal_align)) if is_causal else None  # (L, S)
    bias = None
    if mask is not None and mask.dtype == bool:
        keep = mask if keep is None else keep & mask  # (N, Hkv, G, L, S) or (L, S)
    elif mask is not None:
        bias = mask.astype(p["acc"])
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float, np.floating)) or not 0 <= dropout_p <= 1:
        raise ValueError(f"dropout_p must be a number in [0, 1]; got {dropout_p!r}")
    if dropout_p > 0 and not isinstance(rng, np.random.Generator):
        raise TypeError(f"dropout_p={dropout_p} needs rng=np.random.Generator(...); got {rng!r}")
    p.update(keep=keep, bias=bias, L=L, S=S)
    return p


def _probs(p):
    """The attention weights in the accumulation dtype, (N, Hkv, G, L, S)."""
    scores = scaled_scores(p["q"].astype(p["acc"]), p["k"].astype(p["acc"]), p["scale"])  # (N, Hkv, G, L, S)
    if p["bias"] is not None:
        scores = scores + p["bias"]  # (N, Hkv, G, L, S)
    if p["S"] == 0:  # no keys at all: every row is empty (the max of an empty row is undefined)
        return scores
    return masked_softmax(scores, True if p["keep"] is None else p["keep"])  # 0 on masked entries


def _zero_unseen(x, weights):
    """Zero the keys/values no query gives any weight: exact, and a NaN there cannot leak via 0·NaN.

    Shapes: ``x`` (N, Hkv, 1, S, ·), ``weights`` (N, Hkv, G, L, S); returns the shape of ``x``.
    """
    seen = np.swapaxes((weights != 0).any(axis=(2, 3), keepdims=True), -1, -2)  # (N, Hkv, 1, S, 1)
    return np.where(seen, x, 0).astype(x.dtype)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, enable_gqa=False, *, causal_align="top_left", rng=None,
                                 return_weights=False):
    """Scaled dot-product attention: ``softmax(Q Kᵀ · scale + mask) V``.

    Parameters
    ----------
    query, key, value : array_like
        ``(..., Hq, L, E)``, ``(..., Hkv, S, E)``, ``(..., Hkv, S, Ev)``, any number
        of matching leading axes. float16 is accumulated in float32.
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

    Shapes
    ------
    ``(..., Hq, L, E), (..., Hkv, S, E), (..., Hkv, S, Ev) -> (..., Hq, L, Ev)``.
    """
    p = _setup(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, causal_align, rng)
    probs = _probs(p)  # (N, Hkv, G, L, S)
    if dropout_p > 0:
        probs, _ = dropout_weights(probs, dropout_p, rng)  # (N, Hkv, G, L, S)
    out = probs @ _zero_unseen(p["v"].astype(p["acc"]), probs)  # (N, Hkv, G, L, S) @ (N, Hkv, 1, S, Ev) -> (N, Hkv, G, L, Ev)
    out = out.astype(p["dtype"]).reshape(p["lead"] + (p["hq"], p["L"], out.shape[-1]))  # (..., Hq, L, Ev)
    if return_weights:
        return out, probs.astype(p["dtype"]).reshape(p["lead"] + (p["hq"], p["L"], p["S"]))  # (..., Hq, L, S)
    return out


def scaled_dot_product_attention_backward(grad_out, query, key, value, attn_mask=None, is_causal=False,
                                          scale=None, enable_gqa=False, *, causal_align="top_left",
                                          dropout_p=0.0, rng=None):
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

    Shapes
    ------
    ``(..., Hq, L, E)``, ``(..., Hkv, S, E)``, ``(..., Hkv, S, Ev)``.
    """
    p = _setup(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, causal_align, rng)
    acc, L, Ev = p["acc"], p["L"], p["v"].shape[-1]
    d_out = array_module(grad_out).asarray(grad_out)
    expected = p["lead"] + (p["hq"], L, Ev)
    if d_out.shape != expected:
        raise ValueError(f"grad_out must have the output's shape {expected}; got {d_out.shape}")
    d_out = d_out.astype(acc).reshape(p["q"].shape[:-1] + (Ev,))  # (N, Hkv, G, L, Ev)
    probs = _probs(p)  # (N, Hkv, G, L, S)
    used, keep = probs, None
    if dropout_p > 0:
        used, keep = dropout_weights(probs, dropout_p, rng)  # (N, Hkv, G, L, S)
    q, k = p["q"].astype(acc), p["k"].astype(acc)
    v = _zero_unseen(p["v"].astype(acc), used)  # (N, Hkv, 1, S, Ev)
    d_v = (np.swapaxes(used, -1, -2) @ d_out).sum(axis=2, keepdims=True)  # (N, Hkv, 1, S, Ev)
    if keep is None:
        d_s = scores_gradient(d_out, v, probs)  # (N, Hkv, G, L, S)
    else:  # dL/dP = dL/dP_used ∘ keep / (1 - p), then through the softmax
        factor = 0.0 if dropout_p >= 1 else 1.0 / (1.0 - dropout_p)
        d_probs = np.where(keep, (d_out @ np.swapaxes(v, -1, -2)) * factor, 0.0)  # (N, Hkv, G, L, S)
        d_s = softmax_vjp(d_probs, probs)  # (N, Hkv, G, L, S)
    # A key hidden from query i has dS[i, j] = 0; a finite copy of K keeps 0·NaN out of dQ (exact).
    d_q = (d_s @ np.where(np.isfinite(k), k, 0)) * p["scale"]  # (N, Hkv, G, L, S) @ (N, Hkv, 1, S, E) -> (N, Hkv, G, L, E)
    d_k = (np.swapaxes(d_s, -1, -2) @ q).sum(axis=2, keepdims=True) * p["scale"]  # (N, Hkv, 1, S, E)
    kv_lead = p["lead"] + (p["k"].shape[1],)
    return (d_q.astype(p["dtype"]).reshape(np.shape(query)),  # (..., Hq, L, E)
            d_k.astype(p["dtype"]).reshape(kv_lead + d_k.shape[-2:]),  # (..., Hkv, S, E)
            d_v.astype(p["dtype"]).reshape(kv_lead + d_v.shape[-2:]))  # (..., Hkv, S, Ev)
