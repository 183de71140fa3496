"""Block masks: which tiles of an attention problem a ``mask_mod`` leaves empty, full or cut
(chapter 16).

A ``mask_mod(b, h, q_idx, kv_idx) -> bool`` says which (query, key) pairs exist, True meaning
"may attend" (the polarity of the whole library and of PyTorch's FlexAttention, Dong et al.
2024). :func:`create_block_mask` evaluates it once, tile by tile, and records for every tile of
``BLOCK_SIZE`` queries by ``BLOCK_SIZE`` keys one of three kinds:

* ``SKIP``: no pair of the tile exists; the kernels never visit it;
* ``FULL``: every pair exists; the kernels visit it without asking ``mask_mod``;
* ``PARTIAL``: some pairs exist; the kernels call ``mask_mod`` on this tile only.

The functions are called with broadcastable integer index arrays, so a ``mask_mod`` written with
NumPy operations covers a whole row of tiles in one call: ``b`` of shape (B, 1, 1, 1), ``h``
(1, H, 1, 1), ``q_idx`` a column (bq, 1) and ``kv_idx`` a row (1, S). ``B`` or ``H`` given as
``None`` means the mask does not depend on it (one entry, broadcast over every batch or head).
"""
import dataclasses
from collections.abc import Callable

import numpy as np

from ._checks import check_nonnegative_int, check_positive_int

SKIP, PARTIAL, FULL = 0, 1, 2  # the kinds of tile, as stored in BlockMask.kinds
DEFAULT_BLOCK_SIZE = 64


@dataclasses.dataclass(frozen=True, eq=False)
class BlockMask:
    """Per tile: skipped, partial or full, with the ``mask_mod`` that decides the partial tiles.

    Attributes
    ----------
    kinds : ndarray of int8, ``(B, H, n_q_blocks, n_kv_blocks)``
        ``SKIP`` (0), ``PARTIAL`` (1) or ``FULL`` (2); ``B`` and ``H`` are 1 where the mask
        broadcasts.
    mask_mod : callable
        ``mask_mod(b, h, q_idx, kv_idx) -> bool``, asked on the partial tiles only.
    seq_lengths : (int, int)
        ``(Q_LEN, KV_LEN)``.
    block_size : (int, int)
        Queries and keys per tile.

    Shapes
    ------
    ``shape`` is ``(B, H, Q_LEN, KV_LEN)``, as in PyTorch's ``BlockMask.shape``.
    """

    kinds: np.ndarray
    mask_mod: Callable
    seq_lengths: tuple[int, int]
    block_size: tuple[int, int]

    @property
    def shape(self):
        """``(B, H, Q_LEN, KV_LEN)``."""
        return tuple(self.kinds.shape[:2]) + tuple(self.seq_lengths)

    def sparsity(self):
        """The percentage of the ``(B, H, Q_LEN, KV_LEN)`` grid in skipped tiles, as PyTorch
        reports it: ``100 · (1 - visited tiles · bq · bk / (B·H·Q_LEN·KV_LEN))``.

        Every visited tile counts ``bq · bk`` pairs, ragged last tiles too, so for lengths
        the block size does not divide the number is lower than the share of pairs skipped,
        and can be negative for short sequences (PyTorch's ``BlockMask.sparsity`` does the
        same).
        """
        visited = int(np.count_nonzero(self.kinds != SKIP))
        total = int(np.prod(self.shape, dtype=np.int64))
        if total == 0:
            return 0.0
        return 100.0 * (1.0 - visited * self.block_size[0] * self.block_size[1] / total)

    def to_dense(self):
        """``(B, H, n_q_blocks, n_kv_blocks)`` int32: 1 for a tile the kernels visit, 0 for a
        skipped one (PyTorch's ``BlockMask.to_dense``)."""
        return (self.kinds != SKIP).astype(np.int32)

    def mask(self):
        """The element mask the block mask stands for: ``(B, H, Q_LEN, KV_LEN)`` bool.

        Full tiles are True, skipped tiles False, partial tiles ``mask_mod``; the
        definition of what the kernels compute, for tests and figures (it forms the
        whole matrix).
        """
        B, H, L, S = self.shape
        bq, bk = self.block_size
        q_tile, kv_tile = np.arange(L) // bq, np.arange(S) // bk  # (L,), (S,)
        kinds = self.kinds[:, :, q_tile[:, None], kv_tile[None, :]]  # (B, H, L, S)
        b, h, q, kv = index_grids(B, H, np.arange(L), np.arange(S))
        inside = np.broadcast_to(np.asarray(self.mask_mod(b, h, q, kv), dtype=bool), kinds.shape)
        return (kinds == FULL) | ((kinds == PARTIAL) & inside)  # (B, H, L, S)

    def counts(self):
        """``{"skip": n, "partial": n, "full": n}``: how many tiles of each kind."""
        return {name: int(np.count_nonzero(self.kinds == kind))
                for name, kind in (("skip", SKIP), ("partial", PARTIAL), ("full", FULL))}

    def __str__(self):
        rows = [f"BlockMask(shape={self.shape}, block_size={self.block_size}, "
                f"sparsity={self.sparsity():.2f}%)"]
        glyph = {SKIP: ".", PARTIAL: "░", FULL: "█"}
        for row in self.kinds[0, 0][:32]:
            rows.append("".join(glyph[int(x)] for x in row[:64]))
        return "\n".join(rows)


def index_grids(B, H, q_idx, kv_idx):
    """The four broadcastable index arrays a ``mask_mod`` or ``score_mod`` is called with.

    Shapes
    ------
    ``b`` (B, 1, 1, 1), ``h`` (1, H, 1, 1), ``q_idx`` (bq, 1), ``kv_idx`` (1, bk), int64;
    together they broadcast to ``(B, H, bq, bk)``.
    """
    b = np.arange(B, dtype=np.int64).reshape(B, 1, 1, 1)  # (B, 1, 1, 1)
    h = np.arange(H, dtype=np.int64).reshape(1, H, 1, 1)  # (1, H, 1, 1)
    q = np.asarray(q_idx, dtype=np.int64).reshape(-1, 1)  # (bq, 1)
    kv = np.asarray(kv_idx, dtype=np.int64).reshape(1, -1)  # (1, bk)
    return b, h, q, kv


def evaluate_mask_mod(mask_mod, b, h, q, kv, shape):
    """``mask_mod(b, h, q, kv)`` as a bool array of ``shape``; a clear error if it is not one."""
    try:
        keep = np.asarray(mask_mod(b, h, q, kv))
    except Exception as error:  # a user's function: say where it failed and with what
        raise ValueError(f"mask_mod failed on index arrays b {b.shape}, h {h.shape}, q_idx "
                         f"{q.shape}, kv_idx {kv.shape} (write it with NumPy operations that "
                         f"broadcast): {type(error).__name__}: {error}") from error
    if keep.dtype != bool:
        raise TypeError(f"mask_mod must return booleans (True = may attend); got dtype "
                        f"{keep.dtype}")
    try:
        return np.broadcast_to(keep, shape)
    except ValueError:
        raise ValueError(f"mask_mod returned shape {keep.shape}, which does not broadcast to "
                         f"the tile's {shape}") from None


# BEGIN EXERCISE 16.2 (3 points): classifying the tiles of a mask
# uses: from attention_scratch.block_mask import FULL, PARTIAL, SKIP
def classify_tiles(keep, block_q, block_k):
    """The kind of every ``block_q`` x ``block_k`` tile of a boolean mask, as PyTorch counts them.

    ``keep`` is True where a query may attend a key. Tile ``(r, c)`` holds queries
    ``r·block_q ..`` and keys ``c·block_k ..``; it is ``SKIP`` when it keeps nothing, ``FULL``
    when it keeps all ``block_q · block_k`` pairs, ``PARTIAL`` otherwise. The last tiles of a
    length that ``block_q`` or ``block_k`` does not divide are shorter: count their missing pairs
    as not kept (PyTorch pads the mask with False), so such a tile is never ``FULL``.

    Shapes: ``keep`` (..., L, S) bool; returns (..., ceil(L/block_q), ceil(S/block_k)) int8
    holding ``SKIP`` (0), ``PARTIAL`` (1) or ``FULL`` (2). Any leading axes.
    """
    # BEGIN SOLUTION
    *lead, L, S = keep.shape
    n_q, n_k = -(-L // block_q), -(-S // block_k)
    padded = np.zeros((*lead, n_q * block_q, n_k * block_k), dtype=bool)
    padded[..., :L, :S] = keep
    tiles = padded.reshape((*lead, n_q, block_q, n_k, block_k))  # (..., nq, bq, nk, bk)
    count = tiles.sum(axis=(-3, -1))  # (..., nq, nk): pairs kept per tile
    kinds = np.where(count == block_q * block_k, FULL, PARTIAL)
    return np.where(count == 0, SKIP, kinds).astype(np.int8)
    # END SOLUTION


# END EXERCISE


def _batch_size(value, name):
    if value is None:
        return 1
    return check_positive_int(value, name)


def create_block_mask(mask_mod, B, H, Q_LEN, KV_LEN, BLOCK_SIZE=DEFAULT_BLOCK_SIZE):
    """Evaluate ``mask_mod`` tile by tile and record which tiles are skipped, partial or full.

    Parameters
    ----------
    mask_mod : callable
        ``mask_mod(b, h, q_idx, kv_idx) -> bool`` (True = may attend), called with the
        broadcastable integer arrays of :func:`index_grids`.
    B, H : int or None
        Batch size and number of query heads the mask depends on; ``None`` = broadcast (the
        mask is the same for every batch entry or head, and ``mask_mod`` sees index 0).
    Q_LEN, KV_LEN : int
        Query and key lengths.
    BLOCK_SIZE : int or (int, int)
        Queries and keys per tile (one int for both). The last tiles may be shorter.

    Returns
    -------
    BlockMask

    Shapes
    ------
    ``BlockMask.kinds`` is ``(B or 1, H or 1, ceil(Q_LEN/bq), ceil(KV_LEN/bk))``.
    """
    if not callable(mask_mod):
        raise TypeError(f"mask_mod must be a function (b, h, q_idx, kv_idx) -> bool; got "
                        f"{type(mask_mod).__name__}")
    n_b, n_h = _batch_size(B, "B"), _batch_size(H, "H")
    L, S = check_nonnegative_int(Q_LEN, "Q_LEN"), check_nonnegative_int(KV_LEN, "KV_LEN")
    if isinstance(BLOCK_SIZE, (tuple, list)):
        if len(BLOCK_SIZE) != 2:
            raise ValueError(f"BLOCK_SIZE must be an int or a pair (bq, bk); got {BLOCK_SIZE!r}")
        bq, bk = (check_positive_int(x, "BLOCK_SIZE") for x in BLOCK_SIZE)
    else:
        bq = bk = check_positive_int(BLOCK_SIZE, "BLOCK_SIZE")
    n_q, n_kv = -(-L // bq), -(-S // bk)
    kinds = np.empty((n_b, n_h, n_q, n_kv), dtype=np.int8)  # (B, H, nq, nk)
    for qb in range(n_q):  # one row of tiles at a time: (B, H, bq, S) booleans, not (L, S)
        i0, i1 = qb * bq, min(qb * bq + bq, L)
        b, h, q, kv = index_grids(n_b, n_h, np.arange(i0, i1), np.arange(S))
        keep = evaluate_mask_mod(mask_mod, b, h, q, kv, (n_b, n_h, i1 - i0, S))  # (B, H, bq, S)
        kinds[:, :, qb : qb + 1] = classify_tiles(keep, bq, bk)  # (B, H, 1, nk)
    return BlockMask(kinds=kinds, mask_mod=mask_mod, seq_lengths=(L, S), block_size=(bq, bk))


def full_block_mask(L, S, block_size=DEFAULT_BLOCK_SIZE):
    """The block mask of "no mask": every tile full (``mask_mod`` never called)."""
    bq, bk = block_size if isinstance(block_size, tuple) else (block_size, block_size)
    kinds = np.full((1, 1, -(-L // bq), -(-S // bk)), FULL, dtype=np.int8)
    return BlockMask(kinds=kinds, mask_mod=_everything, seq_lengths=(L, S), block_size=(bq, bk))


def _everything(b, h, q_idx, kv_idx):
    return np.ones(np.broadcast_shapes(np.shape(b), np.shape(h), np.shape(q_idx),
                                       np.shape(kv_idx)), dtype=bool)
