"""Graded tests for chapter 13: thread-to-data mapping, shared-memory budget, the kernel's
online softmax step, the shuffle butterfly and the mma fragment tables. None needs a GPU."""
import numpy as np
import pytest

from attention_scratch.course.checks import check_close, check_scalar, expect_array, expect_tuple
from attention_scratch.testing import attention_oracle, warnings_as_failures


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch13_cupy_gpu")


# Exercise 13.1 ------------------------------------------------------------------------------------


def slice_of(ch, thread, D):
    """The student's ``(row, dims)`` for one thread, with ``dims`` checked to be 16 integers."""
    row, dims = expect_tuple(ch.thread_slice(thread, D), 2, what=f"thread_slice({thread}, {D})")
    dims = expect_array(dims, shape=(16,), what=f"the dims of thread_slice({thread}, {D}) (16 head dims)")
    assert dims.dtype.kind in "iu", (f"the dims of thread_slice({thread}, {D}) must be integers (indices into "
                                     f"the head dim); got dtype {dims.dtype}")
    return row, dims


@pytest.mark.exercise("13.1")
@pytest.mark.parametrize("D", [32, 64, 128, 256])
def test_thread_slice_of_every_thread_of_a_block(ch, D):
    tpr = D // 16
    for group in range(256 // tpr):  # the 256 threads of the largest block, one row group at a time
        owned = []
        for t in range(tpr):
            thread = group * tpr + t
            row, dims = slice_of(ch, thread, D)
            check_scalar(row, group, what=f"D={D}: the row of thread {thread} (rows have TPR = D // 16 = {tpr} "
                         f"consecutive threads, so it is {thread} // {tpr})")
            owned.append(dims)
        held = np.sort(np.concatenate(owned))
        assert np.array_equal(held, np.arange(D)), (
            f"D={D}: the {tpr} threads of row group {group} must own every head dim 0..{D - 1} exactly once "
            f"between them; {D - len(np.unique(held))} dims are missing and "
            f"{len(held) - len(np.unique(held))} owned twice (do neighbouring threads' slices overlap?)")
        for t, dims in enumerate(owned):
            expected = np.arange(t, D, tpr)
            assert np.array_equal(dims, expected), (
                f"D={D}: thread {group * tpr + t} is thread t={t} of its row group and must own dims "
                f"{t}, {t + tpr}, {t + 2 * tpr}, ... (interleaved, stride TPR={tpr}); got "
                f"{dims[:4].tolist()}...")


# Exercise 13.2 ------------------------------------------------------------------------------------


@pytest.mark.exercise("13.2")
def test_forward_smem_bytes_counts_both_padded_tiles(ch):
    for bk in (1, 16, 32, 64, 128):
        for D in (32, 64, 128, 256):
            for acc in (4, 8):
                want = 2 * bk * (D + 1) * acc
                check_scalar(ch.forward_smem_bytes(bk, D, acc), want,
                             what=f"forward_smem_bytes(block_k={bk}, D={D}, acc_bytes={acc}): a K tile and a "
                             f"V tile, each {bk} rows of D + 1 = {D + 1} values of {acc} bytes, are "
                             f"2 x {bk} x {D + 1} x {acc} bytes (an int)")


@pytest.mark.exercise("13.2")
def test_forward_smem_bytes_decides_the_largest_tile_that_fits(ch):
    # The planner halves the key tile from 64 until the two tiles fit the budget.
    for budget_kib, D, acc, want in ((48, 128, 4, 32), (48, 64, 4, 64), (48, 256, 8, 8), (99, 256, 4, 32)):
        bk = 64
        while bk > 1 and ch.forward_smem_bytes(bk, D, acc) > budget_kib * 1024:
            bk //= 2
        assert bk == want, (f"with {budget_kib} KiB of shared memory, D={D} and {acc}-byte values, halving "
                            f"from 64 should stop at a key tile of {want} rows; got {bk}")


# Exercise 13.3 ------------------------------------------------------------------------------------

LOG2E = 1.4426950408889634
MASKED_HINT = ("a row whose maximum is still -inf must keep m = -inf, l = 0, o = 0 without computing "
               "-inf - (-inf) (shift such rows by 0 instead)")


def start(rows, ev, dtype=np.float64):
    return np.full(rows, -np.inf, dtype=dtype), np.zeros(rows, dtype=dtype), np.zeros((rows, ev), dtype=dtype)


def update(ch, m, l, o, s, v, what):
    """The student's new ``(m, l, o)``, checked to be three items."""
    return expect_tuple(ch.chunk_update(m, l, o, s, v), 3, what=f"chunk_update ({what})")


def state_of(s, v):
    """The state after all the keys of ``s`` (log2 units), in float64: (m, l, o) unnormalised."""
    s = s.astype(np.float64)
    m = s.max(axis=-1)  # (rows,)
    live = m > -np.inf
    p = np.exp2(s - np.where(live, m, 0.0)[:, None])  # (rows, keys)
    return m, p.sum(-1), p @ v.astype(np.float64)  # (rows,), (rows,), (rows, Ev)


def check_state(got, ref, dtype, what):
    for name, g, r in zip(("m (running max)", "l (running sum of 2^(s - m))", "o (unnormalised output, "
                           "sum of 2^(s - m) v)"), got, ref):
        check_close(g, r.astype(dtype), what=f"{name} {what}")


@pytest.mark.exercise("13.3")
def test_chunk_update_one_chunk_from_the_empty_state(ch, rng):
    s, v = rng.standard_normal((3, 16)) * 4, rng.standard_normal((16, 5))
    got = update(ch, *start(3, 5), s, v, "one chunk from the empty state")
    check_state(got, state_of(s, v), np.float64, "after one chunk from the empty state (log2 units: exp2, not exp)")


@pytest.mark.exercise("13.3")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_chunk_update_state_after_every_chunk(ch, rng, dtype):
    rows, S, ev = 4, 53, 3  # chunks of 16, 16, 16 and a ragged 5
    q, k, v = rng.standard_normal((rows, 8)), rng.standard_normal((S, 8)), rng.standard_normal((S, ev))
    k[20:36] *= 3  # the second and third chunks raise the maximum: the state must be rescaled ...
    k[36:] *= 0.2  # ... and the last ones do not: the old maximum stays (alpha = 1)
    s = (q @ k.T / np.sqrt(8) * LOG2E).astype(dtype)  # (rows, S) in log2 units
    v = v.astype(dtype)
    state = start(rows, ev, dtype)
    for c0 in range(0, S, 16):
        c1 = min(c0 + 16, S)
        state = update(ch, *state, s[:, c0:c1], v[c0:c1], f"keys {c0}..{c1 - 1}")
        check_state(state, state_of(s[:, :c1], v[:c1]), dtype,
                    f"after keys 0..{c1 - 1} in chunks of 16, {np.dtype(dtype).name} (the state keeps the dtype; "
                    "rescale the old l and o by 2^(m_old - m_new) whenever the maximum moves)")
    m, l, o = state
    ref, ref_lse, _ = (a[0] for a in attention_oracle(q[None], k[None], v[None].astype(np.float64)))
    check_close(o / l[:, None], ref.astype(dtype), what="o / l after every chunk: attention over all keys")
    check_close((m + np.log2(l)) / dtype(LOG2E), ref_lse.astype(dtype),
                what="(m + log2 l) / log2(e) after every chunk: the natural log-sum-exp")


@pytest.mark.exercise("13.3")
def test_chunk_update_masked_scores_and_rows(ch, rng):
    rows, ev = 4, 2
    s, v = rng.standard_normal((rows, 16)), rng.standard_normal((16, ev))
    s[0] = -np.inf  # row 0: every key of the chunk is masked
    s[1, ::2] = -np.inf  # row 1: half of them
    s[3, 5:] = -np.inf  # row 3: all but five
    with warnings_as_failures(MASKED_HINT):
        state = update(ch, *start(rows, ev), s, v, "a chunk with masked scores")
    m, l, o = state
    assert np.isneginf(m[0]) and l[0] == 0 and np.all(o[0] == 0), \
        f"{MASKED_HINT}; got m = {m[0]!r}, l = {l[0]!r}, o = {o[0]!r}"
    check_state(state, state_of(s, v), np.float64, "after a chunk whose masked scores (-inf) get weight 0")
    gone = np.full((rows, 16), -np.inf)  # a chunk masked for every row
    with warnings_as_failures(MASKED_HINT):
        after = update(ch, m, l, o, gone, v, "a fully masked chunk")
    check_state(after, state_of(s, v), np.float64, "after a fully masked chunk (it must change nothing, "
                "on rows that have seen keys and on row 0 that has not)")


@pytest.mark.exercise("13.3")
def test_chunk_update_lets_a_nan_score_reach_its_row(ch, rng):
    rows, ev = 3, 2
    s, v = rng.standard_normal((rows, 16)), rng.standard_normal((16, ev))
    s[0, 8:] = -np.inf
    bad = s.copy()
    bad[1, 3] = np.nan  # row 1 sees a NaN score
    m, l, o = update(ch, *start(rows, ev), bad, v, "a chunk with a NaN score in row 1")
    for name, got in (("l", l), ("o", o)):
        expect_array(got, what=f"{name} after a chunk with a NaN score")
    if not (np.isnan(l[1]) and np.isnan(o[1]).all()):
        raise AssertionError(
            f"chunk_update: row 1 sees a NaN score, so its l and o must be NaN; got l = {l[1]!r}, o = {o[1]}. "
            "A NaN is a bug upstream and must show: max(m, NaN) is NaN, and NaN > -inf is False, so a row "
            "chosen by mx > -inf silently keeps its old state. Tell the rows that have seen nothing by "
            "mx == -inf, and never use nan_to_num.")
    keep = [0, 2]
    check_state(tuple(a[keep] for a in (m, l, o)), tuple(a[keep] for a in state_of(s, v)), np.float64,
                "of rows 0 and 2, which hold no NaN")


# Exercise 13.4 ------------------------------------------------------------------------------------


def shuffle_steps(x):
    """The expected values after each step: all lanes read lane ^ off of the previous step at once."""
    lanes, out, off = np.arange(x.shape[-1]), [], x.shape[-1] // 2
    while off:
        x = x + x[..., lanes ^ off]
        out.append(x)
        off //= 2
    return out


@pytest.mark.exercise("13.4")
@pytest.mark.parametrize("tpr", [2, 4, 8, 16])
def test_butterfly_every_step_on_every_lane(ch, rng, tpr):
    for shape, dtype in (((tpr,), np.float64), ((5, tpr), np.float64), ((2, 3, tpr), np.float32)):
        x = rng.standard_normal(shape).astype(dtype)
        expected = shuffle_steps(x)
        steps = expect_tuple(ch.butterfly_steps(x), len(expected),
                             what=f"butterfly_steps of partials {shape} (TPR={tpr} needs log2(TPR) = "
                             f"{len(expected)} steps, one array after each)")
        for n, (got, want) in enumerate(zip(steps, expected)):
            off = tpr >> (n + 1)
            check_close(got, want, rtol=0, atol=0,
                        what=f"step {n + 1} of {len(expected)} (offset {off}), partials {shape} {np.dtype(dtype).name}: "
                        f"every lane i adds the value lane i ^ {off} held before this step (all lanes at once, "
                        f"offsets TPR/2 down to 1)")
        check_close(steps[-1], np.repeat(x.sum(-1, keepdims=True), tpr, axis=-1), rtol=1e-6, atol=1e-6,
                    what=f"every lane's value after the last step, TPR={tpr}: the sum of all partials")


# Exercise 13.5 ------------------------------------------------------------------------------------

# Entry i of lane (g, t) = (lane // 4, lane % 4) sits at row base + dr, column base + dc, read off the
# PTX ISA's figures for mma.m16n8k16 (floating point): A and C rows from g, columns from 2t; B rows
# from 2t, columns from g.
A_OFFSETS = [(0, 0), (0, 1), (8, 0), (8, 1), (0, 8), (0, 9), (8, 8), (8, 9)]  # a0..a7
B_OFFSETS = [(0, 0), (1, 0), (8, 0), (9, 0)]  # b0..b3
C_OFFSETS = [(0, 0), (0, 1), (8, 0), (8, 1)]  # c0..c3
PTX = {"a": ((16, 16), A_OFFSETS, lambda g, t: (g, 2 * t)),
       "b": ((16, 8), B_OFFSETS, lambda g, t: (2 * t, g)),
       "c": ((16, 8), C_OFFSETS, lambda g, t: (g, 2 * t))}


def entry_of(ch, operand, lane, i):
    got = expect_tuple(ch.fragment_entry(operand, lane, i), 2, what=f"fragment_entry({operand!r}, {lane}, {i})")
    for x in got:
        if not isinstance(x, (int, np.integer)) or isinstance(x, bool):
            raise AssertionError(f"fragment_entry({operand!r}, {lane}, {i}) must return two ints (row, col); "
                                 f"got {got!r}")
    return int(got[0]), int(got[1])


@pytest.mark.exercise("13.5")
@pytest.mark.parametrize("operand", ["a", "b", "c"])
def test_fragment_entry_matches_the_ptx_tables_for_every_lane_and_entry(ch, operand):
    (rows, cols), offsets, base = PTX[operand]
    for lane in range(32):
        g, t = divmod(lane, 4)
        for i, (dr, dc) in enumerate(offsets):
            want = (base(g, t)[0] + dr, base(g, t)[1] + dc)
            got = entry_of(ch, operand, lane, i)
            assert got == want, (
                f"operand {operand!r} ({rows}x{cols}), lane {lane} (g = lane // 4 = {g}, t = lane % 4 = {t}), "
                f"entry {i}: the PTX table puts it at (row, col) = {want}; got {got}. "
                + {"a": "A: rows g (a0, a1, a4, a5) and g + 8 (a2, a3, a6, a7), columns 2t, 2t + 1, and + 8 "
                        "for a4..a7",
                   "b": "B: rows 2t, 2t + 1 (b0, b1) and + 8 (b2, b3), column g",
                   "c": "C: rows g (c0, c1) and g + 8 (c2, c3), columns 2t, 2t + 1"}[operand])


@pytest.mark.exercise("13.5")
def test_fragment_entry_c_tiles_are_an_a_fragment_and_other_operands_fail(ch):
    for lane in range(32):  # a0..a3 = c0..c3 of keys 0-7, a4..a7 = c0..c3 of keys 8-15
        for i in range(4):
            r, c = entry_of(ch, "c", lane, i)
            assert entry_of(ch, "a", lane, i) == (r, c), \
                f"lane {lane}: entry a{i} must sit where c{i} does, {(r, c)} (the first accumulator tile)"
            assert entry_of(ch, "a", lane, i + 4) == (r, c + 8), \
                f"lane {lane}: entry a{i + 4} must sit 8 columns right of c{i}, at {(r, c + 8)}"
    for operand in ("d", "ab", "", "A", "B", "C"):  # only the lower-case names of the docstring
        try:
            got = ch.fragment_entry(operand, 0, 0)
        except ValueError:
            continue
        except NotImplementedError:
            raise
        except Exception as error:  # noqa: BLE001 - reported to the student as it is
            raise AssertionError(f"fragment_entry({operand!r}, 0, 0) must raise ValueError (the operand is not "
                                 f"'a', 'b' or 'c'); it raised {type(error).__name__}: {error}") from None
        raise AssertionError(f"fragment_entry({operand!r}, 0, 0) must raise ValueError (the operand is not "
                             f"'a', 'b' or 'c'); it returned {got!r}")
