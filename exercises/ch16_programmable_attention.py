"""Chapter 16 exercises: Programmable attention.

Replace each `raise NotImplementedError(...)` with your code, then grade:

    make grade CHAPTER=16
    python -m attention_scratch.grade --chapter 16

This file was written by `make exercises` from the library; your edits are
never overwritten. The answers are in solutions/ and in the book.
"""


import numpy as np

from attention_scratch.block_mask import FULL, PARTIAL, SKIP


# Exercise 16.1 (2 points): the mask of packed documents
def document_keep(doc_ids, q_idx, kv_idx, is_causal=True):
    """May query ``q_idx`` attend key ``kv_idx`` when several documents are packed into one
    sequence?

    ``doc_ids[p]`` is the document of position ``p`` (queries and keys share the positions).
    A token attends only to tokens of its own document and, with ``is_causal``, only to those
    not after it. ``q_idx`` and ``kv_idx`` are broadcastable integer arrays (a column and a row
    of one tile, say); return the boolean array of their broadcast shape.

    Shapes: ``doc_ids`` (N,) ints; ``q_idx``, ``kv_idx`` broadcastable int arrays of positions
    in ``0 .. N-1``; returns their broadcast shape, bool.
    """
    raise NotImplementedError("Exercise 16.1: the mask of packed documents")


# Exercise 16.2 (3 points): classifying the tiles of a mask
def classify_tiles(keep, block_q, block_k):
    """The kind of every ``block_q`` x ``block_k`` tile of a boolean mask, as PyTorch counts them.

    ``keep`` is True where a query may attend a key. Tile ``(r, c)`` holds queries
    ``r·block_q ..`` and keys ``c·block_k ..``; it is ``SKIP`` when it keeps nothing, ``FULL``
    when it keeps all ``block_q · block_k`` pairs, ``PARTIAL`` otherwise. The last tiles of a
    length that ``block_q`` or ``block_k`` does not divide are shorter: count their missing pairs
    as not kept (PyTorch pads the mask with False), so such a tile is never ``FULL``.

    Shapes: ``keep`` (..., L, S) bool; returns (..., ceil(L/block_q), ceil(S/block_k)) int8
    holding ``SKIP`` (0), ``PARTIAL`` (1) or ``FULL`` (2). Any leading axes.
    """
    raise NotImplementedError("Exercise 16.2: classifying the tiles of a mask")


# Exercise 16.3 (2 points): tanh soft-capping and its derivative
def soft_cap_scores(score, cap):
    """tanh soft-capping of attention scores, ``cap · tanh(score / cap)``, and its derivative.

    Gemma 2 caps its attention logits this way: every score ends up inside ``(-cap, cap)``,
    and small scores are almost unchanged. The backward pass needs the derivative of the
    capped score with respect to ``score``. Return both, as arrays of the shape and dtype of
    ``score`` (float32 in, float32 out), with no overflow however large the score.

    Shapes: ``score`` any shape; returns ``(capped, derivative)``, each shaped like ``score``.
    """
    raise NotImplementedError("Exercise 16.3: tanh soft-capping and its derivative")
