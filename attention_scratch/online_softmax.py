"""The online softmax: a running maximum, rescaling, and the merge operator (chapter 8).

A softmax needs the maximum and the sum of exponentials of a whole row before it
can produce one weight. The online softmax (Milakov and Gimelshein, 2018) keeps a
running pair ``(m, s)`` instead: ``m`` the largest score seen so far and ``s``
the sum of ``exp(x - m)`` over the scores seen so far. A new block of scores
updates the pair; when the maximum grows, the old sum is rescaled by
``exp(m_old - m_new)``. Two pairs computed over disjoint pieces of a row merge
into the pair of the union with the same rescaling, and this merge is
associative and commutative: the algebra behind flash attention (chapter 9),
split-KV decoding and ring attention (chapter 11).

Conventions: a score of ``-inf`` contributes nothing. While a row has seen only
``-inf`` its pair is ``(-inf, 0)``; the shift used for exponentials is then 0,
never ``-inf``, so no ``-inf - (-inf) = NaN`` appears. Partial attention outputs
follow the flash kernels' convention: a row with nothing to attend to has output
0 and log-sum-exp ``+inf``, and it carries zero weight in a merge.
"""
import numpy as np

from ._checks import array_module, as_float_array, check_axis, check_positive_int


# BEGIN EXERCISE 8.1 (2 points): one step of the online softmax
def online_update(m, s, x):
    """Fold a block of scores ``x`` into the running pair ``(m, s)``.

    ``m`` is the largest score seen so far and ``s`` the sum of ``exp(seen - m)``.
    Return the pair after also seeing ``x``: the new maximum
    ``m' = max(m, max(x))`` and ``s' = s·exp(m - m') + sum(exp(x - m'))``.
    Scores equal to ``-inf`` contribute nothing; while every score seen is
    ``-inf`` the pair stays ``(-inf, 0)`` and nothing may become NaN. An empty
    block (``n = 0``) leaves the pair as it is. A NaN score makes its row's sum
    ``s'`` NaN: never hide it (no ``nanmax``, ``nansum`` or ``nan_to_num``).

    Return new arrays: ``m`` and ``s`` stay as they were.

    Shapes: ``m`` and ``s`` (...), ``x`` (..., n) with the block on the last
    axis, ``n`` possibly 0; returns two arrays of shape (...). Dtype: the inputs
    share one dtype and the results keep it (float32 in, float32 out).
    """
    # BEGIN SOLUTION
    m_new = np.maximum(m, x.max(axis=-1, initial=-np.inf))  # (...)
    # HINT: when m' is -inf, exp(m - m') is exp(-inf + inf) = NaN; shift by 0 instead
    shift = np.where(np.isneginf(m_new), 0.0, m_new)  # (...): finite
    s_new = s * np.exp(m - shift) + np.exp(x - shift[..., None]).sum(axis=-1)  # (...)
    return m_new, s_new
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 8.2 (2 points): the merge operator on (max, sum) pairs
def merge_stats(m_a, s_a, m_b, s_b):
    """Merge the pairs of two disjoint pieces of a row into the pair of their union.

    With ``m = max(m_a, m_b)``: ``s = s_a·exp(m_a - m) + s_b·exp(m_b - m)``. A
    piece that saw nothing, ``(-inf, 0)``, is the identity of the merge. No NaN,
    even when both pieces are empty; but a NaN in either pair makes the merged
    sum NaN (never hide it).

    Shapes: all four arguments broadcast together (either pair may be the
    smaller one); returns ``(m, s)`` of the broadcast shape. Dtype: the inputs
    share one dtype and the results keep it (float32 in, float32 out).
    """
    # BEGIN SOLUTION
    m = np.maximum(m_a, m_b)  # (...)
    shift = np.where(np.isneginf(m), 0.0, m)  # (...): finite
    return m, s_a * np.exp(m_a - shift) + s_b * np.exp(m_b - shift)
    # END SOLUTION


# END EXERCISE


def check_partials(**arrays):
    """Raise ``ValueError`` unless partial attention results have consistent shapes.

    ``arrays`` holds ``(out, lse)`` pairs by keyword, in that order (for example
    ``out_a=..., lse_a=..., out_b=..., lse_b=...``). Each ``out`` must be
    ``(..., Ev)`` and its ``lse`` ``(...)``: the shape of ``out`` without its last
    axis. All the ``out`` arrays must have one shape.
    """
    names = list(arrays)
    shapes = {name: tuple(np.shape(a)) for name, a in arrays.items()}
    for out_name, lse_name in zip(names[0::2], names[1::2], strict=True):
        out_shape, lse_shape = shapes[out_name], shapes[lse_name]
        if len(out_shape) < 1 or out_shape[:-1] != lse_shape:
            raise ValueError(f"{out_name} (..., Ev) and {lse_name} (...) "
                             f"must share their leading axes; got shapes {out_shape} "
                             f"and {lse_shape}")
    first = names[0]
    for out_name in names[2::2]:
        if shapes[out_name] != shapes[first]:
            raise ValueError(f"{first} and {out_name} must have the same shape; got "
                             f"{shapes[first]} and {shapes[out_name]}")


# BEGIN EXERCISE 8.3 (3 points): merging two partial attention outputs
# uses: from attention_scratch.online_softmax import check_partials
def merge_attention(out_a, lse_a, out_b, lse_b):
    """Combine attention over key set A and over a disjoint key set B into attention over A∪B.

    ``out_a`` is the normalised attention output over A and ``lse_a`` the
    log-sum-exp of its scores (likewise for B). The weight of each part is its
    share of the total mass: with ``lse = log(exp(lse_a) + exp(lse_b))``,
    ``out = exp(lse_a - lse)·out_a + exp(lse_b - lse)·out_b``. A row that had
    nothing to attend to in a part has output 0 and log-sum-exp ``+inf`` there
    (the flash kernels' convention) and must get weight 0; a row empty in both
    parts gives output 0 and log-sum-exp ``+inf``. Compute without overflow.
    NaN in a part that is not empty (its output or its log-sum-exp) makes the
    row's output NaN, and a NaN log-sum-exp makes the merged one NaN: never
    hide it.

    Shapes: ``out_a``, ``out_b`` (..., Ev); ``lse_a``, ``lse_b`` (...);
    returns ``(out, lse)`` of the same shapes. Dtype: the inputs share one
    dtype and the results keep it (float32 in, float32 out).
    """
    check_partials(out_a=out_a, lse_a=lse_a, out_b=out_b, lse_b=lse_b)
    # BEGIN SOLUTION
    # HINT: first turn the "+inf = empty" convention into log(0) = -inf, then use merge_stats' shift
    la = np.where(np.isposinf(lse_a), -np.inf, lse_a)  # (...): log of the mass of part A
    lb = np.where(np.isposinf(lse_b), -np.inf, lse_b)  # (...)
    m = np.maximum(la, lb)  # (...)
    shift = np.where(np.isneginf(m), 0.0, m)  # (...): finite
    w_a, w_b = np.exp(la - shift), np.exp(lb - shift)  # (...): masses relative to exp(shift)
    total = w_a + w_b  # (...): 0 only when both parts are empty; NaN stays NaN
    safe = np.where(total == 0, 1.0, total)  # (...)
    out = (w_a[..., None] * out_a + w_b[..., None] * out_b) / safe[..., None]  # (..., Ev)
    lse = np.where(total == 0, np.inf, shift + np.log(safe))  # (...)
    return out, lse
    # END SOLUTION


# END EXERCISE


def _blocks(n, block):
    """Start and stop of consecutive blocks of ``block`` entries covering ``range(n)``."""
    return [(start, min(start + block, n)) for start in range(0, n, block)]


def online_stats(x, axis=-1, block=1):
    """The pair ``(max, sum of exp(x - max))`` of each row, reading ``block`` entries at a time.

    Parameters
    ----------
    x : array_like
        Scores; ``-inf`` entries contribute nothing.
    axis : int
        The axis to reduce.
    block : int
        How many entries each :func:`online_update` sees (1 is the textbook
        one-element-at-a-time online softmax).

    Returns
    -------
    m, s : ndarray
        ``x`` with ``axis`` removed; ``(-inf, 0)`` on rows of only ``-inf``.

    Shapes
    ------
    ``(..., n) -> (...)`` for ``axis=-1``.
    """
    x = as_float_array(x, "x")
    x = np.moveaxis(x, check_axis(axis, x.ndim), -1)  # (..., n)
    block = check_positive_int(block, "block")
    xp = array_module(x)  # NumPy or CuPy: the state lives where x does
    m = xp.full(x.shape[:-1], -np.inf, dtype=x.dtype)  # (...)
    s = xp.zeros(x.shape[:-1], dtype=x.dtype)  # (...)
    for start, stop in _blocks(x.shape[-1], block):
        m, s = online_update(m, s, x[..., start:stop])  # x block (..., b)
    return m, s


def online_logsumexp(x, axis=-1, block=1):
    """Log-sum-exp in one streaming pass: ``m + log(s)`` from :func:`online_stats`.

    A row of only ``-inf`` gives ``-inf``, as :func:`attention_scratch.logsumexp` does.

    Shapes
    ------
    ``(..., n) -> (...)`` for ``axis=-1``.
    """
    m, s = online_stats(x, axis=axis, block=block)
    with np.errstate(divide="ignore"):  # log(0) = -inf on an empty row is intended
        return np.where(s > 0, m + np.log(np.where(s > 0, s, 1)), -np.inf)  # (...)


def online_softmax(x, axis=-1, block=1):
    """Softmax from one streaming pass for ``(m, s)`` and one pass to normalise.

    The classical safe softmax reads each row three times (max, sum, divide);
    the online version two (Milakov and Gimelshein, 2018). Entries equal to ``-inf``
    get weight 0 and a row of only ``-inf`` is all zeros.

    Shapes
    ------
    ``x`` any shape; the result has its shape and dtype.
    """
    x = as_float_array(x, "x")
    axis = check_axis(axis, x.ndim)
    m, s = online_stats(x, axis=axis, block=block)  # (...) each, axis removed
    shift = np.expand_dims(np.where(np.isneginf(m), 0.0, m), axis)  # (..., 1, ...)
    total = np.expand_dims(np.where(s > 0, s, 1.0), axis)  # (..., 1, ...)
    return (np.exp(x - shift) / total).astype(x.dtype)
