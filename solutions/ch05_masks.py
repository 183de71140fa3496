"""Chapter 5 solutions: Masks.

Written by `make exercises` from the library source; do not edit.
Grade them with: python -m attention_scratch.grade --solutions --chapter 5
"""


import numpy as np


# Exercise 5.1 (2 points): the causal mask in both alignments
def causal_keep(L, S, align="top_left"):
    """The (L, S) causal "may attend" mask: query ``i`` keeps key ``j`` when ``j <= i + offset``.

    ``align="top_left"`` puts query 0 on key 0 (``offset = 0``, PyTorch's
    ``is_causal``); ``align="bottom_right"`` puts the last query on the last key
    (``offset = S - L``), which is what a KV cache needs: the ``L`` new queries
    are the last ``L`` positions of a sequence of ``S`` keys.

    Shapes: returns a boolean array (L, S), True = may attend (empty when L or S is 0).
    """
    # HINT: compare a column of query indices with a row of key indices.
    offset = 0 if align == "top_left" else S - L
    i = np.arange(L)[:, None]  # (L, 1) query index
    j = np.arange(S)[None, :]  # (1, S) key index
    return j <= i + offset  # (L, S)


# Exercise 5.2 (2 points): a padding mask from sequence lengths
def lengths_keep(lengths, S):
    """The (B, S) mask of real tokens: ``keep[b, j] = j < lengths[b]``.

    A batch of sequences of different lengths is padded to a common length
    ``S``; keys past a sequence's length are padding and must receive no weight.

    Shapes: ``lengths`` (B,) integers (any integer dtype, unsigned too, and
    ``S`` may exceed what that dtype holds; ``B`` may be 0); returns a boolean
    array (B, S), True on real tokens.
    """
    return np.arange(S)[None, :] < np.asarray(lengths)[:, None]  # (B, S)


# Exercise 5.3 (2 points): a sliding-window mask
def window_keep(L, S, left, right=0, align="bottom_right"):
    """The (L, S) band mask: query ``i`` keeps keys ``i' - left <= j <= i' + right``.

    ``i' = i + S - L`` for ``align="bottom_right"`` (the convention of
    :func:`attention_scratch.flash_attention`'s ``window``) and ``i' = i`` for
    ``"top_left"``. ``left=None`` or ``right=None`` leaves that side unlimited.

    Shapes: returns a boolean array (L, S), True = may attend.
    """
    offset = 0 if align == "top_left" else S - L
    centre = np.arange(L)[:, None] + offset  # (L, 1): i'
    j = np.arange(S)[None, :]  # (1, S)
    keep = np.ones((L, S), dtype=bool)  # (L, S)
    if left is not None:
        keep &= j >= centre - left
    if right is not None:
        keep &= j <= centre + right
    return keep
