"""Chapter 6 solutions: Multi-head attention.

Written by `make exercises` from the library source; do not edit.
Grade them with: python -m attention_scratch.grade --solutions --chapter 6
"""


import numpy as np

from attention_scratch._checks import array_module


# Exercise 6.1 (1 point): splitting the model dimension into heads
def split_heads(x, num_heads):
    """``(B, L, H·D) -> (B, H, L, D)``: head ``h`` owns features ``h·D .. h·D + D - 1``.

    Shapes: ``x`` (..., L, H·D) with any number of leading axes (also none),
    ``L`` possibly 0; returns (..., H, L, D) with the dtype of ``x``.
    """
    *lead, L, width = x.shape
    x = x.reshape(tuple(lead) + (L, num_heads, width // num_heads))  # (..., L, H, D)
    return np.swapaxes(x, -2, -3)  # (..., H, L, D)


# Exercise 6.2 (1 point): merging the heads back
def merge_heads(x):
    """``(B, H, L, D) -> (B, L, H·D)``, the inverse of :func:`split_heads`.

    Shapes: ``x`` (..., H, L, D) with any number of leading axes (also none),
    ``L`` possibly 0; returns (..., L, H·D) with the dtype of ``x``.
    """
    x = np.swapaxes(x, -2, -3)  # (..., L, H, D)
    return x.reshape(x.shape[:-2] + (x.shape[-2] * x.shape[-1],))  # (..., L, H·D)


# Exercise 6.3 (2 points): grouped-query attention by repeating key/value heads
def repeat_kv(x, num_q_heads):
    """Repeat each of the ``Hkv`` key/value heads ``G = Hq / Hkv`` times along the head axis.

    Query head ``h`` must read key/value head ``h // G``: heads come out in the
    order ``0, 0, ..., 1, 1, ...`` (each repeated ``G`` times in a row), not
    ``0, 1, ..., 0, 1, ...``. Then ordinary multi-head attention applies.

    Shapes: ``x`` (..., Hkv, S, D) with any number of leading axes (also none);
    returns (..., Hq, S, D) with the dtype of ``x``.
    """
    return np.repeat(x, num_q_heads // x.shape[-3], axis=-3)  # (..., Hq, S, D)


# Exercise 6.4 (2 points): the gradient of the repeated key/value heads
def fold_kv_grad(grad, num_kv_heads):
    """The backward pass of :func:`repeat_kv`: sum the gradients of each group's copies.

    A key/value head used by ``G`` query heads receives the sum of the ``G``
    gradients that flow back to its copies.

    Shapes: ``grad`` (..., Hq, S, D) with any number of leading axes (also none);
    returns (..., Hkv, S, D) with the dtype of ``grad``.
    """
    *lead, hq, S, D = grad.shape
    grouped = grad.reshape(tuple(lead) + (num_kv_heads, hq // num_kv_heads, S,
                                          D))  # (..., Hkv, G, S, D)
    return grouped.sum(axis=-3)  # (..., Hkv, S, D)


# Exercise 6.5 (2 points): appending to a growing KV-cache buffer
def append_to_buffer(buffer, length, new):
    """Write ``new`` after the first ``length`` positions of ``buffer``; grow it if full.

    ``buffer[..., :length, :]`` holds the cached entries, the rest is spare room.
    If ``length + n`` (``n = new.shape[-2]``) exceeds the capacity
    ``buffer.shape[-2]``, allocate a new buffer of capacity
    ``max(2 * capacity, length + n)`` and copy the cached entries over first.
    Return ``(buffer, length + n)``; the caller reads ``buffer[..., :length + n, :]``.
    With room left (``length + n <= capacity``) ``buffer`` itself is written and
    returned; a grown buffer keeps the dtype of ``buffer``.

    Shapes: ``buffer`` (..., capacity, D); ``new`` (..., n, D) with the same leading
    axes and D.
    """
    n = new.shape[-2]
    capacity = buffer.shape[-2]
    if length + n > capacity:
        xp = array_module(buffer)  # NumPy or CuPy: the buffer stays where it is
        grown = xp.empty(buffer.shape[:-2] + (max(2 * capacity, length + n), buffer.shape[-1]),
                         dtype=buffer.dtype)  # (..., new capacity, D)
        grown[..., :length, :] = buffer[..., :length, :]
        buffer = grown
    buffer[..., length:length + n, :] = new  # (..., n, D)
    return buffer, length + n
