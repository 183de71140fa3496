"""attention_scratch: the attention mechanism built from scratch in NumPy.

The library behind the book: every concept as readable, vectorised NumPy with a
hand-written backward pass, checked against the float64 oracle in
:mod:`attention_scratch.testing`.
"""
from .softmax import logsumexp, softmax, softmax_backward

__version__ = "0.1.0"

__all__ = ["softmax", "logsumexp", "softmax_backward"]

from .flash import block_schedule, flash_attention, flash_attention_backward  # noqa: E402
from .online_softmax import merge_attention, online_logsumexp, online_softmax  # noqa: E402

__all__ += ["flash_attention", "flash_attention_backward", "block_schedule",
            "online_softmax", "online_logsumexp", "merge_attention"]
from .decoding import ring_attention, split_kv_attention  # noqa: E402

__all__ += ["split_kv_attention", "ring_attention"]
from .additive import AdditiveAttention  # noqa: E402
from .luong import LuongAttention  # noqa: E402

__all__ += ["AdditiveAttention", "LuongAttention"]
from .random_features import performer_attention  # noqa: E402
from .variants import (linear_attention, linear_attention_chunked,  # noqa: E402
                       linear_attention_recurrent, sliding_window_attention)

__all__ += ["sliding_window_attention", "linear_attention", "linear_attention_recurrent",
            "linear_attention_chunked", "performer_attention"]
from .masks import causal_mask, combine_masks, padding_mask, sliding_window_mask  # noqa: E402
from .sdpa import scaled_dot_product_attention, scaled_dot_product_attention_backward  # noqa: E402
from .kv_cache import KVCache  # noqa: E402
from .multihead import MultiHeadAttention  # noqa: E402
from .positional import (LearnedPositionalEmbedding, alibi_bias, alibi_slopes, apply_rope,  # noqa: E402
                         apply_rope_backward, sinusoidal_encoding)

__all__ += ["scaled_dot_product_attention", "scaled_dot_product_attention_backward",
            "causal_mask", "padding_mask", "sliding_window_mask", "combine_masks",
            "MultiHeadAttention", "KVCache", "sinusoidal_encoding", "LearnedPositionalEmbedding",
            "apply_rope", "apply_rope_backward", "alibi_slopes", "alibi_bias"]
from .backends import BackendUnavailable  # noqa: E402  (backends load Numba/CuPy only when used)
from .optim import WeightFileError  # noqa: E402

__all__ += ["BackendUnavailable", "WeightFileError"]
