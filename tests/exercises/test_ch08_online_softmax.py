"""Graded tests for chapter 8: the online softmax and the merge operator."""
import numpy as np
import pytest

from attention_scratch.testing import assert_close, assert_shape, attention_oracle, warnings_as_failures


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch08_online_softmax")


def pair_of(x):
    """(max, sum of exp(x - max)) of each row, computed the two-pass way."""
    m = x.max(axis=-1)
    return m, np.exp(x - m[..., None]).sum(axis=-1)


# Exercise 8.1 ------------------------------------------------------------------------------------


@pytest.mark.exercise("8.1")
def test_online_update_from_the_empty_state_is_max_and_sum(ch, rng):
    x = rng.standard_normal((3, 5)) * 4
    m, s = ch.online_update(np.full(3, -np.inf), np.zeros(3), x)
    assert_shape(m, (3,), "m after one block of shape (3, 5)")
    exp_m, exp_s = pair_of(x)
    assert_close(m, exp_m, what="running max after the first block")
    assert_close(s, exp_s, what="running sum after the first block (sum of exp(x - max))")


@pytest.mark.exercise("8.1")
def test_online_update_rescales_the_old_sum_when_the_max_grows(ch, rng):
    x = rng.standard_normal((2, 8))
    x[:, 5:] += 10.0  # the second block holds a much larger maximum
    m, s = ch.online_update(np.full(2, -np.inf), np.zeros(2), x[:, :5])
    m, s = ch.online_update(m, s, x[:, 5:])
    exp_m, exp_s = pair_of(x)
    assert_close(m, exp_m, what="running max after two blocks")
    assert_close(s, exp_s, what="running sum after two blocks: did you multiply the old sum by "
                 "exp(m_old - m_new)?")


@pytest.mark.exercise("8.1")
def test_online_update_ignores_minus_inf_without_nan(ch):
    with warnings_as_failures("a block of only -inf from the empty state gave NaN: m - m' was "
                              "-inf - (-inf); shift by 0 when the new maximum is -inf"):
        m, s = ch.online_update(np.array([-np.inf, -np.inf]), np.zeros(2),
                                np.array([[-np.inf, -np.inf], [-np.inf, 2.0]]))
    assert not np.isnan(s).any(), "a block of only -inf from the empty state gave NaN"
    assert_close(m, np.array([-np.inf, 2.0]), what="max of rows [-inf, -inf] and [-inf, 2]")
    assert_close(s, np.array([0.0, 1.0]), what="sum of rows [-inf, -inf] and [-inf, 2]")


@pytest.mark.exercise("8.1")
def test_online_update_survives_large_scores(ch):
    with warnings_as_failures("exp overflowed: subtract the new maximum before exponentiating"):
        m, s = ch.online_update(np.array([1000.0]), np.array([1.0]), np.array([[1001.0, 999.0]]))
    assert np.isfinite(s).all(), "exp overflowed: subtract the new maximum before exponentiating"
    assert_close(s, np.array([np.exp(-1.0) + 1.0 + np.exp(-2.0)]), what="running sum near 1000")


# Exercise 8.2 ------------------------------------------------------------------------------------


@pytest.mark.exercise("8.2")
def test_merge_stats_equals_the_pair_of_the_concatenation(ch, rng):
    a, b = rng.standard_normal((4, 6)) * 3, rng.standard_normal((4, 3)) * 3 + 2
    m, s = ch.merge_stats(*pair_of(a), *pair_of(b))
    exp_m, exp_s = pair_of(np.concatenate([a, b], axis=-1))
    assert_close(m, exp_m, what="merged max")
    assert_close(s, exp_s, what="merged sum: both sums must be rescaled to the common maximum")
    m2, s2 = ch.merge_stats(*pair_of(b), *pair_of(a))
    assert_close(s2, exp_s, what="merge with the parts swapped (the merge is commutative)")


@pytest.mark.exercise("8.2")
def test_merge_stats_with_an_empty_part(ch):
    with warnings_as_failures("merging with an empty part (-inf, 0) gave NaN: -inf - (-inf); shift by "
                              "0 when the common maximum is -inf"):
        m, s = ch.merge_stats(np.array([3.0, -np.inf]), np.array([2.0, 0.0]),
                              np.array([-np.inf, -np.inf]), np.array([0.0, 0.0]))
    assert not np.isnan(s).any(), "merging with an empty part (-inf, 0) gave NaN"
    assert_close(m, np.array([3.0, -np.inf]), what="max after merging with an empty part")
    assert_close(s, np.array([2.0, 0.0]), what="sum after merging with an empty part (unchanged)")


@pytest.mark.exercise("8.2")
def test_merge_stats_large_values(ch):
    with warnings_as_failures("exp overflowed: rescale both sums to the common maximum, never exp(800)"):
        m, s = ch.merge_stats(np.array([800.0]), np.array([1.0]), np.array([801.0]), np.array([1.0]))
    assert_close(s, np.array([1.0 + np.exp(-1.0)]), what="merged sum of parts with max 800 and 801")


# Exercise 8.3 ------------------------------------------------------------------------------------


@pytest.mark.exercise("8.3")
def test_merge_attention_equals_attention_over_the_union(ch, rng):
    q = rng.standard_normal((2, 5, 4))  # (H, L, E)
    k, v = rng.standard_normal((2, 9, 4)), rng.standard_normal((2, 9, 3))
    out_a, lse_a, _ = attention_oracle(q, k[:, :4], v[:, :4])
    out_b, lse_b, _ = attention_oracle(q, k[:, 4:] + 1.0, v[:, 4:])
    whole_out, whole_lse, _ = attention_oracle(q, np.concatenate([k[:, :4], k[:, 4:] + 1.0], 1), v)
    out, lse = ch.merge_attention(out_a, lse_a, out_b, lse_b)
    assert_shape(out, whole_out.shape, "merged output")
    assert_close(out, whole_out, what="merged output: weight each part by exp(lse_part - lse)")
    assert_close(lse, whole_lse, what="merged log-sum-exp")


@pytest.mark.exercise("8.3")
def test_merge_attention_gives_an_empty_part_no_weight(ch):
    out_a, lse_a = np.array([[1.0, 2.0], [0.0, 0.0]]), np.array([0.5, np.inf])
    empty_out, empty_lse = np.zeros((2, 2)), np.array([np.inf, np.inf])
    with warnings_as_failures("merging with an empty part (output 0, lse +inf) computed inf - inf; "
                              "treat lse=+inf as zero mass, i.e. log(0) = -inf"):
        out, lse = ch.merge_attention(out_a, lse_a, empty_out, empty_lse)
    assert not np.isnan(out).any() and not np.isnan(lse).any(), (
        "merging with an empty part (output 0, lse +inf) gave NaN; treat lse=+inf as zero mass")
    assert_close(out, out_a, what="output after merging with an empty part (row 1 empty in both)")
    assert_close(lse, np.array([0.5, np.inf]), what="lse after merging: empty in both parts stays +inf")


@pytest.mark.exercise("8.3")
def test_merge_attention_survives_large_lse(ch):
    with warnings_as_failures("exp(1000) overflowed: subtract the larger lse first"):
        out, lse = ch.merge_attention(np.array([[1.0]]), np.array([1000.0]), np.array([[4.0]]),
                                      np.array([1000.0 + np.log(2.0)]))
    assert np.isfinite(out).all(), "exp(1000) overflowed: subtract the larger lse first"
    assert_close(out, np.array([[3.0]]), what="merge of parts with masses 1 : 2 near lse = 1000")
