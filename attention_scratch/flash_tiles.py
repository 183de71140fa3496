"""The pieces of a flash attention kernel: masks as diagonal bands, tiles, one tile step (chapters
9, 10).

Every mask a flash kernel supports here (causal in either alignment, a sliding
window, or both) keeps key ``j`` for query ``i`` exactly when the diagonal
offset ``j - i`` lies in a band ``lo <= j - i <= hi`` (``None`` = unlimited;
:func:`attention_scratch.bands.mask_band` builds it). That makes tiling cheap: a tile of rows
``i0..i1-1`` and columns ``j0..j1-1``
holds the offsets ``j0 - (i1 - 1) .. (j1 - 1) - i0``, so comparing two numbers
with the band tells whether the tile is empty (skip it), entirely kept (no mask
needed), or cut by the band (build the mask for this tile only).
"""
import numpy as np

from .bands import integer_band, key_blocks, query_blocks


# BEGIN EXERCISE 9.3 (2 points): classifying a tile against the mask band
def tile_kind(i0, i1, j0, j1, band):
    """Is the tile of rows ``i0..i1-1`` and keys ``j0..j1-1`` skipped, full or partial?

    The mask keeps ``(i, j)`` when ``lo <= j - i <= hi`` with ``band = (lo, hi)``
    (``None`` = unlimited). Inside the tile, ``j - i`` takes every integer from
    ``j0 - (i1 - 1)`` (bottom-left corner) to ``(j1 - 1) - i0`` (top-right corner).
    Return ``"skip"`` when no entry is kept, ``"full"`` when every entry is
    kept, and ``"partial"`` otherwise. Assume ``i0 < i1``, ``j0 < j1`` and, when
    both bounds are given, ``lo <= hi``. The tile need not be aligned to any
    block size.
    """
    # BEGIN SOLUTION
    lo, hi = band
    d_min, d_max = j0 - (i1 - 1), (j1 - 1) - i0
    if (hi is not None and d_min > hi) or (lo is not None and d_max < lo):
        return "skip"
    if (hi is None or d_max <= hi) and (lo is None or d_min >= lo):
        return "full"
    return "partial"
    # END SOLUTION


# END EXERCISE


def tile_keep(i0, i1, j0, j1, band):
    """The boolean "may attend" mask of one tile, from index comparisons.

    Shapes
    ------
    returns ``(i1 - i0, j1 - j0)``.
    """
    lo, hi = band
    shape, shift = (i1 - i0, j1 - j0), j0 - i0  # j - i = (j - j0) - (i - i0) + shift
    # np.tri(bq, bk, d)[r, c] is True where c <= r + d, i.e. where j - i <= d + shift (quicker
    # than comparing two aranges)
    keep = (np.tri(*shape, hi - shift, dtype=bool) if hi is not None  # (bq, bk): j - i <= hi
            else np.ones(shape, dtype=bool))
    if lo is not None:
        keep &= ~np.tri(*shape, lo - 1 - shift, dtype=bool)  # (bq, bk): j - i >= lo
    return keep


def key_block_range(i0, i1, S, block_k, band):
    """The key blocks a query block of rows ``i0..i1-1`` must visit: exactly the non-empty tiles.

    Row ``i`` keeps keys ``i + lo .. i + hi``, so the block needs keys from
    ``i0 + lo`` to ``i1 - 1 + hi``, clipped to ``0 .. S - 1``
    (:func:`attention_scratch.bands.key_blocks`,
    the arithmetic the Numba kernels run compiled). ``band`` may hold ``None``.
    """
    return range(*key_blocks(i0, i1, S, block_k, *integer_band(band, i1, S)))


def query_block_range(j0, j1, L, block_q, band):
    """The query blocks that a key block ``j0..j1-1`` contributes to (the backward pass's inner
    loop)."""
    return range(*query_blocks(j0, j1, L, block_q, *integer_band(band, L, j1)))


# BEGIN EXERCISE 9.1 (3 points): one tile of the flash attention forward pass
def forward_tile(q_blk, k_blk, v_blk, m, l, acc, scale, keep=None):
    """Fold one key/value tile into a query block's running state.

    The state of each query row is its running maximum ``m``, running sum ``l``
    of ``exp(score - m)`` and the *unnormalised* output ``acc = Σ exp(score - m)·v``.
    Compute the scores ``q_blk k_blkᵀ · scale``, hide those where ``keep`` is
    False with ``-inf``, update the maximum, rescale the old ``l`` and ``acc`` by
    ``exp(m_old - m_new)`` and add this tile's contribution. Do not divide by
    ``l``: that happens once, after the last tile. A row that has seen only
    masked scores keeps ``m = -inf``, ``l = 0``, ``acc = 0`` and must not give NaN.
    Masked means absent: NaN in a key or value a row may not see never reaches
    that row (mind ``0 · NaN = NaN`` in ``P v``), while NaN in what a row may see
    reaches it (never hide it with ``nan_to_num``).
    Return new arrays: the caller's ``m``, ``l`` and ``acc`` stay as they were.

    Shapes: ``q_blk`` (..., bq, E), ``k_blk`` (..., bk, E), ``v_blk`` (..., bk, Ev),
    ``m`` and ``l`` (..., bq), ``acc`` (..., bq, Ev), ``keep`` None or broadcastable
    to (..., bq, bk); the leading axes broadcast. Returns ``(m, l, acc)``.
    Dtype: the arrays share one dtype, ``scale`` is a Python float, and the
    results keep that dtype (float32 in, float32 out).
    """
    # BEGIN SOLUTION
    scores = q_blk @ np.swapaxes(k_blk, -1, -2)  # (..., bq, bk)
    scores *= scale  # in place: the tile is ours, no second (bq, bk) array
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)  # (..., bq, bk)
    m_new = np.maximum(m, scores.max(axis=-1))  # (..., bq)
    shift = np.where(np.isneginf(m_new), 0.0, m_new)  # (..., bq): finite, avoids -inf + inf
    alpha = np.exp(m - shift)  # (..., bq): rescales the old state, 0 when m was -inf
    scores -= shift[..., None]  # (..., bq, bk), in place
    p = np.exp(scores, out=scores)  # (..., bq, bk): unnormalised weights, in place
    l_new = alpha * l + p.sum(axis=-1)  # (..., bq)
    pv = p @ v_blk  # (..., bq, Ev)
    if keep is not None and np.isnan(v_blk).any():  # a masked p = 0 times a NaN value is NaN:
        bad = np.isnan(v_blk).astype(pv.dtype)  # (..., bk, Ev)
        seen = keep.astype(pv.dtype) @ bad  # (..., bq, Ev): how many NaN values each row may see
        pv = np.where(seen > 0, np.nan, p @ np.where(np.isnan(v_blk), 0.0, v_blk))  # (..., bq, Ev)
    acc_new = alpha[..., None] * acc + pv  # (..., bq, Ev)
    return m_new, l_new, acc_new
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 9.2 (2 points): normalise once, store the log-sum-exp
def finalize_rows(m, l, acc):
    """Turn a query block's final state into its output and natural log-sum-exp.

    ``out = acc / l`` and ``lse = m + log(l)``. A row that attended to nothing
    (``l == 0``) gets output 0 and log-sum-exp ``+inf``, with no NaN. A row whose
    state is NaN (it saw NaN) gives NaN output and log-sum-exp, not ``+inf``.

    Shapes: ``m``, ``l`` (..., bq); ``acc`` (..., bq, Ev); returns
    ``out`` (..., bq, Ev) and ``lse`` (..., bq). Dtype: the inputs share one
    dtype and the results keep it (float32 in, float32 out).
    """
    # BEGIN SOLUTION
    has_key = l != 0  # (..., bq): True on NaN rows too, whose NaN must show
    safe_l = np.where(has_key, l, 1.0)  # (..., bq)
    out = acc / safe_l[..., None]  # (..., bq, Ev): acc is 0 on empty rows
    lse = np.where(has_key, m + np.log(safe_l), np.inf)  # (..., bq)
    return out, lse
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 10.1 (1 point): the D term of the backward pass
def d_term(grad_out, out):
    """``D_i = Σ_v dO_iv · O_iv``, the row sums of ``grad_out ∘ out``.

    It equals ``Σ_j P_ij dP_ij`` (the term of the softmax backward pass) but costs
    O(Ev) per row instead of O(S), and needs no attention weights.

    Shapes: ``grad_out`` and ``out`` (..., L, Ev); returns (..., L). Dtype: the
    inputs share one dtype and the result keeps it (float32 in, float32 out).
    """
    # BEGIN SOLUTION
    return (grad_out * out).sum(axis=-1)  # (..., L)
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 10.2 (2 points): attention weights recomputed from the log-sum-exp
def recompute_probs(scores, lse, keep=None):
    """The attention weights of one tile, ``P = exp(scores - lse)``, from the stored log-sum-exp.

    ``scores`` are already scaled, and ``lse`` is the log-sum-exp of each *whole*
    row, so the weights of a tile need not sum to 1. Entries where ``keep`` is
    False get weight 0, whatever their score (a NaN or infinite score there must
    not reach the result). Rows with ``lse = +inf`` (nothing to attend to) get
    weight 0 everywhere; no NaN. A NaN score where ``keep`` is True gives NaN
    there: never hide it. Compute ``exp(scores - lse)`` in one piece: scores and
    log-sum-exps near 800 are ordinary, and ``exp(800)`` overflows.

    Shapes: ``scores`` (..., bq, bk), ``lse`` (..., bq), ``keep`` None or
    broadcastable to (..., bq, bk); returns (..., bq, bk). Dtype: ``scores`` and
    ``lse`` share one dtype and the result keeps it (float32 in, float32 out).
    """
    # BEGIN SOLUTION
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)  # (..., bq, bk)
    p = scores - lse[..., None]  # (..., bq, bk): a new array, the caller's scores stay as they are
    return np.exp(p, out=p)  # (..., bq, bk): in place on our own array; exp(-inf) = 0
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 10.3 (2 points): the gradient of the scores
def dscores(p, dp, d):
    """``dS = P ∘ (dP - D)``: the softmax backward pass with the precomputed ``D``.

    ``p`` and ``dp`` may be one tile of the rows; ``d`` holds each row's ``D``
    over the *whole* row (from :func:`d_term`), so it is not recomputed here.
    Masked means absent: where ``p`` is 0 the gradient is exactly 0, even when
    ``dp`` holds NaN there (the NaN value of a key the row may not see); NaN
    in ``p``, or in ``dp`` or ``d`` where ``p > 0``, reaches the result (never
    hide it).

    Shapes: ``p`` and ``dp`` (..., bq, bk); ``d`` (..., bq); returns (..., bq, bk).
    Dtype: the inputs share one dtype and the result keeps it (float32 in,
    float32 out).
    """
    # BEGIN SOLUTION
    # HINT: 0 * NaN is NaN: choose the 0 with np.where rather than multiply by it
    ds = dp - d[..., None]  # (..., bq, bk): a new array, dp stays as it was
    ds *= p  # (..., bq, bk), in place
    if np.isnan(ds.sum()):  # rare: a NaN somewhere, maybe 0 * NaN where p = 0 (one pass to know)
        ds = np.where(p == 0, 0, ds).astype(p.dtype, copy=False)  # (..., bq, bk)
    return ds
    # END SOLUTION


# END EXERCISE
