"""The mma.m16n8k16 fragment layout of chapter 13
(backends/cuda/mma_layout.py), checked in NumPy."""
import numpy as np
import pytest

from attention_scratch.backends.cuda import mma_layout


@pytest.mark.parametrize("operand", ["a", "b", "c"])
def test_every_entry_is_held_by_exactly_one_lane_and_slot(operand):
    lane_of, slot_of = mma_layout.owner_map(operand)
    assert (lane_of >= 0).all() and (slot_of >= 0).all()
    pairs = set(zip(lane_of.ravel().tolist(), slot_of.ravel().tolist(), strict=True))
    assert len(pairs) == lane_of.size == 32 * mma_layout.SLOTS[operand]


def test_fragment_entries_follow_the_ptx_tables():
    # Spot checks read off the PTX ISA figures for m16n8k16 (f16 A, B; f32 C).
    assert mma_layout.fragment_entry("a", 0, 0) == (0, 0)
    assert mma_layout.fragment_entry("a", 5, 3) == (9, 3)     # g=1, t=1: a3 is (g+8, 2t+1)
    assert mma_layout.fragment_entry("a", 31, 7) == (15, 15)  # g=7, t=3: a7 is (g+8, 2t+9)
    assert mma_layout.fragment_entry("b", 6, 2) == (12, 1)    # g=1, t=2: b2 is (2t+8, g)
    assert mma_layout.fragment_entry("c", 30, 3) == (15, 5)   # g=7, t=2: c3 is (g+8, 2t+1)
    with pytest.raises(ValueError, match="operand"):
        mma_layout.fragment_entry("d", 0, 0)


def test_two_adjacent_accumulator_tiles_are_one_a_fragment():
    """The fact flash_fwd_mma.cu relies on: P = exp(S - m) computed in the accumulators of two
    adjacent 8-key tiles can be fed to the next MMA as the A operand without moving any value."""
    lane_a, slot_a = mma_layout.owner_map("a")
    lane_c, slot_c = mma_layout.owner_map("c")
    assert np.array_equal(lane_a[:, :8], lane_c) and np.array_equal(lane_a[:, 8:], lane_c)
    # slots: a0 a1 a2 a3 = c0 c1 c2 c3 of the first tile, a4 .. a7 = those of the second
    assert np.array_equal(slot_a[:, :8], slot_c) and np.array_equal(slot_a[:, 8:], slot_c + 4)


def test_fragments_round_trip_and_a_warp_mma_multiplies(rng):
    a = rng.standard_normal((16, 16)).astype(np.float16)
    b = rng.standard_normal((16, 8)).astype(np.float16)
    c = rng.standard_normal((16, 8)).astype(np.float32)
    for m, op in ((a, "a"), (b, "b"), (c, "c")):
        assert np.array_equal(mma_layout.from_fragments(mma_layout.to_fragments(m, op), op), m)
    d = mma_layout.warp_mma(*(mma_layout.to_fragments(m, op)
                              for m, op in ((a, "a"), (b, "b"), (c, "c"))))
    ref = c + a.astype(np.float32) @ b.astype(np.float32)
    np.testing.assert_allclose(mma_layout.from_fragments(d, "c"), ref, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        mma_layout.to_fragments(b, "a")

