"""The contenders of the benchmark and the reference they are checked against (chapter 12).

:mod:`attention_scratch.bench.cpu` times these; this module says what each one runs:
the dense NumPy baseline (the whole ``(N, N)`` matrix in float32,
:func:`attention_scratch.testing.dense_reference` with ``upcast=False``), the NumPy and
Numba flash kernels, and PyTorch's ``scaled_dot_product_attention`` with autograd.
"""
import numpy as np

from ..backends import tile_plan, unavailable_reason
from ..contract import AUTO_BLOCK
from ..flash import flash_attention, flash_attention_backward
from ..testing import (
    attention_oracle,
    attention_oracle_backward,
    dense_reference,
    dense_reference_backward,
)

METHODS = ("naive numpy", "flash numpy", "flash numba", "torch sdpa")


class Method:
    """One contender: ``forward(causal)`` returns the output; ``backward(causal)`` the three
    gradients.

    ``prepare_backward(causal)`` runs the forward pass whose results the backward
    pass needs (not timed).
    """

    def __init__(self, name, inputs, blocks):
        self.name, self.blocks = name, blocks
        self.q, self.k, self.v, self.g = inputs
        self.state = None
        self.backend = name.split()[1] if name.startswith("flash ") else None
        blocks = (blocks or {}).get(name)  # None: the backend's default (tuned, for Numba)
        self.tile_args = {} if blocks is None else {"block_q": blocks[0], "block_k": blocks[1]}
        if name == "torch sdpa":
            import torch

            self.torch = torch
            self.tq, self.tk, self.tv, self.tg = (torch.from_numpy(a) for a in inputs)

    def forward(self, causal):
        if self.name == "naive numpy":
            return dense_reference(self.q, self.k, self.v, is_causal=causal, upcast=False)[0]
        if self.name == "torch sdpa":
            with self.torch.no_grad():
                return self.torch.nn.functional.scaled_dot_product_attention(
                    self.tq, self.tk, self.tv, is_causal=causal).numpy()
        return flash_attention(self.q, self.k, self.v, causal, backend=self.backend,
                               **self.tile_args)

    def prepare_backward(self, causal):
        self.state = None
        if self.name == "naive numpy":
            self.state = dense_reference(self.q, self.k, self.v, is_causal=causal, upcast=False)[1]
        elif self.name == "torch sdpa":
            xs = [t.clone().requires_grad_() for t in (self.tq, self.tk, self.tv)]
            out = self.torch.nn.functional.scaled_dot_product_attention(*xs, is_causal=causal)
            self.state = (xs, out)
        else:
            self.state = flash_attention(self.q, self.k, self.v, causal, backend=self.backend,
                                         return_lse=True, **self.tile_args)

    def backward(self, causal):
        if self.name == "naive numpy":
            return dense_reference_backward(self.g, self.q, self.k, self.v, self.state)
        if self.name == "torch sdpa":
            xs, out = self.state
            grads = self.torch.autograd.grad(out, xs, self.tg, retain_graph=True)
            return tuple(t.numpy() for t in grads)
        out, lse = self.state
        return flash_attention_backward(self.g, self.q, self.k, self.v, out, lse, causal,
                                        backend=self.backend, **self.tile_args)

    def tiles(self, causal, backward):
        """The :class:`~attention_scratch.contract.TilePlan` a flash method runs for this case
        (tuned tiles included); ``None`` for the others."""
        if self.backend is None:
            return None
        sizes = {"block_q": AUTO_BLOCK, "block_k": AUTO_BLOCK, **self.tile_args}
        return tile_plan(self.q, self.k, self.v, causal, backward=backward, backend=self.backend,
                         **sizes)


def reference(inputs, causal, backward):
    """float64 results for batch 0, head 0: the oracle up to N = 4096, the NumPy flash reference
    above."""
    q, k, v, g = (a[:1, :1].astype(np.float64) for a in inputs)  # (1, 1, N, ·)
    if q.shape[-2] <= 4096:
        if backward:
            return attention_oracle_backward(g, q, k, v, is_causal=causal)
        return attention_oracle(q, k, v, is_causal=causal)[0]
    if backward:
        out, lse = flash_attention(q, k, v, causal, block_q=512, block_k=512, return_lse=True)
        return flash_attention_backward(g, q, k, v, out, lse, causal, block_q=512, block_k=512)
    return flash_attention(q, k, v, causal, block_q=512, block_k=512)


def first_head(result):
    """Batch 0, head 0 of a result (a tuple of arrays: of each), the part :func:`reference`
    computes."""
    if isinstance(result, tuple):
        return tuple(first_head(a) for a in result)
    return np.asarray(result)[:1, :1]


def available_methods(wanted):
    """The requested methods that can run here, and a reason for each that cannot."""
    methods, skipped = [], {}
    for name in wanted:
        if name == "flash numba" and unavailable_reason("numba"):
            skipped[name] = unavailable_reason("numba")
        elif name == "torch sdpa":
            try:
                import torch  # noqa: F401
                methods.append(name)
            except ImportError:
                skipped[name] = "PyTorch is not installed"
        else:
            methods.append(name)
    return methods, skipped
