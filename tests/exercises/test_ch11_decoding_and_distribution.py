"""Graded tests for chapter 11: the split-KV combine.

Results decide: a NumPy warning from a branch of ``np.where`` that is thrown away
fails nothing (see :func:`hinted`).
"""
import contextlib
import warnings

import numpy as np
import pytest

from attention_scratch.course.checks import check_close, expect_array, expect_tuple
from attention_scratch.masks import causal_mask
from attention_scratch.testing import attention_oracle

EMPTY_HINT = ("empty chunks (output 0, lse +inf) must carry zero weight: treat lse = +inf as log(0) = -inf, "
              "shift each row by its largest finite lse, and by 0 on a row empty in every chunk "
              "(output 0, lse +inf)")
OVERFLOW_HINT = "exp(900) overflowed: subtract the largest lse over the chunks before exponentiating"


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch11_decoding_and_distribution")


@contextlib.contextmanager
def hinted(hint):
    """Call and check inside the block; a NumPy warning alone fails nothing.

    ``np.where`` evaluates both of its branches, so a right answer may warn about a
    branch it throws away: the results decide. When a check fails after NumPy
    warned, the message leads with ``hint`` and the warning, which say why.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        try:
            yield
        except AssertionError as error:
            warned = [w for w in caught if issubclass(w.category, RuntimeWarning)]
            if not warned:
                raise
            raise AssertionError(f"{hint} (NumPy warned: {warned[0].message})\n{error}") from None


def combine(ch, outs, lses, what):
    """The student's (out, lse), checked to be a pair without NaN (a NaN says which rule was broken)."""
    out, lse = expect_tuple(ch.combine_splits(outs, lses), 2, what=f"combine_splits ({what})")
    for name, got in (("output", out), ("lse", lse)):
        if isinstance(got, np.ndarray) and got.dtype.kind == "f" and np.isnan(got).any():
            first = tuple(int(i) for i in np.argwhere(np.isnan(got))[0])
            hint = EMPTY_HINT if np.isposinf(lses).any() else OVERFLOW_HINT
            raise AssertionError(f"combine_splits ({what}): the {name} holds NaN (first at {first}); {hint}")
    return out, lse


def chunk_partials(q, k, v, edges, mask):
    """Oracle (out, lse) of every key chunk [a, b), stacked on a new axis 0: (R, ..., Ev), (R, ...)."""
    parts = [attention_oracle(q, k[..., a:b, :], v[..., a:b, :], attn_mask=mask[:, a:b])
             for a, b in zip(edges[:-1], edges[1:])]
    return np.stack([o for o, _, _ in parts]), np.stack([s for _, s, _ in parts])


def reference(outs, lses):
    """The combination in float64, written with logaddexp (+inf, an empty chunk, counts as log 0)."""
    logs = np.where(np.isposinf(lses), -np.inf, lses.astype(np.float64))  # (R, ...)
    lse = np.logaddexp.reduce(logs, axis=0)  # (...)
    with np.errstate(invalid="ignore"):
        w = np.where(np.isneginf(lse), 0.0, np.exp(logs - lse))  # (R, ...)
    out = (w[..., None] * outs.astype(np.float64)).sum(axis=0)  # (..., Ev)
    return out, np.where(np.isneginf(lse), np.inf, lse)


# (L, S, causal alignment or None, chunk edges): L > S bottom-right leaves rows with no key at all;
# an edge repeated is a chunk with no keys; R = 1 is the trivial combine.
CASES = [(1, 30, None, (0, 30)),
         (1, 30, None, (0, 7, 30)),
         (3, 30, "bottom_right", (0, 3, 11, 11, 12, 30)),
         (5, 20, "top_left", (0, 4, 9, 14, 20)),
         (12, 7, "bottom_right", (0, 2, 5, 7)),
         (12, 7, "bottom_right", (0, 0, 1, 7))]


@pytest.mark.exercise("11.1")
@pytest.mark.parametrize("L,S,align,edges", CASES)
def test_combine_splits_equals_attention_over_all_keys(ch, rng, L, S, align, edges):
    q = rng.standard_normal((2, 3, L, 8))  # (B, H, L, E)
    k, v = rng.standard_normal((2, 3, S, 8)), rng.standard_normal((2, 3, S, 5))
    mask = causal_mask(L, S, align=align) if align else np.ones((L, S), dtype=bool)  # (L, S)
    outs, lses = chunk_partials(q, k, v, edges, mask)  # (R, 2, 3, L, 5), (R, 2, 3, L)
    out, lse = combine(ch, outs, lses, f"chunks at {edges}")
    ref_out, ref_lse, _ = attention_oracle(q, k, v, attn_mask=mask)
    n = len(edges) - 1
    what = (f"{n} chunk{'s' if n > 1 else ''} at {edges}, L={L}, S={S}, mask {align or 'none'}; outs {outs.shape}, "
            f"lses {lses.shape}")
    if np.isposinf(lses).any():
        what += "; chunks with lse +inf (no key for that row) carry weight 0"
    check_close(out, ref_out, what=f"combined output of {what}")
    check_close(lse, ref_lse, what=f"combined log-sum-exp of {what} (+inf on a row with no key in any chunk)")


@pytest.mark.exercise("11.1")
@pytest.mark.parametrize("align", [None, "bottom_right"])
def test_combine_splits_keeps_float32(ch, rng, align):
    L, S, edges = 6, 40, (0, 9, 9, 25, 40)
    q = rng.standard_normal((2, L, 16))
    k, v = rng.standard_normal((2, S, 16)) * 2, rng.standard_normal((2, S, 7))
    mask = causal_mask(L, S, align=align) if align else np.ones((L, S), dtype=bool)
    outs, lses = chunk_partials(q, k, v, edges, mask)
    outs, lses = outs.astype(np.float32), lses.astype(np.float32)  # float32 partials
    out, lse = combine(ch, outs, lses, "float32 chunks")
    ref_out, ref_lse = reference(outs, lses)
    check_close(out, ref_out.astype(np.float32), what="combined output of float32 chunks (must stay float32)")
    check_close(lse, ref_lse.astype(np.float32), what="combined lse of float32 chunks (must stay float32)")


@pytest.mark.exercise("11.1")
def test_combine_splits_survives_large_lse(ch):
    outs = np.array([[[1.0, 0.0]], [[3.0, 2.0]]])  # (R=2, L=1, Ev=2)
    lses = np.array([[900.0], [900.0 + np.log(3.0)]])  # (R=2, L=1): masses 1 : 3
    with hinted(OVERFLOW_HINT):
        out, lse = combine(ch, outs, lses, "lse near 900")
        check_close(out, np.array([[2.5, 1.5]]), what="combine of chunks with masses 1 : 3 near lse = 900")
        check_close(lse, np.array([900.0 + np.log(4.0)]), what="combined lse near 900")


@pytest.mark.exercise("11.1")
def test_combine_splits_when_a_later_chunk_holds_the_largest_lse(ch):
    outs = np.array([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])  # (R=2, L=2, Ev=2)
    lses = np.array([[0.0, 800.0], [800.0, 0.0]])  # (R=2, L=2): row 0's largest lse is in chunk 1
    with hinted(OVERFLOW_HINT):
        out, lse = combine(ch, outs, lses, "lses [0, 800] and [800, 0]")
        check_close(out, np.array([[0.0, 1.0], [1.0, 0.0]]),
                    what="combine of row 0 with chunk lses [0, 800] and row 1 with [800, 0]: shift each row by "
                    "its largest lse over all chunks (np.max over axis 0), not by the first chunk's")
        check_close(lse, np.array([800.0, 800.0]), what="combined lse of rows with chunk lses [0, 800] and [800, 0]")


@pytest.mark.exercise("11.1")
def test_combine_splits_survives_small_and_spread_lse(ch, rng):
    # Row 0: every lse near -900 (exp underflows to 0 unless the largest is subtracted);
    # row 1: lses 1800 apart; row 2: the first chunk empty, the others small.
    lses = np.array([[-900.0, 1000.0, np.inf],
                     [-900.0 + np.log(3.0), -800.0, -2.0],
                     [-901.0, np.inf, -3.0]])  # (R=3, L=3)
    outs = rng.standard_normal((3, 3, 4))  # (R, L, Ev)
    outs[np.isposinf(lses)] = 0.0  # an empty chunk has output 0
    ref_out, ref_lse = reference(outs, lses)
    with hinted("subtract the largest lse of each row before exponentiating"):
        out, lse = combine(ch, outs, lses, "lse near -900 and 1800 apart")
        check_close(out, ref_out, what="combined output with lses near -900 (row 0: do not let exp underflow to 0 "
                    "by subtracting anything but each row's largest lse), 1800 apart (row 1) and a first chunk "
                    "that is empty (row 2)")
        check_close(lse, ref_lse, what="combined lse with lses near -900, 1800 apart, and an empty first chunk")


@pytest.mark.exercise("11.1")
def test_combine_splits_empty_chunks_and_large_lse(ch):
    outs = np.array([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [[3.0, 2.0], [0.0, 0.0]]])
    lses = np.array([[900.0, np.inf], [np.inf, np.inf], [900.0, np.inf]])  # (R=3, L=2)
    with hinted(EMPTY_HINT):
        out, lse = combine(ch, outs, lses, "empty chunks")
        check_close(out, np.array([[2.0, 1.0], [0.0, 0.0]]), what="combine: equal masses, one empty chunk; "
                    "row 1 is empty in every chunk (output 0)")
        check_close(lse, np.array([900.0 + np.log(2.0), np.inf]), what="combined lse (+inf if all empty)")


@pytest.mark.exercise("11.1")
def test_combine_splits_empty_chunks_carry_no_weight_at_ordinary_lse(ch):
    outs = np.array([[[4.0, -2.0]], [[0.0, 0.0]], [[1.0, 1.0]]])  # (R=3, L=1, Ev=2): chunk 1 is empty
    lses = np.array([[-1.5], [np.inf], [-1.5]])  # (R=3, L=1)
    with hinted(EMPTY_HINT):
        out, lse = combine(ch, outs, lses, "an empty chunk between two at lse -1.5")
        check_close(out, np.array([[2.5, -0.5]]), what="combine of two equal chunks and an empty one (weight 0, "
                    "not exp(0 - lse): an empty chunk's +inf means log(0))")
        check_close(lse, np.array([-1.5 + np.log(2.0)]), what="combined lse with an empty chunk")


@pytest.mark.exercise("11.1")
def test_combine_splits_lets_nan_in_a_chunk_reach_its_row(ch):
    nan, inf = np.nan, np.inf
    outs = np.array([[[nan, 1.0], [1.0, 2.0], [1.0, 2.0]],
                     [[1.0, 1.0], [3.0, 4.0], [0.0, 0.0]]])  # (R=2, L=3, Ev=2)
    lses = np.array([[0.0, nan, 0.5], [0.0, 0.0, inf]])  # (R=2, L=3): row 2's chunk 1 is empty
    out, lse = expect_tuple(ch.combine_splits(outs, lses), 2, what="combine_splits with NaN in a chunk")
    expect_array(out, shape=(3, 2), dtype=np.float64, what="combined output with NaN in a chunk")
    expect_array(lse, shape=(3,), dtype=np.float64, what="combined lse with NaN in a chunk")
    if not np.isnan(out[0, 0]) or not np.isnan(out[1]).all() or not np.isnan(lse[1]):
        raise AssertionError(
            "combine_splits: row 0's chunk 0 has a NaN output entry and row 1's chunk 0 a NaN lse, and neither "
            "chunk is empty: the NaN must reach out[0, 0], all of row 1's output and its lse. Got out rows "
            f"{out[0]} and {out[1]}, lse[1] = {float(lse[1])!r}. Never hide NaN (nan_to_num, nansum), and do not "
            "guard with `total > 0`, which is False for NaN: test `total == 0` for the row empty in every chunk.")
    check_close(out, np.array([[nan, 1.0], [nan, nan], [1.0, 2.0]]),
                what="combined output of rows (a NaN output entry, a NaN lse, one chunk empty): the NaN reaches "
                "exactly the entries it feeds")
    check_close(lse, np.array([np.log(2.0), nan, 0.5]), what="combined lse of the same rows")
