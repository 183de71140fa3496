"""Graded tests for chapter 8: the online softmax and the merge operator.

Expected pairs come from the two-pass definition on the whole row (``pair_of``) and expected
attention from the float64 oracle; every returned array is compared whole, with its shape and
dtype (``checks.check_close``). The grader fails any change of an argument in place.
"""
import contextlib
import warnings

import numpy as np
import pytest

from attention_scratch.course.checks import check_close, expect_array, expect_tuple
from attention_scratch.course.remote import StudentRaised
from attention_scratch.testing import attention_oracle


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch08_online_softmax")


def pair_of(x):
    """(max, sum of exp(x - max)) of each row, the two-pass way, in float64; (-inf, 0) for a row of only -inf."""
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, initial=-np.inf)  # (...)
    reference = np.where(np.isneginf(m), 0.0, m)  # (...): any finite number will do for an empty row
    return m, np.exp(x - reference[..., None]).sum(axis=-1)  # (...), (...)


def as_f32(*arrays):
    return tuple(np.asarray(a, dtype=np.float32) for a in arrays)


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


@contextlib.contextmanager
def explained(what):
    """An error the student's function raises inside the block fails the test saying ``what`` was asked."""
    try:
        yield
    except StudentRaised as error:
        raise AssertionError(f"{what}; your function raised {error}") from None


def expect_like(got, expected, what):
    """Shape and dtype first, so that a message about the formula is not given for a wrong dtype."""
    expected = np.asarray(expected)
    expect_array(got, shape=expected.shape, dtype=expected.dtype, what=what)


# Exercise 8.1 ------------------------------------------------------------------------------------

NEW_MAX = "the new maximum m' = max(m, max(x)) of each row (the block is on the last axis)"
NEW_SUM = ("the running sum s' = s·exp(m - m') + sum(exp(x - m')) of each row: did you multiply the old sum "
           "by exp(m_old - m_new) and subtract each row's own m' from its block?")


def check_pair(got, expected, when):
    m, s = expect_tuple(got, 2, what="online_update's result (m, s)")
    expect_like(m, expected[0], what=f"m {when}")
    expect_like(s, expected[1], what=f"s {when}")
    check_close(m, expected[0], what=f"m {when}: {NEW_MAX}")
    check_close(s, expected[1], what=f"s {when}: {NEW_SUM}")


@pytest.mark.exercise("8.1")
def test_online_update_from_the_empty_state_is_max_and_sum(ch, rng):
    x = rng.standard_normal((3, 5)) * 4
    got = ch.online_update(np.full(3, -np.inf), np.zeros(3), x)
    check_pair(got, pair_of(x), "after one block of shape (3, 5) from the empty state (-inf, 0)")


@pytest.mark.exercise("8.1")
def test_online_update_rescales_the_old_sum_when_the_max_grows(ch, rng):
    x = rng.standard_normal((4, 9))
    x[:2, 5:] += 10.0  # rows 0 and 1: the second block holds a much larger maximum
    x[2:, :5] += 10.0  # rows 2 and 3: the first block keeps the maximum
    m, s = pair_of(x[:, :5])
    got = ch.online_update(m, s, x[:, 5:])
    check_pair(got, pair_of(x), "after a second block of 4 scores (rows 0-1: the maximum grows; rows 2-3: it "
               "stays)")


@pytest.mark.exercise("8.1")
def test_online_update_each_row_its_own_maximum(ch, rng):
    x = rng.standard_normal((4, 8)) * 3 + np.array([[0.0], [5.0], [-7.0], [2.0]])
    m, s = pair_of(x[:, :4])
    got = ch.online_update(m, s, x[:, 4:])  # a square (4, 4) block: a row's max must not meet another row's scores
    check_pair(got, pair_of(x), "after a (4, 4) block (4 rows, 4 scores each)")
    x = rng.standard_normal((2, 3, 11)) * 2  # (B, H, n): leading axes
    m, s = pair_of(x[..., :7])
    got = ch.online_update(m, s, x[..., 7:])
    check_pair(got, pair_of(x), "with leading axes: m, s (2, 3) and a block x (2, 3, 4)")


@pytest.mark.exercise("8.1")
def test_online_update_a_block_of_one_score(ch, rng):
    x = rng.standard_normal((5, 6)) * 2
    m, s = pair_of(x[:, :5])
    got = ch.online_update(m, s, x[:, 5:])
    check_pair(got, pair_of(x), "after a block of one score per row, shape (5, 1)")


@pytest.mark.exercise("8.1")
def test_online_update_ignores_minus_inf_without_nan(ch):
    inf = np.inf
    m = np.array([-inf, -inf, 1.0, 1.0, -inf])
    s = np.array([0.0, 0.0, 2.0, 2.0, 0.0])
    x = np.array([[-inf, -inf], [-inf, 2.0], [-inf, -inf], [-inf, 3.0], [0.5, -inf]])
    expected_m = np.array([-inf, 2.0, 1.0, 3.0, 0.5])
    expected_s = np.array([0.0, 1.0, 2.0, 2.0 * np.exp(-2.0) + 1.0, 1.0])
    with hinted("a row that has seen only -inf computed -inf - (-inf) = NaN: when the new maximum m' is -inf, "
                "shift by 0 instead of m'"):
        m, s = expect_tuple(ch.online_update(m, s, x), 2, what="online_update's result (m, s)")
        check_close(m, expected_m,
                    what="m for rows (state, block): (empty, [-inf, -inf]), (empty, [-inf, 2]), "
                    "((1, 2), [-inf, -inf]), ((1, 2), [-inf, 3]), (empty, [0.5, -inf]); -inf scores contribute "
                    "nothing")
        check_close(s, expected_s,
                    what="s for the same rows: an empty row stays (-inf, 0); a block of only -inf leaves the pair "
                    "unchanged; -inf scores contribute exp(-inf) = 0")


@pytest.mark.exercise("8.1")
def test_online_update_survives_large_scores(ch):
    with hinted("exp overflowed: subtract the new maximum before exponentiating"):
        got = ch.online_update(np.array([1000.0, -1000.0]), np.array([1.0, 3.0]),
                               np.array([[1001.0, 999.0], [-1002.0, -999.5]]))
        check_pair(got, (np.array([1001.0, -999.5]),
                         np.array([np.exp(-1.0) + 1.0 + np.exp(-2.0), 3.0 * np.exp(-0.5) + np.exp(-2.5) + 1.0])),
                   "for scores near +1000 and -1000 (exp of them overflows or underflows)")


@pytest.mark.exercise("8.1")
def test_online_update_keeps_float32(ch, rng):
    x = (rng.standard_normal((3, 10)) * 3).astype(np.float32)
    m, s = as_f32(*pair_of(x[:, :6]))
    got = ch.online_update(m, s, x[:, 6:])
    check_pair(got, as_f32(*pair_of(x)), "for float32 m, s and x (the results must stay float32)")


@pytest.mark.exercise("8.1")
def test_online_update_with_an_empty_block(ch, rng):
    m, s = pair_of(rng.standard_normal((3, 4)))
    m[1], s[1] = -np.inf, 0.0  # one row has seen nothing yet
    what = ("online_update(m, s, x) for an empty block x of shape (3, 0) (a ragged tail of no keys): the pair "
            "stays as it was (a maximum over no score is -inf: x.max(axis=-1, initial=-np.inf))")
    with explained(what):
        got = ch.online_update(m, s, np.zeros((3, 0)))
    check_pair(got, (m, s), "after an empty block of shape (3, 0): unchanged")


@pytest.mark.exercise("8.1")
def test_online_update_lets_a_nan_score_reach_its_row(ch, rng):
    x = rng.standard_normal((3, 6))
    m, s = pair_of(x[:, :3])
    block = x[:, 3:].copy()
    block[1, 1] = np.nan
    got = expect_tuple(ch.online_update(m, s, block), 2, what="online_update's result (m, s)")
    expect_like(got[1], s, what="s after a block holding NaN")
    if not np.isnan(got[1][1]):
        raise AssertionError(
            f"online_update: row 1's block holds a NaN score, so its running sum s' must be NaN; got {got[1][1]!r}. "
            "A NaN score is a bug upstream and must show: do not skip it (nanmax, nansum) or zero it (nan_to_num).")
    keep = [0, 2]
    expected = pair_of(x[keep])
    check_close(got[0][keep], expected[0], what=f"m of rows 0 and 2 (no NaN): {NEW_MAX}")
    check_close(got[1][keep], expected[1], what=f"s of rows 0 and 2 (no NaN): {NEW_SUM}")


# Exercise 8.2 ------------------------------------------------------------------------------------

MERGED = ("the pair of the union: m = max(m_a, m_b), s = s_a·exp(m_a - m) + s_b·exp(m_b - m) (both sums "
          "rescaled to the common maximum)")


def check_merged(got, expected, when):
    m, s = expect_tuple(got, 2, what="merge_stats's result (m, s)")
    expect_like(m, expected[0], what=f"merged m {when}")
    expect_like(s, expected[1], what=f"merged s {when}")
    check_close(m, expected[0], what=f"merged m {when}: {MERGED}")
    check_close(s, expected[1], what=f"merged s {when}: {MERGED}")


@pytest.mark.exercise("8.2")
def test_merge_stats_equals_the_pair_of_the_concatenation(ch, rng):
    a, b = rng.standard_normal((4, 6)) * 3, rng.standard_normal((4, 3)) * 3
    b[:2] += 4.0  # rows 0-1: the larger maximum is in b; rows 2-3 it is usually in a
    whole = pair_of(np.concatenate([a, b], axis=-1))
    check_merged(ch.merge_stats(*pair_of(a), *pair_of(b)), whole, "of rows split 6 + 3")
    check_merged(ch.merge_stats(*pair_of(b), *pair_of(a)), whole,
                 "with the parts swapped (the merge is commutative)")


@pytest.mark.exercise("8.2")
def test_merge_stats_with_leading_axes_and_broadcasting(ch, rng):
    a, b = rng.standard_normal((2, 3, 5)) * 2, rng.standard_normal((2, 3, 4)) * 2 + 1
    check_merged(ch.merge_stats(*pair_of(a), *pair_of(b)), pair_of(np.concatenate([a, b], axis=-1)),
                 "with leading axes (2, 3)")
    shared = rng.standard_normal((3, 4)) * 2  # one part shared by both batches: pairs of shape (3,)
    check_merged(ch.merge_stats(*pair_of(a), *pair_of(shared)),
                 pair_of(np.concatenate([a, np.broadcast_to(shared, (2, 3, 4))], axis=-1)),
                 "of pairs of shape (2, 3) and (3,) (the four arguments broadcast together)")
    what = "merged pair of pairs of shape (3,) and (2, 3): the first pair may be the smaller one"
    with explained(what + " (build the result from the broadcast, not with np.empty_like(s_a))"):
        got = ch.merge_stats(*pair_of(shared), *pair_of(a))
    check_merged(got, pair_of(np.concatenate([np.broadcast_to(shared, (2, 3, 4)), a], axis=-1)),
                 "of pairs of shape (3,) and (2, 3) (the first pair is the one that broadcasts)")


@pytest.mark.exercise("8.2")
def test_merge_stats_in_any_order(ch, rng):
    row = rng.standard_normal((3, 12)) * 4
    p1, p2, p3 = pair_of(row[:, :5]), pair_of(row[:, 5:6]), pair_of(row[:, 6:])
    whole = pair_of(row)
    left = ch.merge_stats(*ch.merge_stats(*p1, *p2), *p3)
    check_merged(left, whole, "of three pieces as (p1 ⊕ p2) ⊕ p3")
    right = ch.merge_stats(*p3, *ch.merge_stats(*p2, *p1))
    check_merged(right, whole, "of three pieces as p3 ⊕ (p2 ⊕ p1) (associative and commutative)")


@pytest.mark.exercise("8.2")
def test_merge_stats_with_an_empty_part(ch):
    inf = np.inf
    with hinted("merging with an empty part (-inf, 0) gave -inf - (-inf) = NaN (or another warning): shift by "
                "0 when the common maximum is -inf"):
        got = ch.merge_stats(np.array([3.0, -inf, -inf]), np.array([2.0, 0.0, 0.0]),
                             np.array([-inf, 1.5, -inf]), np.array([0.0, 4.0, 0.0]))
        check_merged(got, (np.array([3.0, 1.5, -inf]), np.array([2.0, 4.0, 0.0])),
                     "of (3, 2) ⊕ empty, empty ⊕ (1.5, 4) and empty ⊕ empty: the empty pair (-inf, 0) is the "
                     "identity, and two empty parts give (-inf, 0)")


@pytest.mark.exercise("8.2")
def test_merge_stats_large_values(ch):
    with hinted("exp overflowed: rescale both sums to the common maximum, never exp(800)"):
        got = ch.merge_stats(np.array([800.0, -800.0]), np.array([1.0, 2.0]),
                             np.array([801.0, -805.0]), np.array([1.0, 3.0]))
        check_merged(got, (np.array([801.0, -800.0]), np.array([1.0 + np.exp(-1.0), 2.0 + 3.0 * np.exp(-5.0)])),
                     "of parts with maxima near +800 and -800")


@pytest.mark.exercise("8.2")
def test_merge_stats_keeps_float32(ch, rng):
    a, b = rng.standard_normal((4, 5)) * 3, rng.standard_normal((4, 7)) * 3
    got = ch.merge_stats(*as_f32(*pair_of(a)), *as_f32(*pair_of(b)))
    check_merged(got, as_f32(*pair_of(np.concatenate([a, b], axis=-1))),
                 "of float32 pairs (the results must stay float32)")


@pytest.mark.exercise("8.2")
def test_merge_stats_lets_nan_reach_the_merged_sum(ch):
    nan, inf = np.nan, np.inf
    m_a, s_a = np.array([0.0, 1.0, nan, 2.0, -inf]), np.array([nan, 1.0, 1.0, 1.0, 0.0])
    m_b, s_b = np.array([1.0, 0.0, 1.0, 1.0, 0.5]), np.array([1.0, nan, 1.0, 3.0, 2.0])
    m, s = expect_tuple(ch.merge_stats(m_a, s_a, m_b, s_b), 2, what="merge_stats's result (m, s)")
    expect_like(s, s_a, what="merged s")
    bad = [row for row in (0, 1, 2) if not np.isnan(s[row])]
    if bad:
        raise AssertionError(
            f"merge_stats: rows 0, 1 and 2 each hold a NaN (in s_a, s_b and m_a), so their merged s must be NaN; "
            f"rows {bad} are not (got {s[bad]}). A NaN is a bug upstream and must show: never hide it with "
            "nan_to_num, nansum or a comparison that sends NaN down one branch.")
    check_merged((m[3:], s[3:]), (np.array([2.0, 0.5]), np.array([1.0 + 3.0 * np.exp(-1.0), 2.0])),
                 "of the rows without NaN, (2, 1) ⊕ (1, 3) and empty ⊕ (0.5, 2)")


# Exercise 8.3 ------------------------------------------------------------------------------------

MERGE = ("lse = log(exp(lse_a) + exp(lse_b)), out = exp(lse_a - lse)·out_a + exp(lse_b - lse)·out_b, "
         "each row weighted by its own share")


def check_attention(got, expected_out, expected_lse, when):
    out, lse = expect_tuple(got, 2, what="merge_attention's result (out, lse)")
    expect_like(out, expected_out, what=f"merged output {when}")
    expect_like(lse, expected_lse, what=f"merged log-sum-exp {when}")
    check_close(out, expected_out, what=f"merged output {when}: {MERGE}")
    check_close(lse, expected_lse, what=f"merged log-sum-exp {when}: {MERGE}")


@pytest.mark.exercise("8.3")
def test_merge_attention_each_row_its_own_weights(ch, rng):
    q = rng.standard_normal((4, 6))  # one head, 4 queries; out (4, 4) below is square
    k, v = rng.standard_normal((10, 6)) * 2, rng.standard_normal((10, 4))
    out_a, lse_a, _ = attention_oracle(q[None], k[None, :3], v[None, :3])
    out_b, lse_b, _ = attention_oracle(q[None], k[None, 3:], v[None, 3:])
    whole_out, whole_lse, _ = attention_oracle(q[None], k[None], v[None])
    check_attention(ch.merge_attention(out_a[0], lse_a[0], out_b[0], lse_b[0]), whole_out[0], whole_lse[0],
                    "for out (4, 4) and lse (4,): row i's weights exp(lse_a[i] - lse[i]) scale row i of out_a "
                    "(lse[..., None] against out (..., Ev))")


@pytest.mark.exercise("8.3")
def test_merge_attention_equals_attention_over_the_union(ch, rng):
    q = rng.standard_normal((2, 3, 5, 4))  # (B, H, L, E)
    k, v = rng.standard_normal((2, 3, 9, 4)), rng.standard_normal((2, 3, 9, 3))
    k[..., 4:, :] += 1.0  # the two parts carry different masses
    out_a, lse_a, _ = attention_oracle(q, k[..., :4, :], v[..., :4, :])
    out_b, lse_b, _ = attention_oracle(q, k[..., 4:, :], v[..., 4:, :])
    whole_out, whole_lse, _ = attention_oracle(q, k, v)
    check_attention(ch.merge_attention(out_a, lse_a, out_b, lse_b), whole_out, whole_lse,
                    "of key sets of 4 and 5 keys, shapes (2, 3, 5, 3) and (2, 3, 5)")


@pytest.mark.exercise("8.3")
def test_merge_attention_gives_an_empty_part_no_weight(ch):
    inf = np.inf
    out_a = np.array([[1.0, 2.0], [0.0, 0.0], [0.0, 0.0], [5.0, -1.0]])
    lse_a = np.array([0.5, inf, inf, 2.0])
    out_b = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0], [1.0, 1.0]])
    lse_b = np.array([inf, -0.25, inf, 2.0])
    with hinted("merging with an empty part (output 0, lse +inf) computed inf - inf or 0/0: treat lse=+inf as "
                "zero mass, i.e. log(0) = -inf"):
        got = ch.merge_attention(out_a, lse_a, out_b, lse_b)
        check_attention(got, np.array([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0], [3.0, 0.0]]),
                        np.array([0.5, -0.25, inf, 2.0 + np.log(2.0)]),
                        "of rows (A, empty), (empty, B), (empty, empty), (A, B with equal mass): an empty part "
                        "(lse +inf) has weight 0 (treat lse=+inf as zero mass); empty in both stays output 0, "
                        "lse +inf")


@pytest.mark.exercise("8.3")
def test_merge_attention_survives_large_and_small_lse(ch):
    with hinted("exp(±1000) overflowed or underflowed to 0/0: subtract the larger lse first"):
        got = ch.merge_attention(np.array([[1.0], [1.0]]), np.array([1000.0, -1000.0]),
                                 np.array([[4.0], [4.0]]), np.array([1000.0 + np.log(2.0), -1000.0 - np.log(3.0)]))
        check_attention(got, np.array([[3.0], [1.75]]),
                        np.array([1000.0 + np.log(3.0), -1000.0 + np.log(4.0 / 3.0)]),
                        "of parts with masses 1 : 2 near lse = +1000 and 3 : 1 near lse = -1000 (subtract the "
                        "larger lse before exponentiating)")


@pytest.mark.exercise("8.3")
def test_merge_attention_keeps_float32(ch, rng):
    q = rng.standard_normal((2, 5, 4))
    k, v = rng.standard_normal((2, 8, 4)), rng.standard_normal((2, 8, 3))
    out_a, lse_a, _ = attention_oracle(q, k[:, :5], v[:, :5])
    out_b, lse_b, _ = attention_oracle(q, k[:, 5:], v[:, 5:])
    whole_out, whole_lse, _ = attention_oracle(q, k, v)
    got = ch.merge_attention(*as_f32(out_a, lse_a, out_b, lse_b))
    check_attention(got, *as_f32(whole_out, whole_lse), "of float32 parts (the results must stay float32)")


@pytest.mark.exercise("8.3")
def test_merge_attention_lets_nan_in_a_part_reach_its_row(ch):
    nan, inf = np.nan, np.inf
    out_a = np.array([[nan, 1.0], [1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    lse_a = np.array([0.0, nan, 0.5, 0.0])
    out_b = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0], [3.0, 4.0]])
    lse_b = np.array([0.0, 0.0, inf, 0.0])
    out, lse = expect_tuple(ch.merge_attention(out_a, lse_a, out_b, lse_b), 2,
                            what="merge_attention's result (out, lse)")
    expect_like(out, out_a, what="merged output")
    expect_like(lse, lse_a, what="merged log-sum-exp")
    if not np.isnan(out[0, 0]) or not np.isnan(out[1]).all() or not np.isnan(lse[1]):
        raise AssertionError(
            "merge_attention: row 0's part A has a NaN in its output and row 1's part A a NaN log-sum-exp, and "
            "neither part is empty: the NaN must reach the merged out[0, 0], all of row 1's output and its lse. "
            f"Got out rows {out[0]} and {out[1]}, lse[1] = {float(lse[1])!r}. Never hide NaN (nan_to_num), and "
            "do not guard with `total > 0`, which is False for NaN: test `total == 0` for the row empty in both "
            "parts.")
    check_attention((out, lse), np.array([[nan, 1.0], [nan, nan], [1.0, 2.0], [2.0, 3.0]]),
                    np.array([np.log(2.0), nan, 0.5, np.log(2.0)]),
                    "of rows (A with a NaN output entry, B), (A with a NaN lse, B), (A, empty), (A, B with equal "
                    "mass): the NaN reaches exactly the entries it feeds")
