"""Chapter 5 exercises: Masks.

Replace each `raise NotImplementedError(...)` with your code, then grade:

    make grade CHAPTER=5
    python -m attention_scratch.grade --chapter 5

This file was written by `make exercises` from the library; your edits are
never overwritten. The answers are in solutions/ and in the book.
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
    raise NotImplementedError("Exercise 5.1: the causal mask in both alignments")


# Exercise 5.2 (2 points): a padding mask from sequence lengths
def lengths_keep(lengths, S):
    """The (B, S) mask of real tokens: ``keep[b, j] = j < lengths[b]``.

    A batch of sequences of different lengths is padded to a common length
    ``S``; keys past a sequence's length are padding and must receive no weight.

    Shapes: ``lengths`` (B,) integers (any integer dtype, unsigned too, and
    ``S`` may exceed what that dtype holds; ``B`` may be 0); returns a boolean
    array (B, S), True on real tokens.
    """
    raise NotImplementedError("Exercise 5.2: a padding mask from sequence lengths")


# Exercise 5.3 (2 points): a sliding-window mask
def window_keep(L, S, left, right=0, align="bottom_right"):
    """The (L, S) band mask: query ``i`` keeps keys ``i' - left <= j <= i' + right``.

    ``i' = i + S - L`` for ``align="bottom_right"`` (the convention of
    :func:`attention_scratch.flash_attention`'s ``window``) and ``i' = i`` for
    ``"top_left"``. ``left=None`` or ``right=None`` leaves that side unlimited.

    Shapes: returns a boolean array (L, S), True = may attend.
    """
    raise NotImplementedError("Exercise 5.3: a sliding-window mask")
