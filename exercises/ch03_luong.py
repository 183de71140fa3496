"""Chapter 3 exercises: Luong attention.

Replace each `raise NotImplementedError(...)` with your code, then grade:

    make grade CHAPTER=3
    python -m attention_scratch.grade --chapter 3

This file was written by `make exercises` from the library; your edits are
never overwritten. The answers are in solutions/ and in the book.
"""


import numpy as np


# Exercise 3.1 (1 point): the general score
def general_score(query, keys, W_a):
    """Luong's general score ``e_s = h_tᵀ W_a h̄_s`` for every source position ``s``.

    Shapes: ``query`` (B, Dq), ``keys`` (B, S, Dk), ``W_a`` (Dq, Dk) -> (B, S), in the
    dtype of the inputs.
    """
    raise NotImplementedError("Exercise 3.1: the general score")


# Exercise 3.2 (2 points): the concat score, literally
def concat_score(query, keys, W_a, v_a):
    """Luong's concat score ``e_s = v_aᵀ tanh(W_a [h_t ; h̄_s])``, built with the concatenation.

    Concatenate the query with every key (query first), multiply by ``W_a``,
    apply ``tanh``, contract with ``v_a``. (The library splits ``W_a`` into a
    query block and a key block instead, so the key half is computed once.)

    Shapes: ``query`` (B, Dq), ``keys`` (B, S, Dk), ``W_a`` (Dq + Dk, A), ``v_a`` (A,) -> (B, S),
    in the dtype of the inputs.
    """
    raise NotImplementedError("Exercise 3.2: the concat score, literally")


# Exercise 3.3 (3 points): the local-p window
def local_window(p, lengths, S, D):
    """The window ``|s - p_t| <= D`` inside each sentence,
    and the Gaussian ``exp(-(s - p_t)²/2σ²)``.

    Position ``s`` (0, 1, …, S-1) may be attended when ``|s - p| <= D`` and
    ``s < length`` (the window is clipped at the sentence ends; the padding is
    masked). The Gaussian uses ``σ = D / 2`` and is computed at every position.

    Shapes: ``p`` (B,) float64, ``lengths`` (B,) int, ``S`` and ``D`` int
    -> ``(keep (B, S) bool, gauss (B, S) float64)``.
    """
    raise NotImplementedError("Exercise 3.3: the local-p window")
