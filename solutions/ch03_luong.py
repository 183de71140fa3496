"""Chapter 3 solutions: Luong attention.

Written by `make exercises` from the library source; do not edit.
Grade them with: python -m attention_scratch.grade --solutions --chapter 3
"""


import numpy as np


# Exercise 3.1 (1 point): the general score
def general_score(query, keys, W_a):
    """Luong's general score ``e_s = h_tᵀ W_a h̄_s`` for every source position ``s``.

    Shapes: ``query`` (B, Dq), ``keys`` (B, S, Dk), ``W_a`` (Dq, Dk) -> (B, S), in the
    dtype of the inputs.
    """
    q = query @ W_a  # (B, Dk)
    return np.einsum("bsk,bk->bs", keys, q)  # (B, S)


# Exercise 3.2 (2 points): the concat score, literally
def concat_score(query, keys, W_a, v_a):
    """Luong's concat score ``e_s = v_aᵀ tanh(W_a [h_t ; h̄_s])``, built with the concatenation.

    Concatenate the query with every key (query first), multiply by ``W_a``,
    apply ``tanh``, contract with ``v_a``. (The library splits ``W_a`` into a
    query block and a key block instead, so the key half is computed once.)

    Shapes: ``query`` (B, Dq), ``keys`` (B, S, Dk), ``W_a`` (Dq + Dk, A), ``v_a`` (A,) -> (B, S),
    in the dtype of the inputs.
    """
    B, S, _ = keys.shape
    q = np.broadcast_to(query[:, None, :], (B, S, query.shape[-1]))  # (B, S, Dq)
    both = np.concatenate([q, keys], axis=-1)  # (B, S, Dq + Dk)
    return np.tanh(both @ W_a) @ v_a  # (B, S)


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
    s = np.arange(S)[None, :]  # (1, S)
    offset = s - p[:, None]  # (B, S)
    keep = (np.abs(offset) <= D) & (s < lengths[:, None])  # (B, S)
    sigma = D / 2
    return keep, np.exp(-offset ** 2 / (2 * sigma ** 2))  # (B, S), (B, S)
