"""Gated recurrent units in NumPy: a GRU cell, a masked GRU over a sequence,
a bidirectional encoder.

The GRU of Cho et al. (2014), in the gate layout PyTorch uses (reset, update, new)::

    r = σ(x W_xr + b_xr + h W_hr + b_hr)
    z = σ(x W_xz + b_xz + h W_hz + b_hz)
    n = tanh(x W_xn + b_xn + r ∘ (h W_hn + b_hn))
    h' = (1 - z) ∘ n + z ∘ h

The three gates are stored side by side: ``W_x`` is (input, 3H), ``W_h`` is (H, 3H).
Same calling convention as :mod:`attention_scratch.nn`: ``forward`` returns
``(output, cache)``, ``backward(grad, cache)`` adds parameter gradients and
returns input gradients.
"""
import numpy as np

from .nn import Module, _init_uniform, sigmoid


# BEGIN EXERCISE 2.3 (3 points): one GRU step
# uses: from attention_scratch.nn import sigmoid
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
    # BEGIN SOLUTION
    # HINT: slice the three gate blocks with [:, :H], [:, H:2 * H] and [:, 2 * H:]
    H = h.shape[-1]
    hh = h @ W_h + b_h  # (B, 3H)
    r = sigmoid(x_proj[:, :H] + hh[:, :H])  # (B, H) reset gate
    z = sigmoid(x_proj[:, H:2 * H] + hh[:, H:2 * H])  # (B, H) update gate
    n = np.tanh(x_proj[:, 2 * H:] + r * hh[:, 2 * H:])  # (B, H) candidate
    h_new = n + z * (h - n)  # (B, H) = (1 - z) n + z h
    return h_new, r, z, n, hh[:, 2 * H:]
    # END SOLUTION


# END EXERCISE


class GRUCell(Module):
    """One GRU step. ``forward(x, h) -> (h_new, cache)``; ``backward(dh_new, cache) -> (dx, dh)``.

    Parameters
    ----------
    input_size, hidden_size : int
    rng : numpy.random.Generator
        Weights from U(-1/sqrt(H), 1/sqrt(H)), as in PyTorch.

    Shapes
    ------
    ``x`` (B, input_size), ``h`` (B, H) -> ``h_new`` (B, H). ``step_projected``
    takes ``x_proj = x @ W_x + b_x`` of shape (B, 3H) instead of ``x``, so a
    sequence layer can project every time step with one matrix product.
    """

    def __init__(self, input_size, hidden_size, rng, dtype=np.float64):
        super().__init__()
        self.hidden_size = hidden_size
        bound = 1.0 / np.sqrt(hidden_size)
        self.add_param("W_x", _init_uniform(rng, (input_size, 3 * hidden_size), bound, dtype))
        self.add_param("W_h", _init_uniform(rng, (hidden_size, 3 * hidden_size), bound, dtype))
        self.add_param("b_x", _init_uniform(rng, (3 * hidden_size,), bound, dtype))
        self.add_param("b_h", _init_uniform(rng, (3 * hidden_size,), bound, dtype))

    def forward(self, x, h):
        if x.shape[-1] != self.params["W_x"].shape[0] or h.shape[-1] != self.hidden_size:
            raise ValueError(f"GRUCell expects x (B, {self.params['W_x'].shape[0]}) and "
                             f"h (B, {self.hidden_size}); got x {x.shape}, h {h.shape}")
        x_proj = x @ self.params["W_x"] + self.params["b_x"]  # (B, 3H)
        h_new, cache = self.step_projected(x_proj, h)
        return h_new, (x, cache)

    def backward(self, grad_h_new, cache):
        x, step_cache = cache
        d_xproj, d_h = self.backward_projected(grad_h_new, step_cache)  # (B, 3H), (B, H)
        self.grads["W_x"] += x.T @ d_xproj  # (I, 3H)
        self.grads["b_x"] += d_xproj.sum(axis=0)  # (3H,)
        return d_xproj @ self.params["W_x"].T, d_h  # (B, I), (B, H)

    def step_projected(self, x_proj, h):
        """The GRU step given the projected input ``x_proj`` (B, 3H). Returns ``(h_new, cache)``."""
        h_new, r, z, n, hn = gru_step(x_proj, h, self.params["W_h"], self.params["b_h"])
        return h_new, (h, hn, r, z, n)

    def backward_projected(self, grad_h_new, cache):
        """Backward of :meth:`step_projected`: returns ``(d_x_proj (B, 3H), d_h (B, H))``."""
        h, hn, r, z, n = cache
        dn = grad_h_new * (1 - z)  # (B, H)
        dz = grad_h_new * (h - n)  # (B, H)
        d_h = grad_h_new * z  # (B, H): the direct path h -> h'
        dn_pre = dn * (1 - n * n)  # (B, H) through tanh
        dr_pre = dn_pre * hn * r * (1 - r)  # (B, H) through σ
        dz_pre = dz * z * (1 - z)  # (B, H)
        d_xproj = np.concatenate([dr_pre, dz_pre, dn_pre], axis=1)  # (B, 3H)
        d_hh = np.concatenate([dr_pre, dz_pre, dn_pre * r], axis=1)  # (B, 3H)
        self.grads["W_h"] += h.T @ d_hh  # (H, 3H)
        self.grads["b_h"] += d_hh.sum(axis=0)  # (3H,)
        d_h = d_h + d_hh @ self.params["W_h"].T  # (B, H)
        return d_xproj, d_h


class GRU(Module):
    """A GRU run over a padded batch; padded steps leave the state unchanged.

    ``forward(x, mask=None, h0=None, reverse=False) -> (hs, cache)``; the state at
    a padded step (``mask`` False) is copied from the previous step, so for
    right-padded batches ``hs[:, -1]`` is each sequence's final state, and with
    ``reverse=True`` (right to left) ``hs[:, 0]`` is.

    Shapes
    ------
    ``x`` (B, T, input_size); ``mask`` (B, T) bool, True = real token; ``h0``
    (B, H) -> ``hs`` (B, T, H). ``backward(d_hs, cache) -> (dx (B, T, I), dh0 (B, H))``.
    """

    def __init__(self, input_size, hidden_size, rng, dtype=np.float64):
        super().__init__()
        self.cell = GRUCell(input_size, hidden_size, rng, dtype)

    def forward(self, x, mask=None, h0=None, reverse=False):
        B, T, _ = x.shape
        cell = self.cell
        H = cell.hidden_size
        if x.shape[-1] != cell.params["W_x"].shape[0]:
            raise ValueError(f"x has shape {x.shape}; GRU expects "
                             f"(B, T, {cell.params['W_x'].shape[0]})")
        if mask is not None and np.shape(mask) != (B, T):
            raise ValueError(f"mask must have shape (B, T) = {(B, T)}; got {np.shape(mask)}")
        h = np.zeros((B, H), dtype=x.dtype) if h0 is None else h0  # (B, H)
        x_proj = x @ cell.params["W_x"] + cell.params["b_x"]  # (B, T, 3H): all steps at once
        hs = np.empty((B, T, H), dtype=x.dtype)
        steps = []
        for t in (range(T - 1, -1, -1) if reverse else range(T)):
            h_new, c = cell.step_projected(x_proj[:, t], h)  # (B, H)
            if mask is not None:
                m = mask[:, t, None]  # (B, 1)
                h_new = np.where(m, h_new, h)  # (B, H): padding keeps the state
            steps.append((t, c))
            hs[:, t] = h = h_new
        return hs, (x, mask, steps)

    def backward(self, d_hs, cache):
        x, mask, steps = cache
        cell = self.cell
        d_xproj = np.zeros(x.shape[:2] + (3 * cell.hidden_size,), dtype=d_hs.dtype)  # (B, T, 3H)
        d_h = np.zeros_like(d_hs[:, 0])  # (B, H): gradient flowing back from later steps
        for t, c in reversed(steps):
            g = d_hs[:, t] + d_h  # (B, H)
            if mask is not None:
                m = mask[:, t, None]  # (B, 1)
                d_xp, d_prev = cell.backward_projected(np.where(m, g, 0), c)
                d_h = d_prev + np.where(m, 0, g)  # (B, H): padded steps pass g straight through
            else:
                d_xp, d_h = cell.backward_projected(g, c)
            d_xproj[:, t] = d_xp
        I = x.shape[-1]
        cell.grads["W_x"] += x.reshape(-1, I).T @ d_xproj.reshape(-1, d_xproj.shape[-1])  # (I, 3H)
        cell.grads["b_x"] += d_xproj.sum(axis=(0, 1))  # (3H,)
        return d_xproj @ cell.params["W_x"].T, d_h  # (B, T, I), (B, H)


class BiGRUEncoder(Module):
    """A bidirectional GRU: one GRU reads left to right, one right to left; states are concatenated.

    ``forward(x, mask) -> (outputs, final, cache)``: ``outputs[:, j]`` is
    ``[→h_j ; ←h_j]``, the annotation of source position ``j`` in Bahdanau et al.
    (2015); ``final`` is ``[→h_last ; ←h_first]``, the summary a plain
    encoder-decoder must squeeze the whole input into.

    Shapes
    ------
    ``x`` (B, T, input_size); ``mask`` (B, T) bool (True = real token, right padding)
    -> ``outputs`` (B, T, 2H), ``final`` (B, 2H).
    ``backward(d_outputs, d_final, cache) -> dx`` (B, T, input_size).
    """

    def __init__(self, input_size, hidden_size, rng, dtype=np.float64):
        super().__init__()
        self.hidden_size = hidden_size
        self.fwd = GRU(input_size, hidden_size, rng, dtype)
        self.bwd = GRU(input_size, hidden_size, rng, dtype)

    def forward(self, x, mask=None):
        hs_f, cf = self.fwd.forward(x, mask)  # (B, T, H)
        hs_b, cb = self.bwd.forward(x, mask, reverse=True)  # (B, T, H)
        outputs = np.concatenate([hs_f, hs_b], axis=-1)  # (B, T, 2H)
        final = np.concatenate([hs_f[:, -1], hs_b[:, 0]], axis=-1)  # (B, 2H)
        return outputs, final, (cf, cb)

    def backward(self, d_outputs, d_final, cache):
        cf, cb = cache
        H = self.hidden_size
        d_f = d_outputs[..., :H].copy()  # (B, T, H)
        d_b = d_outputs[..., H:].copy()  # (B, T, H)
        if d_final is not None:
            d_f[:, -1] += d_final[:, :H]
            d_b[:, 0] += d_final[:, H:]
        dx_f, _ = self.fwd.backward(d_f, cf)
        dx_b, _ = self.bwd.backward(d_b, cb)
        return dx_f + dx_b  # (B, T, I)
