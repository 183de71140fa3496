"""Chapter 14 exercises: Efficient variants.

Replace each `raise NotImplementedError(...)` with your code, then grade:

    make grade CHAPTER=14
    python -m attention_scratch.grade --chapter 14

This file was written by `make exercises` from the library; your edits are
never overwritten. The answers are in solutions/ and in the book.
"""


import numpy as np


# Exercise 14.1 (1 point): the elu + 1 feature map
def elu_feature_map(x):
    """``φ(x) = elu(x) + 1``: ``x + 1`` for ``x > 0`` and ``exp(x)`` otherwise.

    The feature map of Katharopoulos et al. (2020). It is positive, so every
    attention weight ``φ(q)·φ(k)`` is positive and the normaliser never vanishes.
    ``np.where`` computes both of its branches everywhere, so ``exp(x)`` would
    overflow for ``x = 1000`` even where ``x + 1`` is chosen: give ``exp`` only
    numbers ``<= 0``, so that no overflow warning reaches the caller (that
    warning is what the tests can see). Return a new array: ``x`` stays as it was.

    Shapes: any shape in, the same shape and dtype out (float32 stays float32).
    """
    raise NotImplementedError("Exercise 14.1: the elu + 1 feature map")


# Exercise 14.2 (2 points): one step of recurrent linear attention
def linear_attention_step(phi_q, phi_k, v, state, normalizer, eps=1e-6):
    """One token of causal linear attention as an RNN step.

    The state is ``S = Σ_{j<=t} φ(k_j) v_jᵀ`` and the normaliser ``z = Σ_{j<=t} φ(k_j)``.
    First add the new key and value: ``S += φ(k_t) v_tᵀ``, ``z += φ(k_t)``; then
    ``out_t = φ(q_t)ᵀ S / (φ(q_t)ᵀ z + eps)``, so the token attends to itself too.
    Return new arrays; do not modify ``state`` or ``normalizer`` in place (the
    caller may still need the old ones).

    Every leading axis ``...`` (batch, heads) is independent: one state per
    sequence and head. The results keep the dtype of the inputs (float32 in,
    float32 out).

    Shapes: ``phi_q``, ``phi_k`` (..., F); ``v`` (..., Ev); ``state`` (..., F, Ev);
    ``normalizer`` (..., F). Returns ``(out (..., Ev), state (..., F, Ev),
    normalizer (..., F))``.
    """
    raise NotImplementedError("Exercise 14.2: one step of recurrent linear attention")


# Exercise 14.3 (3 points): positive random features for the softmax kernel
def positive_random_features(x, omega, stabilize=None):
    """``φ(x) = exp(Ωx - ‖x‖²/2 - c) / √m``, the positive random features of FAVOR+.

    The exponent of feature ``r`` of row ``n`` is ``x_n·ω_r - ‖x_n‖²/2``. The
    constant ``c`` keeps ``exp`` in range (for a long ``x`` every exponent is far
    below 0, and every feature of the row would underflow to 0) and cancels in
    attention's normalisation: ``stabilize=None`` uses ``c = 0``; ``"row"`` the maximum of the
    exponent over the features of each row (for queries); ``"all"`` the maximum
    over all rows and features of the last two axes (for keys, which must share
    one constant), one constant per index of the leading axes ``...``.

    The result has the dtype of ``x`` and ``omega`` (float32 in, float32 out).

    Shapes: ``x`` (..., N, E), ``omega`` (m, E); returns (..., N, m).
    """
    raise NotImplementedError("Exercise 14.3: positive random features for the softmax kernel")
