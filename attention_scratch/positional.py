"""Positions: sinusoidal and learned encodings, rotary embeddings (RoPE), ALiBi (chapter 7).

Attention itself is blind to order: permute the keys and values together and
the output does not change; permute the tokens of a self-attention layer and
the output is permuted the same way. Position has to be put in:

* added to the inputs — the sinusoidal encoding of Vaswani et al. (2017), or a
  learned table;
* as a rotation of queries and keys by an angle proportional to the position —
  RoPE (Su et al., 2021/2024): the score of a rotated pair depends only on
  the *difference* of positions;
* as a bias on the scores that decreases linearly with distance — ALiBi
  (Press et al., 2022), which extrapolates to sequences longer than those trained on.
"""
import math

import numpy as np

from ._checks import (
    array_module,
    as_float_array,
    check_nonnegative_int,
    check_positive_int,
    to_host,
)


# BEGIN EXERCISE 7.1 (2 points): the sinusoidal position encoding
def sinusoidal_table(length, d_model, base=10000.0):
    """``PE[p, 2i] = sin(p / base^(2i/d))`` and ``PE[p, 2i+1] = cos(p / base^(2i/d))``.

    Each pair of columns is a sine and cosine of one frequency, from 1 (fast)
    down to ``1/base`` (slow). For an odd ``d_model`` the last column is a sine.

    Shapes: returns (length, d_model), float64.
    """
    # BEGIN SOLUTION
    pos = np.arange(length, dtype=np.float64)[:, None]  # (length, 1)
    inv_freq = base ** (-np.arange(0, d_model, 2, dtype=np.float64) / d_model)  # (ceil(d/2),)
    angles = pos * inv_freq  # (length, ceil(d/2))
    table = np.empty((length, d_model))  # (length, d_model)
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles[:, : d_model // 2])
    return table
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 7.2 (3 points): the RoPE rotation
# uses: from attention_scratch._checks import array_module
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
    # BEGIN SOLUTION
    xp = array_module(x, cos)  # NumPy or CuPy
    even, odd = x[..., 0::2], x[..., 1::2]  # (..., L, D/2) each
    out = xp.empty(np.broadcast_shapes(x.shape, cos.shape[:-1] + (x.shape[-1],)),
                   dtype=np.result_type(x, cos))  # (..., L, D)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 7.3 (2 points): the ALiBi slopes
# uses: import math
# uses: from attention_scratch._checks import check_positive_int
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
    # BEGIN SOLUTION
    def power_of_two(n):
        start = 2.0 ** (-8.0 / n)
        return start ** np.arange(1, n + 1)  # (n,)

    if (num_heads & (num_heads - 1)) == 0:  # a power of two
        return power_of_two(num_heads)
    c = 2 ** math.floor(math.log2(num_heads))
    return np.concatenate([power_of_two(c), power_of_two(2 * c)[0::2][: num_heads - c]])
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 7.4 (2 points): the ALiBi bias
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
    # BEGIN SOLUTION
    i = np.arange(L)[:, None] + (S - L)  # (L, 1): aligned query position
    j = np.arange(S)[None, :]  # (1, S)
    return -slopes[:, None, None] * np.abs(i - j)  # (H, 1, 1) * (L, S) -> (H, L, S)
    # END SOLUTION


# END EXERCISE


def sinusoidal_encoding(length, d_model, base=10000.0):
    """The fixed sinusoidal position encoding of Vaswani et al. (2017), added to the embeddings.

    Shapes
    ------
    returns ``(length, d_model)`` float64; ``length`` may be 0 (an empty table, no position).
    """
    return sinusoidal_table(check_nonnegative_int(length, "length"),
                            check_positive_int(d_model, "d_model"), float(base))


class LearnedPositionalEmbedding:
    """A learned absolute position table added to the inputs: ``y = x + P[:L]``.

    Parameters
    ----------
    max_len, d_model : int
        Table size; sequences longer than ``max_len`` raise ``ValueError`` (a learned
        table cannot extrapolate).
    rng : numpy.random.Generator, optional
        Draws the initial table, ``N(0, 0.02²)`` as in GPT-2.

    Shapes
    ------
    ``forward``: ``(B, L, d_model) -> (B, L, d_model)``; ``params["P"]`` ``(max_len, d_model)``.
    """

    def __init__(self, max_len, d_model, rng=None):
        self.max_len = check_positive_int(max_len, "max_len")
        self.d_model = check_positive_int(d_model, "d_model")
        rng = np.random.default_rng() if rng is None else rng
        self.params = {"P": 0.02 * rng.standard_normal((self.max_len, self.d_model))}
        self.grads = {}
        self._shape = None

    def forward(self, x, offset=0):
        """Add positions ``offset .. offset + L - 1`` to ``x`` (B, L, d_model)."""
        x = as_float_array(x, "x")
        L = x.shape[-2] if x.ndim >= 2 else 0
        if x.ndim < 2 or x.shape[-1] != self.d_model or offset + L > self.max_len:
            raise ValueError(f"x must have shape (..., L, {self.d_model}) with offset + L <= "
                             f"max_len={self.max_len}; got shape {x.shape} and offset {offset}")
        self._shape, self._offset = x.shape, offset
        return x + self.params["P"][offset:offset + L].astype(x.dtype)  # (..., L, d_model)

    __call__ = forward

    def backward(self, grad_out):
        """Return dL/dx (= ``grad_out``); store dL/dP in ``.grads["P"]``."""
        g = np.asarray(grad_out)
        if self._shape is None or g.shape != self._shape:
            raise ValueError(f"grad_out must have the shape of the last forward input "
                             f"{self._shape}; got {g.shape}")
        d_table = np.zeros_like(self.params["P"])  # (max_len, d_model)
        L = self._shape[-2]
        d_rows = g.reshape((-1, L, self.d_model)).sum(axis=0)  # (L, d_model)
        d_table[self._offset:self._offset + L] = d_rows
        self.grads = {"P": d_table}
        return g


def rope_angles(positions, head_dim, base=10000.0):
    """``cos`` and ``sin`` of the RoPE angles ``p · base^(-2i/D)`` for each position and pair.

    Shapes
    ------
    ``positions`` (L,) -> ``cos``, ``sin`` ``(L, head_dim/2)`` float64.
    """
    if head_dim % 2:
        raise ValueError("RoPE needs an even head dim "
                         f"(head_dim, the last axis of the queries/keys); got {head_dim}")
    inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # (D/2,)
    angles = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq  # (L, D/2)
    return np.cos(angles), np.sin(angles)


def _rope(x, positions, base, sign):
    x = as_float_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (..., L, D); got {x.shape}")
    L = x.shape[-2]
    positions = np.arange(L) if positions is None else to_host(positions)
    if positions.shape != (L,):
        raise ValueError(f"positions must have shape (L,) = ({L},) for x of shape {x.shape}; "
                         f"got {positions.shape}")
    cos, sin = rope_angles(positions, x.shape[-1], base)  # (L, D/2), on the host
    xp = array_module(x)
    return rotate_pairs(x, xp.asarray(cos.astype(x.dtype)),
                        xp.asarray((sign * sin).astype(x.dtype)))


def apply_rope(x, positions=None, base=10000.0):
    """Rotary position embedding: rotate query or key features by their position's angles.

    Parameters
    ----------
    x : array_like
        Queries or keys per head, ``(..., L, D)`` with ``D`` even.
    positions : array_like of int, optional
        The position of each of the ``L`` rows (default ``0 .. L-1``; a decoder
        with a KV cache passes ``S_cached .. S_cached + L - 1``).
    base : float
        The wavelength base, 10000 in RoFormer.

    Returns
    -------
    ndarray of the dtype of ``x``, ``(..., L, D)``. ``apply_rope(q, m) · apply_rope(k, n)``
    depends on the positions only through ``m - n``.
    """
    return _rope(x, positions, base, 1.0)


def apply_rope_backward(grad_out, positions=None, base=10000.0):
    """The gradient through :func:`apply_rope`: rotation by the opposite angles (the transpose).

    Shapes
    ------
    ``grad_out`` ``(..., L, D)``; returns the same shape.
    """
    return _rope(grad_out, positions, base, -1.0)
