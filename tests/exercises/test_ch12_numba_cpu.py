"""Graded tests for chapter 12: a vectorised exponential, the parallel tile loop, the dQ pass.

The exercise functions are plain Python; the tests have the student's process
compile them with Numba as the library does (harness_ch12.py, a few seconds per
exercise) and judge the arrays and facts it sends back.
"""
import numpy as np
import pytest

from attention_scratch.backends import unavailable_reason
from attention_scratch.course.checks import check_close, expect_array
from attention_scratch.testing import attention_oracle, attention_oracle_backward

if unavailable_reason("numba") is not None:
    pytest.skip(unavailable_reason("numba"), allow_module_level=True)

from attention_scratch.backends.numba.tiles import key_blocks  # noqa: E402
from attention_scratch.bands import integer_band, mask_band  # noqa: E402

HARNESS = "tests/exercises/harness_ch12.py"


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch12_numba_cpu")


# Exercise 12.1 -----------------------------------------------------------------------------------

XMIN, XMAX = -125 * np.log(2.0), 128 * np.log(2.0)  # the ends of the range where e^x is computed


@pytest.mark.exercise("12.1")
def test_exp_is_accurate_over_the_whole_float32_range(ch):
    x = np.linspace(XMIN + 1e-3, XMAX - 1e-3, 400_001).astype(np.float32)  # n = -125 .. 128
    got = expect_array(ch.harness(f"{HARNESS}:exp_values", ch.exp_f32, x), shape=x.shape, dtype=np.float32,
                       what="exp_f32 over the float32 range")
    ref = np.exp(x.astype(np.float64))
    signed = (got.astype(np.float64) - ref) / ref
    rel = np.abs(signed)
    worst = int(np.nanargmax(np.where(np.isnan(rel), np.inf, rel)))
    eps = np.finfo(np.float32).eps
    assert rel[worst] <= 2 * eps, (
        f"relative error {rel[worst]:.3g} ({rel[worst] / eps:.1f} eps) at x = {x[worst]!r}: got "
        f"{got[worst]!r}, expected {ref[worst]:.9g}. Check the range reduction (r = x - n ln2 with "
        f"|r| <= ln2/2, ln2 split in ln2_hi + ln2_lo), the polynomial (degree 7) and 2^n as "
        f"pow2_f32(n - 1) * 2 (2^128 itself is not a float32).")
    # Rounding errs either way and averages out; a polynomial of too low a degree errs one way, by its first
    # omitted term. Near the ends of the reduced range, |r| > 0.3, degree 7 (Horner or Estrin, with or without
    # fused multiply-adds) averages within 0.04 eps; degree 6 leaves r^7/7!, on average -0.5 eps where r > 0.3
    # and +0.85 eps where r < -0.3.
    xd = x.astype(np.float64)
    r = xd - np.floor(xd / np.log(2.0) + 0.5) * np.log(2.0)  # (n,): the reduced argument, in float64
    for side, where in (("r > 0.3", r > 0.3), ("r < -0.3", r < -0.3)):
        bias = float(signed[where].mean()) / eps
        assert abs(bias) <= 0.25, (
            f"where the reduced argument is {side}, the relative error of exp_f32 averages {bias:+.2f} eps: "
            "not rounding, which averages out, but a systematic error, the first term the polynomial leaves "
            "out. Use the Taylor polynomial of degree 7 (1/7! = 1/5040 is the last coefficient); degree 6 "
            "leaves r^7/7!, which is more than rounding near |r| = ln2/2.")


@pytest.mark.exercise("12.1")
def test_exp_special_values(ch):
    cases = [(-np.inf, 0.0, "-inf (a masked score) gives exactly 0"),
             (-1000.0, 0.0, "x < XMIN gives 0"), (-100.0, 0.0, "x < XMIN gives 0"),
             (XMIN - 0.01, 0.0, "x < XMIN = -125 ln2 gives 0"),
             (-86.64339, np.exp(np.float64(np.float32(-86.64339))),
              "x = float32(-86.64339), the clamp's own lower end, lies just inside [XMIN, XMAX]: e^x = 2.35e-38, "
              "not 0 (only x < XMIN gives 0, so compare with <, not <=)"),
             (-0.0, 1.0, "e^0 = 1"), (0.0, 1.0, "e^0 = 1"), (1e-30, 1.0, "e^x = 1 for tiny x"),
             (-1e-30, 1.0, "e^x = 1 for tiny x"), (1.0, np.e, "e^1 = e"),
             (XMAX + 0.01, np.inf, "x > XMAX = 128 ln2 gives +inf"), (89.0, np.inf, "x > XMAX gives +inf"),
             (1000.0, np.inf, "x > XMAX gives +inf"), (np.inf, np.inf, "+inf gives +inf"),
             (np.nan, np.nan, "NaN stays NaN")]
    x = np.array([c[0] for c in cases], dtype=np.float32)
    got = expect_array(ch.harness(f"{HARNESS}:exp_values", ch.exp_f32, x), shape=x.shape, dtype=np.float32,
                       what="exp_f32 of the special values")
    for xi, g, (_, e, rule) in zip(x, got, cases):
        ok = (np.isnan(g) and np.isnan(e)) or g == e or abs(g - e) <= 2e-7 * abs(e)
        assert ok, f"exp({xi!r}) gave {g!r}, expected {np.float32(e)!r}: {rule} (a compare and a select)"


@pytest.mark.exercise("12.1")
def test_exp_stays_in_float32_and_vectorises(ch):
    facts = ch.harness(f"{HARNESS}:exp_code_facts", ch.exp_f32)
    ret = facts["return_type"]
    assert ret == "float32", (f"exp_f32 returns {ret} for a float32 argument: a Python float "
                              "constant promoted the arithmetic to float64; wrap constants in np.float32")
    assert not facts["calls_libm_exp"], ("the loop still calls the C library's exp (expf): build e^x from "
                                         "+, *, floor, compares and pow2_f32 only")
    assert facts["vector_fma"], ("the loop did not become SIMD code (no vector FMA): write the special cases "
                                 "as selects (a if cond else b), not as branches or calls")


# Exercise 12.2 -----------------------------------------------------------------------------------


def band_of(L, S, causal, align, window):
    return integer_band(mask_band(L, S, causal, align, window), L, S)


def mask_words(causal, align, window):
    return f"causal={causal} ({align}), window={window}"


# (Hq, Hkv, L, S, E, Ev, causal, align, window, block_q, block_k): ragged tails, one block, blocks of
# one row, GQA groups of 3, MQA, no GQA, L > S with empty rows (bottom-right causal), windows.
FORWARD_CASES = [(6, 2, 13, 17, 8, 5, False, "top_left", None, 4, 5),
                 (6, 2, 13, 17, 8, 5, True, "bottom_right", None, 3, 4),
                 (6, 2, 13, 17, 3, 9, True, "top_left", (3, 1), 5, 2),
                 (4, 1, 17, 9, 16, 4, True, "bottom_right", None, 4, 4),
                 (3, 3, 9, 20, 5, 1, False, "top_left", (2, 6), 16, 8),
                 (2, 1, 7, 7, 8, 8, True, "top_left", None, 1, 3)]


@pytest.mark.exercise("12.2")
def test_parallel_loop_is_a_prange(ch, rng):
    q, k, v = rng.standard_normal((2, 8, 4)), rng.standard_normal((2, 8, 4)), rng.standard_normal((2, 8, 4))
    _, _, parallel_loops, _ = ch.harness(f"{HARNESS}:forward", ch.forward_parallel, q, k, v, 0.5,
                                         *band_of(8, 8, True, "top_left", None), 4, 4)
    assert parallel_loops >= 1, "Numba found no parallel loop: use numba.prange for the loop over work items"


@pytest.mark.exercise("12.2")
@pytest.mark.parametrize("hq,hkv,L,S,bq,bk", [(6, 2, 13, 17, 4, 5), (2, 1, 64, 64, 8, 8), (1, 1, 29, 40, 4, 8)])
def test_parallel_loop_hands_every_item_once(ch, rng, hq, hkv, L, S, bq, bk):
    q = rng.standard_normal((hq, L, 4))
    k, v = rng.standard_normal((hkv, S, 4)), rng.standard_normal((hkv, S, 3))
    lo, hi = band_of(L, S, True, "bottom_right", None)
    calls = ch.harness(f"{HARNESS}:forward_calls", ch.forward_parallel, q, k, v, 0.5, lo, hi, bq, bk)
    group = hq // hkv
    blocks = [(i0, min(i0 + bq, L)) for i0 in range(0, L, bq)]
    assert calls, "forward_parallel never called forward_query_block: call it once per (query head, query block)"
    seen = {}
    for n, (qh, kh, vh, oh, lh, i0, i1, scale, lo_, hi_, bk_, _, _) in enumerate(calls):
        where = f"call {n + 1} of forward_query_block (rows {i0}..{i1 - 1})"
        assert qh is not None and qh == oh == lh, (
            f"{where}: pass q[h], out[h] and lse[h] of one query head h (got heads {qh}, {oh}, {lh})")
        assert kh == vh == qh // group, (
            f"{where}: query head {qh} must read key/value head {qh} // G = {qh // group} (G = {hq} // {hkv} = "
            f"{group}) for both k and v; got k head {kh}, v head {vh}")
        assert (i0, i1) in blocks, (f"{where}: query blocks of block_q={bq} rows are {blocks[:3]}... (i1 = "
                                    f"min(i0 + block_q, L) with L={L}); got ({i0}, {i1})")
        assert (scale, lo_, hi_, bk_) == (0.5, lo, hi, bk), (
            f"{where}: pass scale, lo, hi and block_k on unchanged ({0.5}, {lo}, {hi}, {bk}); "
            f"got {(scale, lo_, hi_, bk_)}")
        seen[(qh, i0)] = seen.get((qh, i0), 0) + 1
    twice = [key for key, count in seen.items() if count > 1]
    missing = [(h, i0) for h in range(hq) for i0, _ in blocks if (h, i0) not in seen]
    assert not twice, f"(head, first row) {twice[:3]} computed more than once: every item exactly once"
    assert not missing, (f"(head, first row) {missing[:3]} never computed: visit every head and every query "
                         "block, the last, partial one included")


@pytest.mark.exercise("12.2")
@pytest.mark.parametrize("hq", [1, 2])
def test_parallel_loop_balances_causal_work(ch, rng, hq):
    L = S = 64
    bq = bk = 8
    q, k, v = rng.standard_normal((hq, L, 4)), rng.standard_normal((1, S, 4)), rng.standard_normal((1, S, 4))
    lo, hi = band_of(L, S, True, "top_left", None)
    calls = ch.harness(f"{HARNESS}:forward_calls", ch.forward_parallel, q, k, v, 0.5, lo, hi, bq, bk)
    work, items = [], {}  # key tiles each call visits, in the loop's order; and per prange iteration
    for call in calls:
        first, end = key_blocks(call[5], call[6], S, bk, lo, hi)
        work.append(int(end - first))
        region, item = call[11], call[12]
        items.setdefault(region, {}).setdefault(item, 0)
        items[region][item] += work[-1]
    assert len(work) == hq * L // bq, f"expected {hq * L // bq} calls of forward_query_block; got {len(work)}"
    for threads in (2, 4):
        # Numba hands each thread a contiguous run of a prange's iterations; prange loops run one after another.
        slowest, shares_seen = 0, []
        for region, per_item in items.items():
            runs = np.array_split(np.array(list(per_item.values()), dtype=int), threads)
            shares = [int(run.sum()) for run in runs]
            shares_seen.append((len(per_item), shares))
            slowest += max(shares)
        worst = slowest / (sum(work) / threads)
        if len(items) == 1 and len(next(iter(items.values()))) < threads * 2:
            n = len(next(iter(items.values())))
            assert worst <= 1.2, (
                f"causal mask, {hq} head(s), {L // bq} query blocks: the parallel loop has only {n} iteration(s) "
                f"for {len(work)} (head, query block) items, so with {threads} threads the busiest does "
                f"{worst:.2f}x its fair share ({shares_seen[0][1]} key tiles per thread). Make one flat prange "
                "over every (head, query block) item, not a prange over the heads with the blocks inside")
        assert worst <= 1.2, (
            f"causal mask, {hq} head(s), {L // bq} query blocks: in the loop's order the items carry "
            f"{work} key tiles; each parallel loop hands {threads} threads contiguous runs of its iterations "
            f"(iterations and tiles per thread: {shares_seen}), so the busiest does {worst:.2f}x its fair share. "
            "Take the query blocks in the order of zigzag(t % n_blocks, n_blocks), which pairs long with short "
            "blocks, in one flat prange over (head, query block)")


@pytest.mark.exercise("12.2")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("hq,hkv,L,S,E,Ev,causal,align,window,bq,bk", FORWARD_CASES)
def test_parallel_loop_matches_the_oracle(ch, rng, hq, hkv, L, S, E, Ev, causal, align, window, bq, bk, dtype):
    q = rng.standard_normal((hq, L, E)).astype(dtype)
    k, v = rng.standard_normal((hkv, S, E)).astype(dtype), rng.standard_normal((hkv, S, Ev)).astype(dtype)
    lo, hi = band_of(L, S, causal, align, window)
    out, lse, _, changed = ch.harness(f"{HARNESS}:forward", ch.forward_parallel, q, k, v, 0.4, lo, hi, bq, bk)
    setup = (f"{hq} query heads over {hkv} key/value heads (head h reads h // {hq // hkv}), L={L}, S={S}, "
             f"E={E}, Ev={Ev}, block_q={bq}, block_k={bk}, {mask_words(causal, align, window)}, {np.dtype(dtype).name}")
    assert not changed, f"forward_parallel changed its input(s) {changed}: only out and lse may be written"
    never = np.isnan(out).any(-1) & ~np.isnan(q).any(-1)  # (Hq, L) rows never written
    assert not never.any(), (f"{int(never.sum())} of {hq * L} rows were never written ({setup}); first: head "
                             f"{np.argwhere(never)[0][0]}, row {np.argwhere(never)[0][1]}. Does the loop visit "
                             f"every head and every query block, the last, partial one included?")
    ref, ref_lse, _ = attention_oracle(q, k, v, is_causal=causal, causal_align=align, window=window, scale=0.4)
    check_close(out, ref.astype(dtype), what=f"out ({setup})")
    check_close(lse, ref_lse.astype(dtype), what=f"lse ({setup}; +inf on rows with nothing to attend to)")


# Exercise 12.3 -----------------------------------------------------------------------------------

# (L, S, E, Ev, causal, align, window, block_q, block_k): L > S with bottom-right alignment leaves the
# first rows with nothing to attend to (lse = +inf); ragged tails in both directions; square tiles.
DQ_CASES = [(11, 9, 6, 4, False, "top_left", None, 4, 5),
            (11, 9, 6, 4, True, "bottom_right", None, 3, 4),
            (11, 9, 6, 4, True, "bottom_right", (2, 0), 5, 3),
            (9, 14, 16, 3, True, "top_left", None, 4, 4),
            (13, 13, 5, 7, False, "top_left", (3, 2), 16, 2),
            (6, 21, 8, 8, False, "top_left", None, 2, 32)]


@pytest.mark.exercise("12.3")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("L,S,E,Ev,causal,align,window,bq,bk", DQ_CASES)
def test_dq_pass_matches_the_oracle(ch, rng, L, S, E, Ev, causal, align, window, bq, bk, dtype):
    q, k, v = rng.standard_normal((L, E)), rng.standard_normal((S, E)), rng.standard_normal((S, Ev))
    g = rng.standard_normal((L, Ev))
    mask = dict(is_causal=causal, causal_align=align, window=window, scale=0.5)
    out, lse, _ = attention_oracle(q[None], k[None], v[None], **mask)  # (1, L, Ev), (1, L)
    ref_dq = attention_oracle_backward(g[None], q[None], k[None], v[None], **mask)[0][0]  # (L, E)
    d = (g * out[0]).sum(-1)  # (L,): D = rowsum(dO ∘ O)
    lo, hi = band_of(L, S, causal, align, window)
    args = [a.astype(dtype) for a in (q, k, v, g, lse[0], d)]
    dq, outside, changed = ch.harness(f"{HARNESS}:dq_blocks", ch.dq_query_block, *args, 0.5, lo, hi, bq, bk)
    setup = (f"L={L}, S={S}, E={E}, block_q={bq}, block_k={bk}, {mask_words(causal, align, window)}, "
             f"{np.dtype(dtype).name}")
    assert not changed, (f"dq_query_block changed its input(s) {changed} ({setup}): only dq may be written "
                         "(compute in the scratch tiles)")
    assert not outside, (f"dq_query_block(i0, i1) changed rows outside i0..i1-1 ({setup}); (i0, i1, row): "
                         f"{outside[:3]}. Write row r of the block to dq[i0 + r]")
    never = np.isnan(dq).any(-1)
    assert not never.any(), (f"{int(never.sum())} rows of dq hold NaN ({setup}), first row "
                             f"{int(np.argmax(never))}: every row of the block must be written, and rows with "
                             "lse = +inf (nothing to attend to) get 0")
    check_close(dq, ref_dq.astype(dtype), what=f"dQ ({setup}); dQ_i = scale · Σ_j dS_ij K_j, remember the "
                "final factor scale")
