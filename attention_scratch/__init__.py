"""attention_scratch: the attention mechanism built from scratch in NumPy.

The library behind the book: every concept as readable, vectorised NumPy with a
hand-written backward pass, checked against the float64 oracle in
:mod:`attention_scratch.testing`.
"""
from .softmax import logsumexp, softmax, softmax_backward

__version__ = "0.1.0"

__all__ = ["softmax", "logsumexp", "softmax_backward"]
