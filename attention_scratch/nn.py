"""The few layers a recurrent model needs, in NumPy, with hand-written backward passes.

Every layer is a :class:`Module` that owns its parameters in ``.params`` and
accumulates their gradients in ``.grads`` (same names, same shapes). The calling
convention is explicit, so that one layer can be applied many times (a GRU cell
at every time step) and differentiated in any order:

* ``y, cache = layer.forward(x)`` computes the output and returns what the
  backward pass needs;
* ``dx = layer.backward(dy, cache)`` *adds* the parameter gradients to
  ``layer.grads`` and returns the gradient of the input.

Call :meth:`Module.zero_grad` before each backward pass. Optimisers, gradient
clipping and saving to ``.npz`` live in :mod:`attention_scratch.optim`; the GRU
layers in :mod:`attention_scratch.rnn`. Used by chapters 2 and 3 (a recurrent
encoder-decoder) and chapter 15 (a tiny transformer).

Public, stable names: ``Module``, ``Embedding``, ``Linear``, ``cross_entropy``,
``sigmoid``.
"""
import numpy as np


def sigmoid(x):
    """The logistic function ``1 / (1 + exp(-x))`` without overflow for large ``|x|``.

    Shapes: any; the result has the shape and dtype of ``x``.
    """
    e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.result_type(x), copy=False)


def _init_uniform(rng, shape, bound, dtype):
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


class Module:
    """A container of parameters (``.params``), their gradients (``.grads``) and sub-modules.

    Assigning a :class:`Module` to an attribute registers it as a child, so
    :meth:`parameters` and :meth:`gradients` see the whole tree with dotted
    names (``"encoder.fwd.W_h"``). Parameters are updated in place by the
    optimisers, so the dictionaries always hold the live arrays.
    """

    def __init__(self):
        object.__setattr__(self, "params", {})
        object.__setattr__(self, "grads", {})
        object.__setattr__(self, "_children", {})

    def __setattr__(self, name, value):
        if isinstance(value, Module):
            self._children[name] = value
        object.__setattr__(self, name, value)

    def add_param(self, name, value):
        """Register ``value`` as parameter ``name`` with a zero gradient of the same shape."""
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)
        return value

    def parameters(self, prefix=""):
        """``{dotted name: array}`` for this module and all its children (live arrays)."""
        out = {prefix + k: v for k, v in self.params.items()}
        for child_name, child in self._children.items():
            out.update(child.parameters(f"{prefix}{child_name}."))
        return out

    def gradients(self, prefix=""):
        """``{dotted name: gradient array}``, the same keys as :meth:`parameters`."""
        out = {prefix + k: v for k, v in self.grads.items()}
        for child_name, child in self._children.items():
            out.update(child.gradients(f"{prefix}{child_name}."))
        return out

    def zero_grad(self):
        """Set every gradient in the tree to zero (in place)."""
        for g in self.gradients().values():
            g[...] = 0

    def num_parameters(self):
        """The total number of scalar parameters."""
        return int(sum(p.size for p in self.parameters().values()))

    def load_state(self, state):
        """Copy ``{dotted name: array}`` into the parameters, checking names and shapes."""
        params = self.parameters()
        missing, extra = set(params) - set(state), set(state) - set(params)
        if missing or extra:
            raise ValueError(f"state does not match the model: missing {sorted(missing)}, "
                             f"unexpected {sorted(extra)}")
        for name, p in params.items():
            value = np.asarray(state[name])
            if value.shape != p.shape:
                raise ValueError(f"state[{name!r}] has shape {value.shape}; "
                                 f"the model has {p.shape}")
            p[...] = value


class Embedding(Module):
    """A lookup table: token ids -> vectors. ``W[ids]`` forward, scatter-add backward.

    Parameters
    ----------
    num_embeddings, embedding_dim : int
    rng : numpy.random.Generator
        Draws ``W`` from N(0, 1).
    padding_idx : int, optional
        This row is initialised to zero and receives no gradient.

    Shapes
    ------
    ``ids`` (...) integers -> (..., embedding_dim).
    """

    def __init__(self, num_embeddings, embedding_dim, rng, padding_idx=None, dtype=np.float64):
        super().__init__()
        self.padding_idx = padding_idx
        W = rng.standard_normal((num_embeddings, embedding_dim)).astype(dtype)
        if padding_idx is not None:
            W[padding_idx] = 0
        self.add_param("W", W)

    def forward(self, ids):
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers; got dtype {ids.dtype}")
        n = self.params["W"].shape[0]
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            raise ValueError(f"ids must lie in [0, {n}); got values in [{ids.min()}, {ids.max()}]")
        return self.params["W"][ids], ids  # (..., D)

    def backward(self, grad_out, cache):
        """Scatter-add ``grad_out`` into the rows that were read. Returns None
        (ids have no gradient)."""
        ids = cache
        D = self.params["W"].shape[1]
        np.add.at(self.grads["W"], ids.reshape(-1), grad_out.reshape(-1, D))  # (V, D)
        if self.padding_idx is not None:
            self.grads["W"][self.padding_idx] = 0
        return None


class Linear(Module):
    """An affine map ``y = x @ W + b`` on the last axis (the docs/design.md convention).

    Parameters
    ----------
    in_features, out_features : int
    rng : numpy.random.Generator
        ``W`` and ``b`` are drawn from U(-1/sqrt(in), 1/sqrt(in)), as in PyTorch.
    bias : bool

    Shapes
    ------
    ``x`` (..., in_features) -> (..., out_features); ``W`` (in, out); ``b`` (out,).
    """

    def __init__(self, in_features, out_features, rng, bias=True, dtype=np.float64):
        super().__init__()
        bound = 1.0 / np.sqrt(in_features)
        self.add_param("W", _init_uniform(rng, (in_features, out_features), bound, dtype))
        if bias:
            self.add_param("b", _init_uniform(rng, (out_features,), bound, dtype))

    def forward(self, x):
        W = self.params["W"]
        if x.shape[-1] != W.shape[0]:
            raise ValueError(f"x has last dimension {x.shape[-1]} (shape {x.shape}); "
                             f"this Linear expects {W.shape[0]}")
        y = x @ W  # (..., out)
        if "b" in self.params:
            y = y + self.params["b"]
        return y, x

    def backward(self, grad_out, cache):
        x = cache
        W = self.params["W"]
        x2 = x.reshape(-1, W.shape[0])  # (N, in): every leading axis is a batch axis
        g2 = grad_out.reshape(-1, W.shape[1])  # (N, out)
        self.grads["W"] += x2.T @ g2  # (in, out)
        if "b" in self.params:
            self.grads["b"] += g2.sum(axis=0)  # (out,)
        return grad_out @ W.T  # (..., in)


def cross_entropy(logits, targets, ignore_index=None):
    """Mean softmax cross-entropy over the targets that are not ``ignore_index``, and its gradient.

    ``loss = -mean_n log softmax(logits_n)[targets_n]`` over the counted positions.
    The gradient is ``(softmax(logits) - onehot(targets)) / count`` there and 0
    at ignored positions (padding).

    Parameters
    ----------
    logits : ndarray, (..., V)
    targets : ndarray of int, (...)
    ignore_index : int, optional
        Targets equal to it (the padding id) are not counted.

    Returns
    -------
    loss : float
    grad_logits : ndarray, (..., V), dL/dlogits.

    Shapes
    ------
    ``logits`` (..., V); ``targets`` (...) — the leading shapes must agree.
    """
    targets = np.asarray(targets)
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits of shape {logits.shape} need targets of shape "
                         f"{logits.shape[:-1]}; got targets of shape {targets.shape}")
    if targets.dtype.kind not in "iu":
        raise TypeError(f"targets must be integers; got dtype {targets.dtype}")
    V = logits.shape[-1]
    flat = logits.reshape(-1, V)  # (N, V)
    t = targets.reshape(-1)  # (N,)
    keep = np.ones_like(t, dtype=bool) if ignore_index is None else t != ignore_index  # (N,)
    if np.any((t[keep] < 0) | (t[keep] >= V)):
        raise ValueError(f"targets must lie in [0, {V}) outside ignore_index={ignore_index}")
    count = max(int(keep.sum()), 1)
    shifted = flat - flat.max(axis=1, keepdims=True)  # (N, V): every entry <= 0
    log_z = np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # (N, 1)
    log_probs = shifted - log_z  # (N, V)
    t_safe = np.where(keep, t, 0)  # (N,): ignored positions read column 0, then get weight 0
    picked = log_probs[np.arange(t.size), t_safe]  # (N,)
    loss = -float(np.sum(np.where(keep, picked, 0.0))) / count
    grad = np.exp(log_probs)  # (N, V): softmax
    grad[np.arange(t.size), t_safe] -= 1.0
    grad *= (keep / count)[:, None].astype(grad.dtype)  # (N, V): ignored rows are 0
    return loss, grad.reshape(logits.shape)  # (..., V)
