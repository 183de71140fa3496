"""attention_scratch: the attention mechanism built from scratch in NumPy.

The library behind the book: every concept as readable, vectorised NumPy with a
hand-written backward pass, checked against the float64 oracle in
:mod:`attention_scratch.testing`. Importing it never imports Numba or CuPy: the
accelerated backends load on first use.
"""
from .additive import AdditiveAttention
from .backends import BackendUnavailable
from .block_mask import BlockMask, create_block_mask
from .decoding import ring_attention, split_kv_attention
from .flash import block_schedule, flash_attention, flash_attention_backward
from .flex import flex_attention, flex_attention_backward
from .flex_mods import ScoreMod
from .kv_cache import KVCache
from .luong import LuongAttention
from .masks import causal_mask, combine_masks, padding_mask, sliding_window_mask
from .multihead import MultiHeadAttention
from .online_softmax import merge_attention, online_logsumexp, online_softmax
from .optim import WeightFileError
from .positional import (
                         LearnedPositionalEmbedding,
                         alibi_bias,
                         alibi_slopes,
                         apply_rope,
                         apply_rope_backward,
                         sinusoidal_encoding,
)
from .random_features import performer_attention
from .sdpa import scaled_dot_product_attention, scaled_dot_product_attention_backward
from .softmax import logsumexp, softmax, softmax_backward
from .variants import (
                         linear_attention,
                         linear_attention_chunked,
                         linear_attention_recurrent,
                         sliding_window_attention,
)

__version__ = "0.1.0"

__all__ = [
    # chapter 1
    "softmax", "logsumexp", "softmax_backward",
    # chapters 2 and 3
    "AdditiveAttention", "LuongAttention",
    # chapters 4 to 7
    "scaled_dot_product_attention", "scaled_dot_product_attention_backward",
    "causal_mask", "padding_mask", "sliding_window_mask", "combine_masks",
    "MultiHeadAttention", "KVCache",
    "sinusoidal_encoding", "LearnedPositionalEmbedding", "apply_rope", "apply_rope_backward",
    "alibi_slopes", "alibi_bias",
    # chapters 8 to 11
    "online_softmax", "online_logsumexp", "merge_attention",
    "flash_attention", "flash_attention_backward", "block_schedule",
    "split_kv_attention", "ring_attention",
    # chapter 14
    "sliding_window_attention", "linear_attention", "linear_attention_recurrent",
    "linear_attention_chunked", "performer_attention",
    # chapter 16
    "flex_attention", "flex_attention_backward", "create_block_mask", "BlockMask", "ScoreMod",
    # errors
    "BackendUnavailable", "WeightFileError",
]
