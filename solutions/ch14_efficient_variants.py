"""Chapter 14 solutions: Efficient variants.

Written by `make exercises` from the library source; do not edit.
Grade them with: python -m attention_scratch.grade --solutions --chapter 14
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
    return np.where(x > 0, x + 1, np.exp(np.minimum(x, 0))).astype(x.dtype)  # exp only of x <= 0


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
    state = state + phi_k[..., :, None] * v[..., None, :]  # (..., F, Ev): rank-one update
    normalizer = normalizer + phi_k  # (..., F)
    numerator = np.einsum("...f,...fv->...v", phi_q, state)  # (..., Ev)
    denominator = np.einsum("...f,...f->...", phi_q, normalizer)  # (...,)
    return numerator / (denominator[..., None] + eps), state, normalizer


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
    exponent = x @ omega.T - 0.5 * (x * x).sum(axis=-1, keepdims=True)  # (..., N, m)
    if stabilize == "row":
        exponent = exponent - exponent.max(axis=-1, keepdims=True)  # (..., N, m)
    elif stabilize == "all":
        exponent = exponent - exponent.max(axis=(-2, -1), keepdims=True)  # (..., N, m)
    return np.exp(exponent) / omega.shape[0] ** 0.5  # (..., N, m); a Python float keeps float32
