"""The library's own ``score_mod`` and ``mask_mod`` functions (chapter 16).

A ``score_mod(score, b, h, q_idx, kv_idx) -> score`` edits each scaled score before the softmax;
a ``mask_mod(b, h, q_idx, kv_idx) -> bool`` says which pairs exist. Every function here is
written with NumPy operations that work both on the broadcastable index arrays the NumPy backend
passes (a whole tile at a time) and on the scalars the Numba backend passes (one pair at a time,
compiled with ``numba.njit``): the same source serves both.

The backward pass needs ``d score_mod / d score``. :class:`ScoreMod` carries it: the bias mods
(ALiBi, a relative-position bias) have derivative 1, tanh soft-capping
``c · tanh(s / c)`` has ``1 - tanh(s / c)^2``. Wrap a function of your own as
``ScoreMod(fn, derivative)`` to use it in :func:`attention_scratch.flex_attention_backward`.
"""
import numpy as np

from ._checks import check_nonnegative_int


class ScoreMod:
    """A ``score_mod`` together with its derivative with respect to the score.

    Parameters
    ----------
    fn : callable
        ``fn(score, b, h, q_idx, kv_idx) -> score``.
    derivative : callable or None
        ``derivative(score, b, h, q_idx, kv_idx) -> d fn / d score``, evaluated at the scaled
        score before the mod; ``None`` when unknown (the forward pass still works, the backward
        pass raises ``ValueError``).
    name : str
        Shown in messages.
    """

    def __init__(self, fn, derivative=None, name=None):
        if not callable(fn) or (derivative is not None and not callable(derivative)):
            raise TypeError("ScoreMod takes a function fn(score, b, h, q_idx, kv_idx) and "
                            "optionally its derivative with the same arguments")
        self.fn, self.derivative = fn, derivative
        self.name = name or getattr(fn, "__name__", "score_mod")

    def __call__(self, score, b, h, q_idx, kv_idx):
        return self.fn(score, b, h, q_idx, kv_idx)

    def __repr__(self):
        return f"ScoreMod({self.name})"


def _unit(score, b, h, q_idx, kv_idx):
    """d(score + bias)/d score = 1, shaped like the score (a scalar for a scalar)."""
    return score * 0.0 + 1.0


# BEGIN EXERCISE 16.3 (2 points): tanh soft-capping and its derivative
def soft_cap_scores(score, cap):
    """tanh soft-capping of attention scores, ``cap · tanh(score / cap)``, and its derivative.

    Gemma 2 caps its attention logits this way: every score ends up inside ``(-cap, cap)``,
    and small scores are almost unchanged. The backward pass needs the derivative of the
    capped score with respect to ``score``. Return both, as arrays of the shape and dtype of
    ``score`` (float32 in, float32 out), with no overflow however large the score.

    Shapes: ``score`` any shape; returns ``(capped, derivative)``, each shaped like ``score``.
    """
    # BEGIN SOLUTION
    t = np.tanh(score / cap)
    return cap * t, 1 - t * t
    # END SOLUTION


# END EXERCISE


def soft_cap(cap):
    """:func:`soft_cap_scores` as a :class:`ScoreMod`: ``cap · tanh(score / cap)`` with its
    derivative (the same expressions, written inside the two functions so that Numba compiles
    them)."""
    cap = float(cap)

    def capped(score, b, h, q_idx, kv_idx):
        return cap * np.tanh(score / cap)

    def capped_derivative(score, b, h, q_idx, kv_idx):
        t = np.tanh(score / cap)
        return 1.0 - t * t

    return ScoreMod(capped, capped_derivative, name=f"soft_cap({cap})")


def alibi(slopes, L, S):
    """ALiBi (Press et al., 2022) as a ``score_mod``: ``score - m_h · |i + S - L - j|``.

    The bias of :func:`attention_scratch.alibi_bias` (bottom-right aligned positions), one slope
    per query head; ``h`` indexes ``slopes``. Derivative 1.
    """
    slopes = np.ascontiguousarray(slopes, dtype=np.float64)
    if slopes.ndim != 1:
        raise ValueError(f"slopes must have shape (H,); got {slopes.shape}")
    shift = int(S) - int(L)

    def alibi_mod(score, b, h, q_idx, kv_idx):
        return score - slopes[h] * np.abs(q_idx + shift - kv_idx)

    return ScoreMod(alibi_mod, _unit, name="alibi")


def relative_bias(table, max_distance):
    """A learned relative-position bias (as in T5, without buckets): ``score + table[h, d]``
    with ``d = clip(kv_idx - q_idx, -max_distance, max_distance) + max_distance``.

    ``table`` is ``(H, 2·max_distance + 1)``. Derivative 1 (with respect to the score).
    """
    table = np.ascontiguousarray(table, dtype=np.float64)
    max_distance = check_nonnegative_int(max_distance, "max_distance")
    if table.ndim != 2 or table.shape[1] != 2 * max_distance + 1:
        raise ValueError(f"table must have shape (H, 2 * max_distance + 1) = (H, "
                         f"{2 * max_distance + 1}); got {table.shape}")

    def relative_mod(score, b, h, q_idx, kv_idx):
        d = np.minimum(np.maximum(kv_idx - q_idx, -max_distance), max_distance) + max_distance
        return score + table[h, d]

    return ScoreMod(relative_mod, _unit, name="relative_bias")


# Mask mods. Each returns a function (b, h, q_idx, kv_idx) -> bool.

def causal(L=None, S=None, align="top_left"):
    """Key ``j`` visible from query ``i`` when ``j <= i`` (top-left) or ``j <= i + S - L``
    (bottom-right; needs ``L`` and ``S``)."""
    if align not in ("top_left", "bottom_right"):
        raise ValueError(f"align must be 'top_left' or 'bottom_right'; got {align!r}")
    shift = 0 if align == "top_left" else int(S) - int(L)

    def causal_mod(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx + shift

    return causal_mod


def sliding_window(L, S, left, right=0):
    """The window of :func:`attention_scratch.flash_attention`:
    ``i' - left <= j <= i' + right`` with ``i' = i + S - L``."""
    shift, left, right = int(S) - int(L), int(left), int(right)

    def window_mod(b, h, q_idx, kv_idx):
        d = kv_idx - (q_idx + shift)
        return (d >= -left) & (d <= right)

    return window_mod


def padding(lengths):
    """Batch entry ``b`` has ``lengths[b]`` real keys: key ``j`` visible when ``j < lengths[b]``."""
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)

    def padding_mod(b, h, q_idx, kv_idx):
        return kv_idx < lengths[b]

    return padding_mod


# BEGIN EXERCISE 16.1 (2 points): the mask of packed documents
def document_keep(doc_ids, q_idx, kv_idx, is_causal=True):
    """May query ``q_idx`` attend key ``kv_idx`` when several documents are packed into one
    sequence?

    ``doc_ids[p]`` is the document of position ``p`` (queries and keys share the positions).
    A token attends only to tokens of its own document and, with ``is_causal``, only to those
    not after it. ``q_idx`` and ``kv_idx`` are broadcastable integer arrays (a column and a row
    of one tile, say); return the boolean array of their broadcast shape.

    Shapes: ``doc_ids`` (N,) ints; ``q_idx``, ``kv_idx`` broadcastable int arrays of positions
    in ``0 .. N-1``; returns their broadcast shape, bool.
    """
    # BEGIN SOLUTION
    same = doc_ids[q_idx] == doc_ids[kv_idx]
    return same & (kv_idx <= q_idx) if is_causal else same
    # END SOLUTION


# END EXERCISE


def document(doc_ids, is_causal=True):
    """:func:`document_keep` as a ``mask_mod(b, h, q_idx, kv_idx)`` for packed sequences (its
    expression written inside the function so that Numba compiles it)."""
    doc_ids = np.ascontiguousarray(doc_ids, dtype=np.int64)

    def document_mod(b, h, q_idx, kv_idx):
        same = doc_ids[q_idx] == doc_ids[kv_idx]
        return same & (kv_idx <= q_idx) if is_causal else same

    return document_mod


def prefix_lm(prefix_length):
    """Prefix-LM (the T5/UniLM pattern): the first ``prefix_length`` tokens see each other in both
    directions, the rest attend causally."""
    prefix_length = check_nonnegative_int(prefix_length, "prefix_length")

    def prefix_mod(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) | (kv_idx < prefix_length)

    return prefix_mod


def longformer(window, global_tokens):
    """Longformer (Beltagy et al., 2020): a symmetric window of ``window`` keys on each side,
    plus ``global_tokens`` (the first ones) that attend to and are attended by every token."""
    window, n_global = int(window), int(global_tokens)

    def longformer_mod(b, h, q_idx, kv_idx):
        near = np.abs(kv_idx - q_idx) <= window
        return near | (q_idx < n_global) | (kv_idx < n_global)

    return longformer_mod


def bigbird(window, global_tokens, random_blocks, block_size, n_blocks, rng):
    """BigBird (Zaheer et al., 2020): Longformer's window and global tokens plus, for every
    block of ``block_size`` queries, ``random_blocks`` key blocks drawn at random.

    ``n_blocks`` is the number of key blocks; ``rng`` a ``np.random.Generator``. The draw is
    stored in a ``(n_blocks, n_blocks)`` table of booleans the mask reads.
    """
    window, n_global, size = int(window), int(global_tokens), int(block_size)
    table = np.zeros((n_blocks, n_blocks), dtype=np.bool_)  # (query block, key block)
    for row in range(n_blocks):
        table[row, rng.choice(n_blocks, size=min(random_blocks, n_blocks), replace=False)] = True

    def bigbird_mod(b, h, q_idx, kv_idx):
        near = np.abs(kv_idx - q_idx) <= window
        chosen = table[q_idx // size, kv_idx // size]
        return near | (q_idx < n_global) | (kv_idx < n_global) | chosen

    return bigbird_mod
