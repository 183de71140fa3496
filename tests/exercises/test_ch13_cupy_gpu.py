"""Graded tests for chapter 13: thread-to-data mapping, shared-memory budget, the kernel's
online softmax step, and the shuffle butterfly. None needs a GPU."""
import numpy as np
import pytest

from attention_scratch.testing import assert_close, attention_oracle


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch13_cupy_gpu")


# Exercise 13.1 ------------------------------------------------------------------------------------


@pytest.mark.exercise("13.1")
def test_thread_slice_row_of_each_thread(ch):
    for D in (32, 64, 128, 256):
        tpr = D // 16
        for thread in (0, 1, tpr - 1, tpr, 5 * tpr + 1, 255):
            row, dims = ch.thread_slice(thread, D)
            assert row == thread // tpr, (f"D={D}: thread {thread} belongs to row {thread // tpr} "
                                          f"(rows have {tpr} threads each); got row {row}")
            assert len(dims) == 16, f"D={D}: every thread owns 16 dims; got {len(dims)}"


@pytest.mark.exercise("13.1")
def test_thread_slice_interleaves_the_dims(ch):
    for D in (32, 64, 128, 256):
        tpr = D // 16
        owned = [np.asarray(ch.thread_slice(3 * tpr + t, D)[1]) for t in range(tpr)]
        for t, dims in enumerate(owned):
            expected = np.arange(t, D, tpr)
            assert np.array_equal(dims, expected), (
                f"D={D}: thread {t} of a row group must own dims {t}, {t + tpr}, {t + 2 * tpr}, ... "
                f"(interleaved, stride TPR={tpr}); got {dims[:4].tolist()}...")
        assert np.array_equal(np.sort(np.concatenate(owned)), np.arange(D)), \
            f"D={D}: the threads of one row group must own every dim exactly once"


# Exercise 13.2 ------------------------------------------------------------------------------------


@pytest.mark.exercise("13.2")
def test_forward_smem_bytes_counts_both_padded_tiles(ch):
    for bk, D, acc in ((64, 64, 4), (32, 128, 4), (16, 256, 8), (1, 32, 8)):
        got = ch.forward_smem_bytes(bk, D, acc)
        want = 2 * bk * (D + 1) * acc
        assert got == want, (f"block_k={bk}, D={D}, {acc}-byte values: a K tile and a V tile of {bk} "
                             f"rows of D + 1 = {D + 1} values need {want} bytes; got {got}")


@pytest.mark.exercise("13.2")
def test_forward_smem_bytes_decides_the_largest_tile_that_fits(ch):
    # With 48 KiB, float32 and D = 128: 2 * bk * 129 * 4 <= 49152 allows bk = 47; halving from 64 gives 32.
    budget = 48 * 1024
    bk = 64
    while bk > 1 and ch.forward_smem_bytes(bk, 128, 4) > budget:
        bk //= 2
    assert bk == 32, f"the 48 KiB budget should admit a key tile of 32 rows at D=128 in float32; got {bk}"


# Exercise 13.3 ------------------------------------------------------------------------------------

LOG2E = 1.4426950408889634


def start(rows, ev):
    return np.full(rows, -np.inf), np.zeros(rows), np.zeros((rows, ev))


@pytest.mark.exercise("13.3")
def test_chunk_update_one_chunk_from_the_empty_state(ch, rng):
    s, v = rng.standard_normal((3, 16)) * 4, rng.standard_normal((16, 5))
    m, l, o = ch.chunk_update(*start(3, 5), s, v)
    assert_close(m, s.max(1), what="m after one chunk: the row max of the scores")
    p = np.exp2(s - s.max(1, keepdims=True))
    assert_close(l, p.sum(1), what="l after one chunk: the sum of 2^(s - m) (log2 units: exp2, not exp)")
    assert_close(o, p @ v, what="o after one chunk: unnormalised, sum of 2^(s - m) v")


@pytest.mark.exercise("13.3")
def test_chunk_update_over_chunks_gives_attention(ch, rng):
    q, k, v = rng.standard_normal((4, 8)), rng.standard_normal((48, 8)), rng.standard_normal((48, 3))
    k[20:] *= 3  # later chunks raise the maximum: the state must be rescaled
    s = q @ k.T / np.sqrt(8) * LOG2E  # (4, 48) in log2 units
    state = start(4, 3)
    for c0 in range(0, 48, 16):
        state = ch.chunk_update(*state, s[:, c0:c0 + 16], v[c0:c0 + 16])
    m, l, o = state
    ref, ref_lse, _ = (a[0] for a in attention_oracle(q[None], k[None], v[None]))  # one head
    assert_close(o / l[:, None], ref, what="o / l after three chunks (did you rescale by 2^(m_old - m_new)?)")
    assert_close((m + np.log2(l)) / LOG2E, ref_lse, what="(m + log2 l) / log2(e), the natural lse")


@pytest.mark.exercise("13.3")
def test_chunk_update_masked_rows_keep_their_state(ch, rng):
    s, v = rng.standard_normal((3, 16)), rng.standard_normal((16, 2))
    s[0] = -np.inf  # row 0: every key of this chunk is masked
    with np.errstate(all="raise"):  # no invalid operation (-inf - -inf) anywhere
        m, l, o = ch.chunk_update(*start(3, 2), s, v)
    assert np.isneginf(m[0]) and l[0] == 0 and np.all(o[0] == 0), \
        "a row whose chunk is fully masked must keep m = -inf, l = 0, o = 0"
    assert not np.isnan(o).any() and not np.isnan(l).any(), "NaN in the state"
    m2, l2, o2 = ch.chunk_update(m, l, o, np.full((3, 16), -np.inf), v)
    assert_close(l2, l, what="a fully masked chunk must leave l unchanged")
    assert_close(o2, o, what="a fully masked chunk must leave o unchanged")


# Exercise 13.4 ------------------------------------------------------------------------------------


@pytest.mark.exercise("13.4")
def test_butterfly_ends_with_the_total_on_every_lane(ch, rng):
    for tpr in (2, 4, 8, 16):
        x = rng.standard_normal((5, tpr))
        steps = ch.butterfly_steps(x)
        assert len(steps) == int(np.log2(tpr)), f"TPR={tpr} needs log2(TPR) = {int(np.log2(tpr))} steps"
        assert_close(steps[-1], np.repeat(x.sum(-1, keepdims=True), tpr, axis=-1),
                     rtol=1e-12, atol=1e-12, what=f"every lane's value after the last step, TPR={tpr}")


@pytest.mark.exercise("13.4")
def test_butterfly_each_step_reads_lane_xor_offset(ch, rng):
    x = rng.standard_normal((3, 8))
    lanes = np.arange(8)
    expected, cur = [], x
    for off in (4, 2, 1):
        cur = cur + cur[..., lanes ^ off]
        expected.append(cur)
    steps = ch.butterfly_steps(x)
    for n, (got, want, off) in enumerate(zip(steps, expected, (4, 2, 1))):
        assert_close(got, want, rtol=0, atol=0,
                     what=f"step {n + 1} (offset {off}): lane i adds lane i ^ {off}, not i + {off}")


# Exercise 13.5 ------------------------------------------------------------------------------------

# (operand, lane, entry) -> (row, col), read off the PTX ISA's figures for mma.m16n8k16
PTX_ENTRIES = {("a", 0, 0): (0, 0), ("a", 0, 1): (0, 1), ("a", 0, 2): (8, 0), ("a", 0, 4): (0, 8),
               ("a", 5, 3): (9, 3), ("a", 31, 7): (15, 15), ("a", 14, 6): (11, 12),
               ("b", 0, 0): (0, 0), ("b", 6, 2): (12, 1), ("b", 31, 1): (7, 7), ("b", 9, 3): (11, 2),
               ("c", 0, 0): (0, 0), ("c", 30, 3): (15, 5), ("c", 7, 2): (9, 6), ("c", 13, 1): (3, 3)}


@pytest.mark.exercise("13.5")
def test_fragment_entry_matches_the_ptx_tables(ch):
    for (operand, lane, i), want in PTX_ENTRIES.items():
        got = tuple(int(x) for x in ch.fragment_entry(operand, lane, i))
        assert got == want, (f"operand {operand!r}, lane {lane} (g={lane // 4}, t={lane % 4}), entry {i}: "
                             f"the PTX table puts it at (row, col) = {want}; got {got}. Entries a2, a3 "
                             f"are rows g + 8, a4, a5 the columns + 8")


@pytest.mark.exercise("13.5")
def test_fragment_entry_covers_every_entry_once_and_c_tiles_are_an_a_fragment(ch):
    for operand, (rows, cols), slots in (("a", (16, 16), 8), ("b", (16, 8), 4), ("c", (16, 8), 4)):
        held = [tuple(int(x) for x in ch.fragment_entry(operand, lane, i))
                for lane in range(32) for i in range(slots)]
        assert sorted(held) == [(r, c) for r in range(rows) for c in range(cols)], \
            f"operand {operand!r}: the 32 lanes x {slots} entries must hold each of the {rows}x{cols} entries once"
    for lane in range(32):  # a0..a3 = c0..c3 of keys 0-7, a4..a7 = c0..c3 of keys 8-15
        for i in range(4):
            r, c = ch.fragment_entry("c", lane, i)
            assert tuple(ch.fragment_entry("a", lane, i)) == (r, c)
            assert tuple(ch.fragment_entry("a", lane, i + 4)) == (r, c + 8), \
                f"lane {lane}: entry a{i + 4} must sit 8 columns right of a{i} (the second accumulator tile)"
    with pytest.raises(ValueError, match="operand"):
        ch.fragment_entry("d", 0, 0)
