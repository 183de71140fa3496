"""Masks as diagonal bands, and the tile arithmetic on them, written once for every kernel.

Every mask a flash kernel supports (causal in either alignment, a sliding window, or
both) keeps key ``j`` for query ``i`` exactly when the diagonal offset ``j - i`` lies in a
band ``lo <= j - i <= hi``. :func:`mask_band` states a mask that way, with ``None`` for an
unlimited side: the form chapter 9 teaches. :func:`integer_band` turns it into the one
encoding every kernel uses, two ints, ``lo = -L`` and ``hi = S`` standing for "unlimited"
(``j - i`` only takes values in ``[-(L - 1), S - 1]``, so neither bound binds).

The tile helpers below (:func:`key_blocks`, :func:`query_blocks`, :func:`tile_is_full`)
take that integer band and return plain ints, so the same source
serves the NumPy reference and, compiled with ``numba.njit``, the Numba kernels
(:mod:`attention_scratch.backends.numba.tiles`): the two paths cannot drift apart.
"""


def mask_band(L, S, is_causal=False, causal_align="top_left", window=None):
    """The band ``(lo, hi)`` with "may attend" ⇔ ``lo <= j - i <= hi``; ``None`` = unlimited.

    ``is_causal`` gives ``hi = 0`` (top-left) or ``hi = S - L`` (bottom-right);
    ``window=(left, right)`` gives ``lo = S - L - left`` and ``hi = S - L + right``
    (bottom-right aligned, as in :func:`attention_scratch.flash_attention`); together the
    tighter bound wins. The result is the mask of :func:`attention_scratch.testing.reference_mask`.
    """
    lo, hi = None, None
    if is_causal:
        hi = 0 if causal_align == "top_left" else S - L
    if window is not None:
        left, right = window
        if left is not None:
            lo = S - L - left
        if right is not None:
            hi = S - L + right if hi is None else min(hi, S - L + right)
    return lo, hi


def integer_band(band, L, S):
    """The band of an ``L × S`` problem as two ints: ``None`` and bounds beyond the grid clamped.

    ``lo = -L`` means "no lower bound" and ``hi = S`` "no upper bound"; a bound beyond the
    other end keeps nothing and stays beyond it. The mask is unchanged on every ``(i, j)`` of
    the grid. A block of rows ``i0..i1-1`` is itself an ``i1 × S`` problem, so the range
    helpers of chapter 9 may pass ``L = i1``.
    """
    lo, hi = band
    lo = -L if lo is None else max(-L, min(int(lo), S))
    hi = S if hi is None else max(-L, min(int(hi), S))
    return lo, hi


def shift_band(band, i0, j0):
    """The band in the local indices of a sub-problem whose rows start at ``i0`` and keys at ``j0``.

    With ``i = i0 + i'`` and ``j = j0 + j'``: ``lo - (j0 - i0) <= j' - i' <= hi - (j0 -
    i0)``. ``None`` stays ``None``; an integer band stays exact (a bound that never bound
    still never does).
    """
    lo, hi = band
    delta = j0 - i0
    return (None if lo is None else lo - delta, None if hi is None else hi - delta)


# The helpers below take an integer band (lo, hi) and return ints: numba.njit compiles
# them as they are.

def key_blocks(i0, i1, S, block_k, lo, hi):
    """``(first, end)``: the key blocks that query rows ``i0..i1-1`` may see, a half-open range.

    Row ``i`` keeps keys ``i + lo .. i + hi``, so the rows need keys ``i0 + lo`` to
    ``i1 - 1 + hi``, clipped to ``0 .. S - 1``; ``(0, 0)`` when there are none.
    """
    first = max(0, i0 + lo)
    last = min(S - 1, i1 - 1 + hi)
    if first > last:
        return 0, 0
    return first // block_k, last // block_k + 1


def query_blocks(j0, j1, L, block_q, lo, hi):
    """``(first, end)``: the query blocks that keys ``j0..j1-1`` contribute to
    (the backward pass)."""
    first = max(0, j0 - hi)
    last = min(L - 1, j1 - 1 - lo)
    if first > last:
        return 0, 0
    return first // block_q, last // block_q + 1


def tile_is_full(i0, i1, j0, j1, lo, hi):
    """True when every ``(i, j)`` of the tile
    (rows ``i0..i1-1``, keys ``j0..j1-1``) lies in the band."""
    return (j1 - 1) - i0 <= hi and j0 - (i1 - 1) >= lo
