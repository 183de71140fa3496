"""Additive attention (Bahdanau, Cho & Bengio, ICLR 2015): forward and hand-written backward.

For a decoder state ``s`` (the previous one, ``s_{i-1}``) and encoder annotations
``h_1 … h_S``::

    e_j = vᵀ tanh(W s + U h_j)          (the alignment model, a one-layer MLP)
    α   = softmax(e)  over the real (unpadded) positions
    c   = Σ_j α_j h_j                    (the context vector)

``U h_j`` does not depend on the decoder step, so :meth:`AdditiveAttention.prepare`
computes it once per source sequence and every decoder step reuses it.
"""
import numpy as np

from .nn import Module, _init_uniform
from .softmax import masked_softmax, softmax_vjp


# BEGIN EXERCISE 2.1 (2 points): the additive score
def additive_score(query_proj, keys_proj, v):
    """Bahdanau's alignment scores ``e_j = vᵀ tanh(q + k_j)`` for every key ``j``.

    ``query_proj`` is ``q = W s`` (already projected) and ``keys_proj`` holds the
    rows ``k_j = U h_j``. Add ``q`` to every row, apply ``tanh``, contract with ``v``.

    Shapes: ``query_proj`` (..., A), ``keys_proj`` (..., S, A), ``v`` (A,) -> (..., S);
    the leading axes ``...`` broadcast and may be absent. Also return the hidden
    layer ``tanh(q + k_j)`` (..., S, A): the backward pass needs it. Both results
    have the dtype of the inputs.
    """
    # BEGIN SOLUTION
    # HINT: insert an axis so that q broadcasts against every key: query_proj[..., None, :]
    hidden = np.tanh(query_proj[..., None, :] + keys_proj)  # (..., S, A)
    return hidden @ v, hidden  # (..., S), (..., S, A)
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 2.2 (3 points): the VJP of attention pooling
def attention_pooling_backward(grad_context, weights, values):
    """Backward of ``c = Σ_j α_j h_j`` with ``α = softmax(e)``: return ``(dL/de, dL/dvalues)``.

    ``dL/dvalues_j = α_j · dL/dc``; ``dL/dα_j = h_j · dL/dc``; then the softmax
    VJP ``dL/de = α ∘ (dL/dα - Σ_j α_j dL/dα_j)``. Masked positions have
    ``α_j = 0`` and therefore get gradient 0 automatically, and so does a fully
    masked row (every ``α_j = 0``): no division is needed, so none may give NaN.

    Shapes: ``grad_context`` (..., Dv), ``weights`` (..., S), ``values`` (..., S, Dv)
    -> ``(grad_scores (..., S), grad_values (..., S, Dv))``, in the dtype of the inputs.
    """
    # BEGIN SOLUTION
    grad_values = weights[..., :, None] * grad_context[..., None, :]  # (..., S, Dv)
    grad_weights = np.einsum("...sv,...v->...s", values, grad_context)  # (..., S)
    dot = (grad_weights * weights).sum(axis=-1, keepdims=True)  # (..., 1)
    return weights * (grad_weights - dot), grad_values  # (..., S), (..., S, Dv)
    # END SOLUTION


# END EXERCISE


def additive_attention_loops(s, h, W, U, v, keep=None):
    """Bahdanau attention for one query, with explicit loops: the equations line by line.

    Shapes: ``s`` (Dq,), ``h`` (S, Dk), ``W`` (Dq, A), ``U`` (Dk, A), ``v`` (A,),
    ``keep`` (S,) bool -> ``(context (Dk,), weights (S,))``. For teaching and tests only.
    """
    S = h.shape[0]
    e = np.full(S, -np.inf)
    for j in range(S):
        if keep is None or keep[j]:
            e[j] = v @ np.tanh(s @ W + h[j] @ U)  # (A,) -> scalar
    alpha = np.exp(e - e.max())
    alpha /= alpha.sum()
    context = np.zeros(h.shape[1])
    for j in range(S):
        context += alpha[j] * h[j]
    return context, alpha


class AdditiveAttention(Module):
    """Bahdanau attention with parameters ``W`` (Dq, A), ``U`` (Dk, A), ``v`` (A,).

    Use::

        memory = attn.prepare(keys, keep)           # once per source batch: U h_j
        context, weights, cache = attn.forward(query, memory)      # every decoder step
        grad_memory = attn.zero_memory_grads(memory)
        d_query = attn.backward(d_context, cache, grad_memory)    # accumulates into grad_memory
        d_keys = attn.prepare_backward(grad_memory, memory)        # once, at the end

    Shapes
    ------
    ``keys`` (B, S, Dk); ``keep`` (B, S) bool, True at real positions (not padding);
    ``query`` (B, Dq) or (B, L, Dq) -> ``context`` (B, [L,] Dk), ``weights`` (B, [L,] S).
    """

    def __init__(self, query_dim, key_dim, attn_dim, rng, dtype=np.float64):
        super().__init__()
        self.add_param("W", _init_uniform(rng, (query_dim, attn_dim), 1 / np.sqrt(query_dim),
                                          dtype))
        self.add_param("U", _init_uniform(rng, (key_dim, attn_dim), 1 / np.sqrt(key_dim), dtype))
        self.add_param("v", _init_uniform(rng, (attn_dim,), 1 / np.sqrt(attn_dim), dtype))

    def prepare(self, keys, keep=None):
        """Project the keys once: ``U h_j`` for every position. Returns the memory dict."""
        if keys.ndim != 3 or keys.shape[-1] != self.params["U"].shape[0]:
            raise ValueError(f"keys must have shape (B, S, {self.params['U'].shape[0]}); "
                             f"got {keys.shape}")
        if keep is None:
            keep = np.ones(keys.shape[:2], dtype=bool)
        if np.shape(keep) != keys.shape[:2]:
            raise ValueError(f"keep must have shape (B, S) = {keys.shape[:2]}; "
                             f"got {np.shape(keep)}")
        return {"keys": keys, "keys_proj": keys @ self.params["U"], "keep": keep}  # proj: (B, S, A)

    @staticmethod
    def zero_memory_grads(memory):
        return {"keys": np.zeros_like(memory["keys"]),
                "keys_proj": np.zeros_like(memory["keys_proj"])}

    def forward(self, query, memory):
        W = self.params["W"]
        if query.ndim not in (2, 3) or query.shape[-1] != W.shape[0]:
            raise ValueError(f"query must have shape (B, {W.shape[0]}) or (B, L, {W.shape[0]}); "
                             f"got {query.shape}")
        keys, keys_proj, keep = memory["keys"], memory["keys_proj"], memory["keep"]
        extra = query.ndim - 2  # 1 when there is an L axis
        kp = keys_proj.reshape(keys_proj.shape[:1] + (1,) * extra
                               + keys_proj.shape[1:])  # (B, [1,] S, A)
        kv = keys.reshape(keys.shape[:1] + (1,) * extra + keys.shape[1:])  # (B, [1,] S, Dk)
        kk = keep.reshape(keep.shape[:1] + (1,) * extra + keep.shape[1:])  # (B, [1,] S)
        scores, hidden = additive_score(query @ W, kp, self.params["v"])  # (B, [L,] S), (..., S, A)
        weights = masked_softmax(scores, kk)  # (B, [L,] S): 0 at padding
        context = np.einsum("...s,...sd->...d", weights, kv)  # (B, [L,] Dk)
        return context, weights, (query, hidden, weights, kv, extra)

    def backward(self, grad_context, cache, grad_memory, grad_weights=None):
        """Gradient of the query; adds the key gradients into ``grad_memory`` and W, v gradients."""
        query, hidden, weights, kv, extra = cache
        d_scores, d_values = attention_pooling_backward(grad_context, weights,
                                                        kv)  # (B,[L],S), (...,S,Dk)
        if grad_weights is not None:
            d_scores = d_scores + softmax_vjp(grad_weights, weights)
        A = hidden.shape[-1]
        self.grads["v"] += hidden.reshape(-1,
                                          A).T @ d_scores.reshape(-1)  # (A,): sum over B, [L,] S
        d_pre = d_scores[..., None] * self.params["v"] * (1 - hidden * hidden)  # (B, [L,] S, A)
        d_qproj = d_pre.sum(axis=-2)  # (B, [L,] A)
        reduce = tuple(range(1, 1 + extra))  # the L axis, if any
        grad_memory["keys_proj"] += d_pre.sum(axis=reduce) if extra else d_pre  # (B, S, A)
        grad_memory["keys"] += d_values.sum(axis=reduce) if extra else d_values  # (B, S, Dk)
        self.grads["W"] += query.reshape(-1, query.shape[-1]).T @ d_qproj.reshape(-1, A)  # (Dq, A)
        return d_qproj @ self.params["W"].T  # (B, [L,] Dq)

    def prepare_backward(self, grad_memory, memory):
        """Finish the key gradient: ``dL/dkeys = (direct) + dL/d(U h) Uᵀ``; adds ``dU``."""
        keys, d_kp = memory["keys"], grad_memory["keys_proj"]
        Dk, A = self.params["U"].shape
        self.grads["U"] += keys.reshape(-1, Dk).T @ d_kp.reshape(-1, A)  # (Dk, A)
        return grad_memory["keys"] + d_kp @ self.params["U"].T  # (B, S, Dk)
