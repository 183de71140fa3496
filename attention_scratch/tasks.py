"""Synthetic tasks for the tiny transformer of chapter 15, generated in code.

``sort``: the model reads ``n`` digits, a separator, and must write the same
digits in increasing order::

    3 9 1 3 0 7 2 5 | 0 1 2 3 3 5 7 9

Every output token depends on the whole input, in an order that has nothing to
do with positions, so no fixed-window or purely positional rule solves it:
the model has to *look up* the next smallest digit, which is what attention does.

Held-out data: a sequence belongs to the held-out set when the CRC-32 of its
digits is divisible by 10 (about one in ten sequences). Training batches never
contain a held-out sequence, so "held-out accuracy" measures sequences the
model has never seen.
"""
import zlib

import numpy as np

from ._checks import check_positive_int

SEP = 10  # the separator token; digits are their own ids 0..9
VOCAB_SIZE = 11
IGNORE = -100  # target id of positions that carry no loss (the prompt)
TASKS = ("sort",)


def is_held_out(digits):
    """``True`` for the rows of ``digits`` that belong to the held-out set.

    Shapes
    ------
    ``digits`` (B, n) integers in 0..9 -> (B,) bool.
    """
    rows = np.asarray(digits, dtype=np.uint8)  # (B, n)
    return np.array([zlib.crc32(row.tobytes()) % 10 == 0 for row in rows], dtype=bool)


def sort_sequences(rng, batch, length=8, split="train"):
    """Draw ``batch`` sorting sequences ``digits, SEP, sorted digits`` from one split.

    Parameters
    ----------
    rng : numpy.random.Generator
    batch : int
    length : int
        ``n``, the number of digits to sort.
    split : {"train", "held_out"}

    Returns
    -------
    ndarray of int64, ``(batch, 2·length + 1)``.
    """
    batch, length = check_positive_int(batch, "batch"), check_positive_int(length, "length")
    if split not in ("train", "held_out"):
        raise ValueError(f"split must be 'train' or 'held_out'; got {split!r}")
    rows, have = [], 0
    while have < batch:
        digits = rng.integers(0, 10, size=(2 * batch,
                                           length))  # (2B, n): draw extra, keep one split
        held = is_held_out(digits)
        keep = digits[held if split == "held_out" else ~held]
        rows.append(keep)
        have += len(keep)
    digits = np.concatenate(rows)[:batch]  # (B, n)
    sep = np.full((batch, 1), SEP, dtype=np.int64)  # (B, 1)
    return np.concatenate([digits, sep, np.sort(digits, axis=1)],
                          axis=1).astype(np.int64)  # (B, 2n+1)


def inputs_and_targets(sequences, length):
    """Next-token prediction pairs: inputs ``seq[:, :-1]``, targets ``seq[:, 1:]``.

    Only the ``length`` sorted digits are targets; the prompt positions get
    :data:`IGNORE` so they carry no loss and do not count in the accuracy.

    Shapes
    ------
    ``sequences`` (B, 2n+1) -> inputs (B, 2n), targets (B, 2n).
    """
    inputs = sequences[:, :-1]  # (B, 2n)
    targets = sequences[:, 1:].copy()  # (B, 2n)
    targets[:, :length] = IGNORE  # positions 0..n-1 predict digits of the prompt or the SEP
    return inputs, targets


def make_batch(task, rng, batch, length=8, split="train"):
    """``(inputs, targets)`` for ``task`` (only ``"sort"``), see :func:`inputs_and_targets`."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}; got {task!r}")
    return inputs_and_targets(sort_sequences(rng, batch, length, split), length)
