"""Chapter 4 exercises: Scaled dot-product attention.

Replace each `raise NotImplementedError(...)` with your code, then grade:

    make grade CHAPTER=4
    python -m attention_scratch.grade --chapter 4

This file was written by `make exercises` from the library; your edits are
never overwritten. The answers are in solutions/ and in the book.
"""


import numpy as np

from attention_scratch._checks import array_module


# Exercise 4.1 (2 points): the scaled scores
def scaled_scores(query, key, scale):
    """``Q Kᵀ · scale``: the similarity of every query with every key.

    With ``scale = 1/sqrt(E)`` and entries of unit variance, each score has
    variance about 1 whatever the head dim ``E``; ``scale`` is a Python float,
    used as given (it need not be ``1/sqrt(E)``).

    Shapes: ``query`` (..., L, E), ``key`` (..., S, E) with leading axes that
    broadcast against each other (as in a NumPy matrix product); returns
    (..., L, S) in the dtype of the inputs (float32 in, float32 out).
    """
    raise NotImplementedError("Exercise 4.1: the scaled scores")


# Exercise 4.2 (2 points): inverted dropout on the attention weights
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
    raise NotImplementedError("Exercise 4.2: inverted dropout on the attention weights")


# Exercise 4.3 (3 points): the gradient of the scores
def scores_gradient(grad_out, value, probs):
    """``dS``, the gradient of the (scaled, masked) scores, from ``dO``, ``V`` and ``P``.

    ``O = P V``, so ``dP = dO Vᵀ``; through the softmax of each row
    ``dS = P ∘ (dP - rowsum(dP ∘ P))``. Masked entries have ``P = 0`` and get 0.

    Shapes: ``grad_out`` (..., L, Ev), ``value`` (..., S, Ev), ``probs`` (..., L, S)
    with leading axes that broadcast against each other; returns (..., L, S) in the
    dtype of the inputs (float32 in, float32 out).
    """
    raise NotImplementedError("Exercise 4.3: the gradient of the scores")
