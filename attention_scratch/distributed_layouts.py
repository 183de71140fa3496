"""Where each rank's shard lies in the sequence, and which tiles a rank computes (chapter 11).

Shard layouts (``layout=``), for a sequence of ``N = R·n`` positions on ``R`` ranks:

* ``"contiguous"``: rank ``r`` holds positions ``r·n … r·n + n - 1``.
* ``"zigzag"``: the sequence is cut into ``2P`` chunks of ``n/2``; rank ``r`` holds
  chunks ``r`` and ``2P - 1 - r`` (the layout of Llama 3's context parallelism).
* ``"striped"``: rank ``r`` holds positions ``r, r + R, r + 2R, …`` (Striped Attention).

Under a causal mask the layout decides how evenly the work is spread; without one it
changes nothing. :mod:`attention_scratch.distributed` re-exports these names.
"""
import numpy as np

LAYOUTS = ("contiguous", "zigzag", "striped")


def check_layout(layout):
    """``layout`` if it is one of :data:`LAYOUTS`, else ``ValueError``."""
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}")
    return layout


def shard_positions(length, world_size, layout="contiguous"):
    """The sequence positions held by each rank: row ``r`` lists rank ``r``'s positions in order.

    ``x[..., shard_positions(N, R, layout)[r], :]`` is rank ``r``'s shard of a sequence ``x``.
    ``length`` must be a multiple of ``world_size`` (of ``2·world_size`` for ``"zigzag"``).

    Shapes
    ------
    returns an integer array ``(R, N/R)``.
    """
    check_layout(layout)
    for name, value, least in (("length", length, 0), ("world_size", world_size, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{name} must be an int >= {least}; got {value!r}")
    pieces = 2 * world_size if layout == "zigzag" else world_size
    if length % pieces:
        raise ValueError(f"length {length} must be a multiple of {pieces} "
                         f"for the {layout} layout on world_size={world_size} ranks")
    positions = np.arange(length)  # (N,)
    if layout == "contiguous":
        return positions.reshape(world_size, -1)  # (R, n)
    if layout == "striped":
        return positions.reshape(-1, world_size).T.copy()  # (n, R) -> (R, n)
    chunks = positions.reshape(pieces, -1)  # (2P, n/2)
    return np.concatenate([chunks[:world_size], chunks[::-1][:world_size]], axis=1)  # (R, n)


def ring_tiles(rank, source, world_size, shard_len, is_causal=False, layout="contiguous"):
    """The attention calls rank ``rank`` makes on the key/value shard of rank ``source``.

    A list of ``(query_rows, key_rows, causal)``: attend ``query[..., query_rows, :]`` to
    ``key[..., key_rows, :]`` with a top-left causal mask when ``causal``; query rows not
    listed see nothing of that shard. Empty when the shard is entirely in the future.
    With ``source == rank`` it is always the one call ``(all, all, is_causal)``.
    """
    everything = slice(None)
    if not is_causal or source == rank:
        return [(everything, everything, is_causal)]  # step 0: flash_attention checks is_causal
    if layout == "contiguous":  # a whole shard in the past, or in the future
        return [(everything, everything, False)] if source < rank else []
    # query i*R + rank sees key j*R + source iff j <= i (source < rank), j < i (>)
    if layout == "striped":
        if source < rank:
            return [(everything, everything, True)]
        return [(slice(1, None), slice(None, shard_len - 1), True)] if shard_len > 1 else []
    half = shard_len // 2  # zigzag: chunks (rank, 2P-1-rank) against chunks (source, 2P-1-source)
    mine, theirs = (rank, 2 * world_size - 1 - rank), (source, 2 * world_size - 1 - source)
    return [(slice(a * half, (a + 1) * half), slice(b * half, (b + 1) * half), False)
            for a in range(2) for b in range(2) if theirs[b]
            < mine[a]]  # never equal: source != rank
