"""Chapter 7 exercises: Positions.

Replace each `raise NotImplementedError(...)` with your code, then grade:

    make grade CHAPTER=7
    python -m attention_scratch.grade --chapter 7

This file was written by `make exercises` from the library; your edits are
never overwritten. The answers are in solutions/ and in the book.
"""


import math

import numpy as np

from attention_scratch._checks import array_module, check_positive_int


# Exercise 7.1 (2 points): the sinusoidal position encoding
def sinusoidal_table(length, d_model, base=10000.0):
    """``PE[p, 2i] = sin(p / base^(2i/d))`` and ``PE[p, 2i+1] = cos(p / base^(2i/d))``.

    Each pair of columns is a sine and cosine of one frequency, from 1 (fast)
    down to ``1/base`` (slow). For an odd ``d_model`` the last column is a sine.

    Shapes: returns (length, d_model), float64.
    """
    raise NotImplementedError("Exercise 7.1: the sinusoidal position encoding")


# Exercise 7.2 (3 points): the RoPE rotation
def rotate_pairs(x, cos, sin):
    """Rotate each pair of features ``(x[..., 2i], x[..., 2i+1])`` by the angle whose cosine and
    sine are given.

    ``y[2i] = x[2i]·cos_i - x[2i+1]·sin_i`` and ``y[2i+1] = x[2i]·sin_i + x[2i+1]·cos_i``
    (the interleaved pairs of the RoFormer paper). Rotations keep lengths.
    Return a new array; ``x`` itself stays as it was.

    Shapes: ``x`` (..., L, D) with D even; ``cos`` and ``sin`` (L, D/2) or
    broadcastable to (..., L, D/2); returns the shape of ``x``. Dtype: ``cos``
    and ``sin`` come in the dtype of ``x`` and the result keeps it (float32 in,
    float32 out).
    """
    raise NotImplementedError("Exercise 7.2: the RoPE rotation")


# Exercise 7.3 (2 points): the ALiBi slopes
def alibi_slopes(num_heads):
    """The head-specific slopes of ALiBi (Press et al., 2022).

    For ``n`` a power of two the slopes are the geometric sequence that starts
    at ``2^(-8/n)`` with that same ratio: ``2^(-8/n), 2^(-16/n), ..., 2^(-8)``.
    Otherwise, with ``c`` the largest power of two below ``n``, take the ``c``
    slopes of ``c`` heads followed by the first ``n - c`` of every other slope
    of ``2c`` heads (``[0::2]``), as in the paper's code.

    Shapes: returns (num_heads,), float64.
    """
    num_heads = check_positive_int(num_heads, "num_heads")
    raise NotImplementedError("Exercise 7.3: the ALiBi slopes")


# Exercise 7.4 (2 points): the ALiBi bias
def alibi_bias(slopes, L, S):
    """The ALiBi score bias ``-m_h · |i' - j|`` with ``i' = i + S - L`` (bottom-right aligned).

    Every head penalises distant keys linearly, with its own slope ``m_h``. With
    a causal mask only ``j <= i'`` remain and this is the paper's ``-m_h · (i' - j)``.

    ``L > S`` is allowed: the first rows then have ``i' < 0``, and the formula
    still holds.

    Shapes: ``slopes`` (H,); returns (H, L, S), float64.
    """
    slopes = np.asarray(slopes, dtype=np.float64)
    if slopes.ndim != 1:
        raise ValueError("slopes must have shape (H,), one slope per head; "
                         f"got shape {slopes.shape}")
    raise NotImplementedError("Exercise 7.4: the ALiBi bias")
