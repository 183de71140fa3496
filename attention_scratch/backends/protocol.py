"""What a flash attention backend provides: the :class:`FlashBackend` protocol.

A backend is a module (``attention_scratch.backends.numba.cpu``,
``attention_scratch.backends.cuda.gpu``, the CPU emulation of the CUDA kernels in
``attention_scratch.backends.cuda.emulator``) that imports without its optional
dependency and has these four functions, with the public signatures of
:func:`attention_scratch.flash_attention` and
:func:`attention_scratch.flash_attention_backward` less ``backend``. A backend may add
keyword-only options with defaults after them (the CUDA backend's ``tensor_cores``).
``tests/test_backends.py`` checks every backend's signatures against this protocol.
"""
from typing import Protocol, runtime_checkable

from ..contract import DEFAULT_BLOCK, TilePlan


@runtime_checkable
class FlashBackend(Protocol):
    """The interface of a backend module (a structural type: modules match it by
    their functions)."""

    def unavailable_reason(self) -> str | None:
        """``None`` when the backend can run here, else a sentence saying what is missing."""

    def flash_attention(self, query, key, value, is_causal=False, scale=None, enable_gqa=False, *,
                        causal_align="top_left", window=None, block_q=DEFAULT_BLOCK,
                        block_k=DEFAULT_BLOCK, return_lse=False):
        """:func:`attention_scratch.flash_attention` on this backend."""

    def flash_attention_backward(self, grad_out, query, key, value, out, lse, is_causal=False,
                                 scale=None, enable_gqa=False, *, causal_align="top_left",
                                 window=None, block_q=DEFAULT_BLOCK, block_k=DEFAULT_BLOCK):
        """:func:`attention_scratch.flash_attention_backward` on this backend."""

    def tile_plan(self, query, key, value, is_causal=False, scale=None, enable_gqa=False, *,
                  causal_align="top_left", window=None, block_q=DEFAULT_BLOCK,
                  block_k=DEFAULT_BLOCK, backward=False) -> TilePlan:
        """The tiles the forward (or, with ``backward=True``, the backward) pass runs."""
