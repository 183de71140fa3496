"""Luong attention (Luong, Pham & Manning, EMNLP 2015): scores, global and local attention.

The decoder first updates its state ``h_t``, then attends with it (Bahdanau uses
the previous state). Three scores of ``h_t`` against each source state ``h̄_s``::

    dot      h_tᵀ h̄_s
    general  h_tᵀ W_a h̄_s
    concat   v_aᵀ tanh(W_a [h_t ; h̄_s])

*Global* attention normalises over every source position. *Local* attention only
looks at a window ``[p_t - D, p_t + D]`` (clipped to the sentence, padding masked):
``local-m`` sets ``p_t = t`` (monotonic); ``local-p`` predicts
``p_t = S · sigmoid(v_pᵀ tanh(W_p h_t))`` and multiplies the window's softmax by a
Gaussian ``exp(-(s - p_t)² / 2σ²)``, ``σ = D/2``, through which ``p_t`` is trained.
Then ``h̃_t = tanh(W_c [c_t ; h_t])`` (the attentional state) predicts the word
and is fed to the next step's input ("input feeding").
"""
import numpy as np

from .additive import additive_score
from .nn import Linear, Module, _init_uniform, sigmoid
from .softmax import masked_softmax, softmax_vjp

SCORES = ("dot", "general", "concat")


# BEGIN EXERCISE 3.1 (1 point): the general score
def general_score(query, keys, W_a):
    """Luong's general score ``e_s = h_tᵀ W_a h̄_s`` for every source position ``s``.

    Shapes: ``query`` (B, Dq), ``keys`` (B, S, Dk), ``W_a`` (Dq, Dk) -> (B, S), in the
    dtype of the inputs.
    """
    # BEGIN SOLUTION
    q = query @ W_a  # (B, Dk)
    return np.einsum("bsk,bk->bs", keys, q)  # (B, S)
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 3.2 (2 points): the concat score, literally
def concat_score(query, keys, W_a, v_a):
    """Luong's concat score ``e_s = v_aᵀ tanh(W_a [h_t ; h̄_s])``, built with the concatenation.

    Concatenate the query with every key (query first), multiply by ``W_a``,
    apply ``tanh``, contract with ``v_a``. (The library splits ``W_a`` into a
    query block and a key block instead, so the key half is computed once.)

    Shapes: ``query`` (B, Dq), ``keys`` (B, S, Dk), ``W_a`` (Dq + Dk, A), ``v_a`` (A,) -> (B, S),
    in the dtype of the inputs.
    """
    # BEGIN SOLUTION
    B, S, _ = keys.shape
    q = np.broadcast_to(query[:, None, :], (B, S, query.shape[-1]))  # (B, S, Dq)
    both = np.concatenate([q, keys], axis=-1)  # (B, S, Dq + Dk)
    return np.tanh(both @ W_a) @ v_a  # (B, S)
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 3.3 (3 points): the local-p window
def local_window(p, lengths, S, D):
    """The window ``|s - p_t| <= D`` inside each sentence,
    and the Gaussian ``exp(-(s - p_t)²/2σ²)``.

    Position ``s`` (0, 1, …, S-1) may be attended when ``|s - p| <= D`` and
    ``s < length`` (the window is clipped at the sentence ends; the padding is
    masked). The Gaussian uses ``σ = D / 2`` and is computed at every position.

    Shapes: ``p`` (B,) float64, ``lengths`` (B,) int, ``S`` and ``D`` int
    -> ``(keep (B, S) bool, gauss (B, S) float64)``.
    """
    # BEGIN SOLUTION
    s = np.arange(S)[None, :]  # (1, S)
    offset = s - p[:, None]  # (B, S)
    keep = (np.abs(offset) <= D) & (s < lengths[:, None])  # (B, S)
    sigma = D / 2
    return keep, np.exp(-offset ** 2 / (2 * sigma ** 2))  # (B, S), (B, S)
    # END SOLUTION


# END EXERCISE


class LuongAttention(Module):
    """Luong attention with a ``score`` in {"dot", "general", "concat"} and ``local`` in
    {None, "m", "p"}.

    Same protocol as :class:`~attention_scratch.additive.AdditiveAttention`:
    ``prepare(keys, keep)`` once, ``forward(query, memory, t)`` at decoder step ``t``,
    ``backward(d_context, cache, grad_memory)``, ``prepare_backward(grad_memory, memory)``.
    ``forward``'s cache holds ``"p"``, the window centres (B,), for local attention.

    Parameters
    ----------
    query_dim, key_dim : int
        ``dot`` needs them equal.
    rng : numpy.random.Generator
    score : str
    local : None, "m" or "p"
    D : int
        Half-width of the local window (Luong et al. use 10).
    attn_dim : int
        Hidden size of the concat score and of the local-p position network.

    Shapes
    ------
    ``keys`` (B, S, Dk), ``keep`` (B, S) bool (True at real positions, a right-padded
    prefix), ``query`` (B, Dq) -> ``context`` (B, Dk), ``weights`` (B, S).
    """

    def __init__(self, query_dim, key_dim, rng, score="dot", local=None, D=3, attn_dim=None,
                 dtype=np.float64):
        super().__init__()
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}; got {score!r}")
        if local not in (None, "m", "p"):
            raise ValueError(f"local must be None, 'm' or 'p'; got {local!r}")
        if score == "dot" and query_dim != key_dim:
            raise ValueError("the dot score needs query_dim == key_dim; "
                             f"got {query_dim} and {key_dim}")
        self.score, self.local, self.D, self.query_dim = score, local, int(D), query_dim
        A = attn_dim or query_dim
        if score == "general":
            self.add_param("W_a", _init_uniform(rng, (query_dim, key_dim), 1 / np.sqrt(query_dim),
                                                dtype))
        if score == "concat":
            bound = 1 / np.sqrt(query_dim + key_dim)
            self.add_param("W_a", _init_uniform(rng, (query_dim + key_dim, A), bound, dtype))
            self.add_param("v_a", _init_uniform(rng, (A,), 1 / np.sqrt(A), dtype))
        if local == "p":
            self.add_param("W_p", _init_uniform(rng, (query_dim, A), 1 / np.sqrt(query_dim), dtype))
            self.add_param("v_p", _init_uniform(rng, (A,), 1 / np.sqrt(A), dtype))

    def prepare(self, keys, keep=None):
        """Store the keys (and, for concat, their half of ``W_a [h_t; h̄_s]``).
        Returns the memory."""
        if keep is None:
            keep = np.ones(keys.shape[:2], dtype=bool)
        if np.shape(keep) != keys.shape[:2]:
            raise ValueError(f"keep must have shape (B, S) = {keys.shape[:2]}; "
                             f"got {np.shape(keep)}")
        memory = {"keys": keys, "keep": keep, "lengths": keep.sum(axis=1)}
        if self.score == "concat":
            memory["keys_proj"] = keys @ self.params["W_a"][self.query_dim:]  # (B, S, A)
        return memory

    @staticmethod
    def zero_memory_grads(memory):
        return {k: np.zeros_like(memory[k]) for k in ("keys", "keys_proj") if k in memory}

    def _scores(self, h, memory):
        keys = memory["keys"]
        if self.score == "dot":
            return np.einsum("bsd,bd->bs", keys, h), None  # (B, S)
        if self.score == "general":
            return general_score(h, keys, self.params["W_a"]), None  # (B, S)
        q = h @ self.params["W_a"][:self.query_dim]  # (B, A)
        return additive_score(q, memory["keys_proj"], self.params["v_a"])  # (B, S), (B, S, A)

    def forward(self, query, memory, t=0):
        keys, keep, lengths = memory["keys"], memory["keep"], memory["lengths"]
        if query.ndim != 2 or query.shape[-1] != self.query_dim:
            raise ValueError(f"query must have shape (B, {self.query_dim}); got {query.shape}")
        scores, hidden = self._scores(query, memory)  # (B, S)
        cache = {"h": query, "keys": keys, "hidden": hidden, "p": None}
        if self.local is not None:
            if self.local == "m":
                # p_t = t, inside the sentence
                p = np.minimum(float(t), lengths - 1.0).astype(query.dtype)  # (B,)
            else:
                th = np.tanh(query @ self.params["W_p"])  # (B, A)
                sig = sigmoid(th @ self.params["v_p"])  # (B,)
                # p_t = S · sigmoid(v_pᵀ tanh(W_p h_t))
                p = (lengths * sig).astype(query.dtype)  # (B,)
                cache.update(th=th, sig=sig, lengths=lengths)
            window, gauss = local_window(p, lengths, keys.shape[1], self.D)  # (B, S) each
            gauss = gauss.astype(query.dtype, copy=False)  # local_window gives float64
            keep = keep & window
            cache.update(p=p, gauss=gauss)
        align = masked_softmax(scores, keep)  # (B, S)
        weights = align * cache["gauss"] if self.local == "p" else align  # (B, S)
        context = np.einsum("bs,bsd->bd", weights, keys)  # (B, Dk)
        cache.update(align=align, weights=weights)
        return context, weights, cache

    def backward(self, grad_context, cache, grad_memory):
        """Gradient of the query; adds key gradients into ``grad_memory`` and
        parameter gradients."""
        keys, h, align, weights = cache["keys"], cache["h"], cache["align"], cache["weights"]
        grad_memory["keys"] += weights[..., None] * grad_context[:, None, :]  # (B, S, Dk)
        d_weights = np.einsum("bsd,bd->bs", keys, grad_context)  # (B, S)
        d_h = np.zeros_like(h)
        if self.local == "p":
            gauss, p = cache["gauss"], cache["p"]
            d_gauss = d_weights * align  # (B, S)
            d_weights = d_weights * gauss  # (B, S): now dL/d align
            sigma2 = (self.D / 2) ** 2
            s = np.arange(keys.shape[1])[None, :]  # (1, S)
            d_p = np.sum(d_gauss * gauss * (s - p[:, None]) / sigma2, axis=1)  # (B,)
            sig, th = cache["sig"], cache["th"]
            d_u = d_p * cache["lengths"] * sig * (1 - sig)  # (B,): p = len · σ(u)
            self.grads["v_p"] += th.T @ d_u  # (A,)
            d_pre = d_u[:, None] * self.params["v_p"] * (1 - th * th)  # (B, A)
            self.grads["W_p"] += h.T @ d_pre  # (Dq, A)
            d_h += d_pre @ self.params["W_p"].T  # (B, Dq)
        d_scores = softmax_vjp(d_weights, align)  # (B, S)
        if self.score == "dot":
            d_h += np.einsum("bs,bsd->bd", d_scores, keys)  # (B, D)
            grad_memory["keys"] += d_scores[..., None] * h[:, None, :]  # (B, S, D)
        elif self.score == "general":
            W = self.params["W_a"]
            d_q = np.einsum("bs,bsk->bk", d_scores, keys)  # (B, Dk)
            self.grads["W_a"] += h.T @ d_q  # (Dq, Dk)
            d_h += d_q @ W.T  # (B, Dq)
            grad_memory["keys"] += d_scores[..., None] * (h @ W)[:, None, :]  # (B, S, Dk)
        else:
            hidden, v = cache["hidden"], self.params["v_a"]
            self.grads["v_a"] += np.einsum("bs,bsa->a", d_scores, hidden)  # (A,)
            d_pre = d_scores[..., None] * v * (1 - hidden * hidden)  # (B, S, A)
            grad_memory["keys_proj"] += d_pre  # (B, S, A)
            d_q = d_pre.sum(axis=1)  # (B, A)
            self.grads["W_a"][:self.query_dim] += h.T @ d_q  # (Dq, A)
            d_h += d_q @ self.params["W_a"][:self.query_dim].T  # (B, Dq)
        return d_h

    def prepare_backward(self, grad_memory, memory):
        """Finish the key gradient (the concat score's key projection);
        returns dL/dkeys (B, S, Dk)."""
        d_keys = grad_memory["keys"]
        if self.score == "concat":
            keys, d_kp = memory["keys"], grad_memory["keys_proj"]
            Dk, A = keys.shape[-1], d_kp.shape[-1]
            d_wa = keys.reshape(-1, Dk).T @ d_kp.reshape(-1, A)  # (Dk, A)
            self.grads["W_a"][self.query_dim:] += d_wa
            d_keys = d_keys + d_kp @ self.params["W_a"][self.query_dim:].T  # (B, S, Dk)
        return d_keys


class AttentionalState(Module):
    """``h̃_t = tanh(W_c [c_t ; h_t])``: combines the context and the decoder state
    (no bias, as in the paper).

    Shapes: ``context`` (B, Dk), ``h`` (B, Dh) -> (B, out_dim).
    ``backward(d_out, cache) -> (d_context, d_h)``.
    """

    def __init__(self, context_dim, hidden_dim, out_dim, rng, dtype=np.float64):
        super().__init__()
        self.context_dim = context_dim
        self.W_c = Linear(context_dim + hidden_dim, out_dim, rng, bias=False, dtype=dtype)

    def forward(self, context, h):
        pre, cache = self.W_c.forward(np.concatenate([context, h], axis=-1))  # (B, out)
        out = np.tanh(pre)
        return out, (cache, out)

    def backward(self, grad_out, cache):
        lin_cache, out = cache
        d = self.W_c.backward(grad_out * (1 - out * out), lin_cache)  # (B, Dk + Dh)
        return d[:, :self.context_dim], d[:, self.context_dim:]
