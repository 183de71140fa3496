"""Chapter 2 solutions: Bahdanau attention.

Written by `make exercises` from the library source; do not edit.
Grade them with: python -m attention_scratch.grade --solutions --chapter 2
"""


import numpy as np

from attention_scratch.nn import sigmoid


# Exercise 2.1 (2 points): the additive score
def additive_score(query_proj, keys_proj, v):
    """Bahdanau's alignment scores ``e_j = vᵀ tanh(q + k_j)`` for every key ``j``.

    ``query_proj`` is ``q = W s`` (already projected) and ``keys_proj`` holds the
    rows ``k_j = U h_j``. Add ``q`` to every row, apply ``tanh``, contract with ``v``.

    Shapes: ``query_proj`` (..., A), ``keys_proj`` (..., S, A), ``v`` (A,) -> (..., S);
    the leading axes ``...`` broadcast and may be absent. Also return the hidden
    layer ``tanh(q + k_j)`` (..., S, A): the backward pass needs it. Both results
    have the dtype of the inputs.
    """
    # HINT: insert an axis so that q broadcasts against every key: query_proj[..., None, :]
    hidden = np.tanh(query_proj[..., None, :] + keys_proj)  # (..., S, A)
    return hidden @ v, hidden  # (..., S), (..., S, A)


# Exercise 2.2 (3 points): the VJP of attention pooling
def attention_pooling_backward(grad_context, weights, values):
    """Backward of ``c = Σ_j α_j h_j`` with ``α = softmax(e)``: return ``(dL/de, dL/dvalues)``.

    ``dL/dvalues_j = α_j · dL/dc``; ``dL/dα_j = h_j · dL/dc``; then the softmax
    VJP ``dL/de = α ∘ (dL/dα - Σ_j α_j dL/dα_j)``. Masked positions have
    ``α_j = 0`` and therefore get gradient 0 automatically, and so does a fully
    masked row (every ``α_j = 0``): no division is needed, so none may give NaN.

    Shapes: ``grad_context`` (..., Dv), ``weights`` (..., S), ``values`` (..., S, Dv)
    -> ``(grad_scores (..., S), grad_values (..., S, Dv))``, in the dtype of the inputs.
    """
    grad_values = weights[..., :, None] * grad_context[..., None, :]  # (..., S, Dv)
    grad_weights = np.einsum("...sv,...v->...s", values, grad_context)  # (..., S)
    dot = (grad_weights * weights).sum(axis=-1, keepdims=True)  # (..., 1)
    return weights * (grad_weights - dot), grad_values  # (..., S), (..., S, Dv)


# Exercise 2.3 (3 points): one GRU step
def gru_step(x_proj, h, W_h, b_h):
    """One GRU step from the projected input, in the gate order (reset, update, new).

    With ``hh = h @ W_h + b_h`` split into three blocks of ``H`` columns
    ``(hh_r, hh_z, hh_n)`` and ``x_proj`` split the same way::

        r = σ(x_r + hh_r);  z = σ(x_z + hh_z);  n = tanh(x_n + r ∘ hh_n)
        h_new = (1 - z) ∘ n + z ∘ h

    Use :func:`attention_scratch.nn.sigmoid` for σ.

    Shapes: ``x_proj`` (B, 3H), ``h`` (B, H), ``W_h`` (H, 3H), ``b_h`` (3H,).
    Returns ``(h_new, r, z, n, hh_n)``, each (B, H) in the dtype of the inputs,
    with ``hh_n = h W_hn + b_hn`` the last block of ``hh``; the backward pass
    needs the gates.
    """
    # HINT: slice the three gate blocks with [:, :H], [:, H:2 * H] and [:, 2 * H:]
    H = h.shape[-1]
    hh = h @ W_h + b_h  # (B, 3H)
    r = sigmoid(x_proj[:, :H] + hh[:, :H])  # (B, H) reset gate
    z = sigmoid(x_proj[:, H:2 * H] + hh[:, H:2 * H])  # (B, H) update gate
    n = np.tanh(x_proj[:, 2 * H:] + r * hh[:, 2 * H:])  # (B, H) candidate
    h_new = n + z * (h - n)  # (B, H) = (1 - z) n + z h
    return h_new, r, z, n, hh[:, 2 * H:]
