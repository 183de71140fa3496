"""The contenders of the benchmark and the reference they are checked against (chapter 12).

:mod:`attention_scratch.bench.cpu` times these; this module says what each one runs:
the dense NumPy baseline (the whole ``(N, N)`` matrix in float32,
:func:`attention_scratch.testing.dense_reference` with ``upcast=False``), the NumPy and
Numba flash kernels, and PyTorch's ``scaled_dot_product_attention`` with autograd.
"""
import numpy as np

from ..backends import unavailable_reason
from ..flash import flash_attention, flash_attention_backward
from ..testing import attention_oracle, attention_oracle_backward, dense_reference, dense_reference_backward

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
        backend, (bq, bk) = self.name.split()[1], self.blocks[self.name]
        return flash_attention(self.q, self.k, self.v, causal, block_q=bq, block_k=bk, backend=backend)

    def prepare_backward(self, causal):
        self.state = None
        if self.name == "naive numpy":
            self.state = dense_reference(self.q, self.k, self.v, is_causal=causal, upcast=False)[1]
        elif self.name == "torch sdpa":
            xs = [t.clone().requires_grad_() for t in (self.tq, self.tk, self.tv)]
            out = self.torch.nn.functional.scaled_dot_product_attention(*xs, is_causal=causal)
            self.state = (xs, out)
        else:
            backend, (bq, bk) = self.name.split()[1], self.blocks[self.name]
            self.state = flash_attention(self.q, self.k, self.v, causal, block_q=bq, block_k=bk,
                                         backend=backend, return_lse=True)

    def backward(self, causal):
        if self.name == "naive numpy":
            return dense_reference_backward(self.g, self.q, self.k, self.v, self.state)
        if self.name == "torch sdpa":
            xs, out = self.state
            grads = self.torch.autograd.grad(out, xs, self.tg, retain_graph=True)
            return tuple(t.numpy() for t in grads)
        backend, (bq, bk) = self.name.split()[1], self.blocks[self.name]
        out, lse = self.state
        return flash_attention_backward(self.g, self.q, self.k, self.v, out, lse, causal,
                                        block_q=bq, block_k=bk, backend=backend)


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
