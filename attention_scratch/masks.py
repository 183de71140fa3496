"""Attention masks: causal (both alignments), padding, sliding windows,
and combining them (chapter 5).

Every boolean mask in this library says **True = may attend** (the polarity of
PyTorch's ``scaled_dot_product_attention`` and of JAX). The one exception says so
in its name: a ``key_padding_mask`` is True on padding tokens, as in
``torch.nn.MultiheadAttention``; :func:`key_padding_to_keep` turns it around.

A mask is applied with ``where`` and ``-inf`` (see :func:`attention_scratch.softmax.softmax`),
never by adding ``-1e9``: a query row whose keys are all masked gets output 0
and gradient 0, and a NaN sitting in a masked position never reaches the result.
"""
import numpy as np

from ._checks import array_module, check_broadcastable

ALIGNMENTS = ("top_left", "bottom_right")


def _check_length(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
    return int(value)


def _check_align(align, name="align"):
    if align not in ALIGNMENTS:
        raise ValueError(f"{name} must be 'top_left' or 'bottom_right'; got {align!r}")
    return align


# BEGIN EXERCISE 5.1 (2 points): the causal mask in both alignments
def causal_keep(L, S, align="top_left"):
    """The (L, S) causal "may attend" mask: query ``i`` keeps key ``j`` when ``j <= i + offset``.

    ``align="top_left"`` puts query 0 on key 0 (``offset = 0``, PyTorch's
    ``is_causal``); ``align="bottom_right"`` puts the last query on the last key
    (``offset = S - L``), which is what a KV cache needs: the ``L`` new queries
    are the last ``L`` positions of a sequence of ``S`` keys.

    Shapes: returns a boolean array (L, S), True = may attend (empty when L or S is 0).
    """
    # BEGIN SOLUTION
    # HINT: compare a column of query indices with a row of key indices.
    offset = 0 if align == "top_left" else S - L
    i = np.arange(L)[:, None]  # (L, 1) query index
    j = np.arange(S)[None, :]  # (1, S) key index
    return j <= i + offset  # (L, S)
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 5.2 (2 points): a padding mask from sequence lengths
def lengths_keep(lengths, S):
    """The (B, S) mask of real tokens: ``keep[b, j] = j < lengths[b]``.

    A batch of sequences of different lengths is padded to a common length
    ``S``; keys past a sequence's length are padding and must receive no weight.

    Shapes: ``lengths`` (B,) integers (any integer dtype, unsigned too, and
    ``S`` may exceed what that dtype holds; ``B`` may be 0); returns a boolean
    array (B, S), True on real tokens.
    """
    # BEGIN SOLUTION
    return np.arange(S)[None, :] < np.asarray(lengths)[:, None]  # (B, S)
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 5.3 (2 points): a sliding-window mask
def window_keep(L, S, left, right=0, align="bottom_right"):
    """The (L, S) band mask: query ``i`` keeps keys ``i' - left <= j <= i' + right``.

    ``i' = i + S - L`` for ``align="bottom_right"`` (the convention of
    :func:`attention_scratch.flash_attention`'s ``window``) and ``i' = i`` for
    ``"top_left"``. ``left=None`` or ``right=None`` leaves that side unlimited.

    Shapes: returns a boolean array (L, S), True = may attend.
    """
    # BEGIN SOLUTION
    offset = 0 if align == "top_left" else S - L
    centre = np.arange(L)[:, None] + offset  # (L, 1): i'
    j = np.arange(S)[None, :]  # (1, S)
    keep = np.ones((L, S), dtype=bool)  # (L, S)
    if left is not None:
        keep &= j >= centre - left
    if right is not None:
        keep &= j <= centre + right
    return keep
    # END SOLUTION


# END EXERCISE


def causal_mask(L, S, align="top_left"):
    """The causal "may attend" mask of ``L`` queries over ``S`` keys.

    Parameters
    ----------
    L, S : int
        Numbers of queries and keys.
    align : {"top_left", "bottom_right"}
        ``"top_left"``: key ``j`` is visible to query ``i`` when ``j <= i`` (PyTorch's
        ``is_causal=True``). ``"bottom_right"``: when ``j <= i + S - L`` (the last
        query sees every key; the alignment of a KV cache and of FlashAttention).
        The two agree when ``L == S``. With ``L > S`` and bottom-right alignment the
        first ``L - S`` rows see nothing.

    Returns
    -------
    ndarray of bool, True = may attend.

    Shapes
    ------
    ``(L, S)``.
    """
    L, S = _check_length(L, "L"), _check_length(S, "S")
    return causal_keep(L, S, _check_align(align))


def padding_mask(lengths, S):
    """The "may attend" mask of a padded batch: True on each sequence's real tokens.

    Parameters
    ----------
    lengths : array_like of int, shape (B,)
        The true length of each sequence, ``0 <= lengths[b] <= S``.
    S : int
        The padded key length.

    Returns
    -------
    ndarray of bool, ``(B, 1, 1, S)``, broadcasting against scores ``(B, H, L, S)``.
    """
    S = _check_length(S, "S")
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu":
        raise ValueError(f"lengths must be a 1-D array of integers; got shape {lengths.shape} "
                         f"and dtype {lengths.dtype}")
    if lengths.size and (lengths.min() < 0 or lengths.max() > S):
        raise ValueError(f"lengths must lie in 0..S={S}; got {lengths.tolist()}")
    return lengths_keep(lengths, S)[:, None, None, :]  # (B, 1, 1, S)


def sliding_window_mask(L, S, left, right=0, align="bottom_right"):
    """A local (banded) "may attend" mask: each query sees ``left`` keys back and ``right`` ahead.

    Parameters
    ----------
    L, S : int
        Numbers of queries and keys.
    left, right : int or None
        Window extent behind and ahead of the aligned query position; ``None`` is
        unlimited. ``sliding_window_mask(L, S, w, 0)`` is the causal window of
        Mistral-style local attention: the current key and ``w`` before it.
    align : {"bottom_right", "top_left"}
        Where query ``i`` sits among the keys: ``i + S - L`` (default, as
        :func:`attention_scratch.flash_attention`'s ``window``) or ``i``.

    Returns
    -------
    ndarray of bool, ``(L, S)``.
    """
    L, S = _check_length(L, "L"), _check_length(S, "S")
    for name, value in (("left", left), ("right", right)):
        if value is not None:
            _check_length(value, name)
    return window_keep(L, S, left, right, _check_align(align))


def key_padding_to_keep(key_padding_mask):
    """Turn a ``key_padding_mask`` (B, S), True = padding, into a "may attend" mask (B, 1, 1, S)."""
    kpm = array_module(key_padding_mask).asarray(key_padding_mask)
    if kpm.dtype != bool:
        raise TypeError(f"key_padding_mask must be a boolean array (B, S) with True = padding; "
                        f"got dtype {kpm.dtype}")
    if kpm.ndim != 2:
        raise ValueError("key_padding_mask must have shape (B, S) (True = padding); "
                         f"got shape {kpm.shape}")
    return ~kpm[:, None, None, :]  # (B, 1, 1, S)


def combine_masks(*masks):
    """Combine attention masks into one: a key is visible only if every mask lets it through.

    ``None`` entries are ignored. Boolean masks (True = may attend) are and-ed;
    if any mask is a float bias, the result is a float mask: the biases are added
    and every position a boolean mask hides becomes ``-inf``.

    Returns
    -------
    None (no masks), a boolean array, or a float array, of the broadcast shape.
    """
    masks = [m for m in masks if m is not None]
    if not masks:
        return None
    xp = array_module(*masks)  # CuPy if any mask is a CuPy array; host masks are copied over
    masks = [xp.asarray(m) for m in masks]
    try:
        shape = np.broadcast_shapes(*(m.shape for m in masks))
    except ValueError:
        raise ValueError("masks of shapes " + ", ".join(str(m.shape) for m in masks)
                         + " do not broadcast together") from None
    keep = xp.ones(shape, dtype=bool)
    bias = None
    for m in masks:
        if m.dtype == bool:
            keep = keep & m
        elif m.dtype.kind == "f":
            bias = m if bias is None else bias + m
        else:
            raise TypeError("a mask must be boolean (True = may attend) "
                            f"or float (a bias); got {m.dtype}")
    if bias is None:
        return keep
    return np.where(keep, bias, -np.inf).astype(bias.dtype)


def check_attn_mask(attn_mask, target_shape):
    """Validate ``attn_mask`` against the score shape; return it as an array (or None).

    A mask must be boolean (True = may attend) or floating point (added to the
    scores) and broadcast to ``target_shape``.
    """
    if attn_mask is None:
        return None
    mask = array_module(attn_mask).asarray(attn_mask)
    if mask.dtype != bool and mask.dtype.kind != "f":
        raise TypeError(f"attn_mask must be boolean (True = may attend) or float (added to the "
                        f"scores); got dtype {mask.dtype}")
    check_broadcastable(mask.shape, target_shape, "attn_mask")
    return mask
