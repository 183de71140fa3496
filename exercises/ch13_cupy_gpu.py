"""Chapter 13 exercises: A CuPy GPU kernel.

Replace each `raise NotImplementedError(...)` with your code, then grade:

    make grade CHAPTER=13
    python -m attention_scratch.grade --chapter 13

This file was written by `make exercises` from the library; your edits are
never overwritten. The answers are in solutions/ and in the book.
"""


import numpy as np


# Exercise 13.1 (2 points): which row and which head dims a thread owns
def thread_slice(thread, D):
    """The query row (within the tile) and the head dims that CUDA thread ``thread`` owns.

    Rows get ``TPR = D // 16`` consecutive threads; thread ``t = thread % TPR`` of
    a row group owns dims ``t, t + TPR, t + 2·TPR, …`` below ``D`` (an interleaved
    split: the threads of a group read neighbouring shared-memory words).
    Return ``(row, dims)`` with ``dims`` a NumPy int array of length 16.
    """
    raise NotImplementedError("Exercise 13.1: which row and which head dims a thread owns")


# Exercise 13.2 (2 points): the shared-memory budget of the forward tile
def forward_smem_bytes(block_k, D, acc_bytes):
    """Bytes of shared memory the scalar forward kernel needs: K and V tiles of ``block_k`` rows.

    Each tile row holds ``D + 1`` accumulation-type values (the head dim padded by
    one to spread the rows over the 32 shared-memory banks), ``acc_bytes`` each.
    Returns an ``int``.
    """
    raise NotImplementedError("Exercise 13.2: the shared-memory budget of the forward tile")


# Exercise 13.3 (3 points): the kernel's online softmax step for one chunk of keys
def chunk_update(m, l, o, s, v):
    """Fold one chunk of scores into the running state, exactly as ``flash_fwd_scalar`` does.

    ``s`` are scores already in log2 units (``q·k · scale · log2 e``), ``-inf``
    where masked. With ``mx = max(m, max_j s_j)``: rows where ``mx`` is still
    ``-inf`` keep their state unchanged; otherwise ``alpha = 2^(m - mx)``,
    ``l ← alpha·l + Σ_j 2^(s_j - mx)`` and ``o ← alpha·o + Σ_j 2^(s_j - mx) v_j``,
    and ``m ← mx``. No NaN, no warnings. But a NaN score makes its row's state
    NaN: never hide it (``NaN > -inf`` is False, so a test of that kind keeps the
    old state; test ``mx == -inf`` for the rows that have seen nothing).

    The state keeps the dtype of its inputs (float32 stays float32), and the
    arrays passed in are not changed: return new ones.

    Shapes: ``m``, ``l`` (rows,); ``o`` (rows, Ev); ``s`` (rows, KC); ``v`` (KC, Ev).
    Returns ``(m, l, o)``.
    """
    raise NotImplementedError("Exercise 13.3: the kernel's online softmax step for one chunk of keys")


# Exercise 13.4 (2 points): a butterfly of warp shuffles
def butterfly_steps(partials):
    """Simulate ``group_sum``: the values each lane of a row group holds after every shuffle step.

    ``partials[..., lane]`` is lane ``lane``'s partial sum; ``TPR = partials.shape[-1]``
    is a power of two. For ``off = TPR/2, TPR/4, …, 1`` every lane adds the value of
    lane ``lane ^ off`` (``__shfl_xor_sync``), all lanes at once. Return the list of
    arrays after each step (``log2(TPR)`` of them, each of the shape and dtype of
    ``partials``); after the last, every lane holds the sum.
    """
    raise NotImplementedError("Exercise 13.4: a butterfly of warp shuffles")


# Exercise 13.5 (2 points): which entry a lane holds in mma.m16n8k16
def fragment_entry(operand, lane, i):
    """``(row, col)`` of entry ``i`` of ``lane``'s fragment of ``operand`` ("a", "b" or "c").

    With ``g = lane // 4`` and ``t = lane % 4`` (the tables of the PTX ISA, chapter 13):
    A (16x16, entries 0-7): row ``g`` for i in 0, 1, 4, 5 and ``g + 8`` otherwise, column
    ``2t + i % 2``, plus 8 for i >= 4; B (16x8, entries 0-3): row ``2t + i % 2``, plus 8 for
    i >= 2, column ``g``; C (16x8, entries 0-3): row ``g``, plus 8 for i >= 2, column
    ``2t + i % 2``. Return the two ints ``(row, col)``; raise ``ValueError`` for any
    other operand.
    """
    raise NotImplementedError("Exercise 13.5: which entry a lane holds in mma.m16n8k16")
