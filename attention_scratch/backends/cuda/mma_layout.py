"""Which lane of a warp holds which matrix entry in ``mma.m16n8k16`` (chapter 13), in NumPy.

``flash_fwd_mma.cu`` multiplies with the PTX instruction
``mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32``: the 32 lanes of a warp
together hold A (16x16), B (16x8) and the float32 accumulator C (16x8), each lane
a few entries in its registers, laid out as the PTX ISA's section "Matrix
Fragments for mma.m16n8k16 with floating point type" prescribes. With
``g = lane // 4`` and ``t = lane % 4``, entry ``i`` of a lane's fragment is

* A: row ``g + 8`` if ``i`` is 2, 3, 6 or 7 else ``g``; column ``2t + i % 2 + 8 * (i >= 4)``;
* B: row ``2t + i % 2 + 8 * (i >= 2)``; column ``g``;
* C: row ``g + 8 * (i >= 2)``; column ``2t + i % 2``.

The functions below build those maps, split matrices into per-lane fragments and
multiply fragments the way one warp instruction does, so the layout the kernel
relies on (in particular: two adjacent C tiles *are* an A fragment) can be
executed and checked without a GPU.
"""
import numpy as np

SHAPES = {"a": (16, 16), "b": (16, 8), "c": (16, 8)}
# entries per lane: 4, 2, 4 registers of two 16-bit values / one float
SLOTS = {"a": 8, "b": 4, "c": 4}


# BEGIN EXERCISE 13.5 (2 points): which entry a lane holds in mma.m16n8k16
def fragment_entry(operand, lane, i):
    """``(row, col)`` of entry ``i`` of ``lane``'s fragment of ``operand`` ("a", "b" or "c").

    With ``g = lane // 4`` and ``t = lane % 4`` (the tables of the PTX ISA, chapter 13):
    A (16x16, entries 0-7): row ``g`` for i in 0, 1, 4, 5 and ``g + 8`` otherwise, column
    ``2t + i % 2``, plus 8 for i >= 4; B (16x8, entries 0-3): row ``2t + i % 2``, plus 8 for
    i >= 2, column ``g``; C (16x8, entries 0-3): row ``g``, plus 8 for i >= 2, column
    ``2t + i % 2``. Return the two ints ``(row, col)``; raise ``ValueError`` for any
    other operand.
    """
    # BEGIN SOLUTION
    g, t = divmod(lane, 4)
    if operand == "a":
        return g + 8 * (i in (2, 3, 6, 7)), 2 * t + i % 2 + 8 * (i >= 4)
    if operand == "b":
        return 2 * t + i % 2 + 8 * (i >= 2), g
    if operand == "c":
        return g + 8 * (i >= 2), 2 * t + i % 2
    raise ValueError(f"operand must be 'a', 'b' or 'c'; got {operand!r}")
    # END SOLUTION


# END EXERCISE


def owner_map(operand):
    """``(lane, slot)``: two int arrays shaped like the operand,
    the lane holding each entry and its index there."""
    lane_of = np.full(SHAPES[operand], -1)
    slot_of = np.full(SHAPES[operand], -1)
    for lane in range(32):
        for i in range(SLOTS[operand]):
            r, c = fragment_entry(operand, lane, i)
            lane_of[r, c], slot_of[r, c] = lane, i
    return lane_of, slot_of


def to_fragments(matrix, operand):
    """The per-lane fragments of ``matrix``:
    shape (32, slots), row ``lane`` = that lane's registers in order."""
    matrix = np.asarray(matrix)
    if matrix.shape != SHAPES[operand]:
        raise ValueError(f"operand {operand!r} is {SHAPES[operand]}; got shape {matrix.shape}")
    lane_of, slot_of = owner_map(operand)
    frags = np.empty((32, SLOTS[operand]), dtype=matrix.dtype)
    frags[lane_of, slot_of] = matrix  # every entry is held by exactly one (lane, slot)
    return frags


def from_fragments(frags, operand):
    """Inverse of :func:`to_fragments`: the matrix the 32 lanes' fragments hold."""
    lane_of, slot_of = owner_map(operand)
    return np.asarray(frags)[lane_of, slot_of]


def warp_mma(a_frags, b_frags, c_frags):
    """What one ``mma.m16n8k16`` leaves in each lane: the fragments of ``C + A B`` (float32)."""
    a = from_fragments(a_frags, "a").astype(np.float32)  # (16, 16)
    b = from_fragments(b_frags, "b").astype(np.float32)  # (16, 8)
    c = from_fragments(c_frags, "c").astype(np.float32)  # (16, 8)
    return to_fragments(c + a @ b, "c")
