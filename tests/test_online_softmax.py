"""The online softmax and its merge operator against the two-pass softmax and log-sum-exp."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import attention_scratch as at
from attention_scratch.online_softmax import (
    merge_attention,
    merge_stats,
    online_logsumexp,
    online_softmax,
    online_stats,
    online_update,
)
from attention_scratch.testing import assert_close


def rows_with_minus_inf(rng, shape=(4, 23)):
    x = rng.standard_normal(shape) * 6
    x[1] = -np.inf  # an empty row
    x[2, ::3] = -np.inf  # scattered masked entries
    x[3] += 800.0  # would overflow a naive exp
    return x


@pytest.mark.parametrize("block", [1, 2, 5, 7, 22, 23, 24, 100])
def test_online_softmax_equals_two_pass_softmax_for_any_block(rng, block):
    x = rows_with_minus_inf(rng)
    assert_close(online_softmax(x, block=block), at.softmax(x),
                 what=f"online_softmax, block={block}")
    assert_close(online_logsumexp(x, block=block), at.logsumexp(x),
                 what=f"online_logsumexp, block={block}")


def test_online_softmax_other_axis_and_dtype(rng):
    x = rng.standard_normal((9, 4)).astype(np.float32) * 5
    out = online_softmax(x, axis=0, block=4)
    assert out.dtype == np.float32
    assert_close(out, at.softmax(x, axis=0), what="online_softmax(axis=0) in float32")


def test_online_stats_are_max_and_shifted_sum(rng):
    x = rng.standard_normal((3, 10))
    m, s = online_stats(x, block=3)
    assert_close(m, x.max(axis=-1), what="running max")
    assert_close(s, np.exp(x - x.max(axis=-1, keepdims=True)).sum(axis=-1), what="running sum")


def test_online_update_from_empty_state_gives_no_nan():
    m, s = online_update(np.array([-np.inf]), np.array([0.0]), np.array([[-np.inf, -np.inf]]))
    assert m[0] == -np.inf and s[0] == 0.0
    m, s = online_update(m, s, np.array([[1.0, -np.inf]]))
    assert m[0] == 1.0 and s[0] == 1.0


def test_online_stats_rejects_bad_block():
    with pytest.raises(ValueError, match="block"):
        online_stats(np.zeros(3), block=0)


# Merge operator: associative, commutative, identity, and equal to the stats of the concatenation.

finite_or_empty = st.lists(st.floats(-50, 50, allow_nan=False), min_size=0, max_size=6)


def stats_of(values):
    x = np.array(values if values else [-np.inf], dtype=np.float64)
    return online_stats(x)


@given(finite_or_empty, finite_or_empty, finite_or_empty)
@settings(max_examples=30)
def test_merge_stats_is_associative_commutative_and_exact(a, b, c):
    sa, sb, sc = stats_of(a), stats_of(b), stats_of(c)
    left = merge_stats(*merge_stats(*sa, *sb), *sc)
    right = merge_stats(*sa, *merge_stats(*sb, *sc))
    swapped = merge_stats(*sb, *sa)
    whole = stats_of(a + b + c)
    for got, what in ((left, "(a∘b)∘c"), (right, "a∘(b∘c)")):
        assert_close(np.array(got), np.array(whole), rtol=1e-12, atol=1e-12, what=what)
    assert_close(np.array(swapped), np.array(merge_stats(*sa, *sb)), what="b∘a against a∘b")


def test_empty_pair_is_the_identity_of_merge_stats():
    m, s = merge_stats(np.float64(2.0), np.float64(3.0), np.float64(-np.inf), np.float64(0.0))
    assert (m, s) == (2.0, 3.0)
    m, s = merge_stats(np.float64(-np.inf), np.float64(0.0), np.float64(-np.inf), np.float64(0.0))
    assert m == -np.inf and s == 0.0


@given(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5), st.integers(0, 2**32 - 1))
@settings(max_examples=25)
def test_merge_attention_equals_attention_over_the_union(na, nb, nc, seed):
    rng = np.random.default_rng(seed)
    n = na + nb + nc
    q = rng.standard_normal((1, 3, 4))  # (H, L, E)
    k = rng.standard_normal((1, n, 4))
    v = rng.standard_normal((1, n, 2))
    parts = []
    for lo, hi in ((0, na), (na, na + nb), (na + nb, n)):
        out, lse, _ = at.testing.attention_oracle(q, k[:, lo:hi], v[:, lo:hi])
        parts.append((out, lse))
    whole_out, whole_lse, _ = at.testing.attention_oracle(q, k, v)
    left = merge_attention(*merge_attention(*parts[0], *parts[1]), *parts[2])
    right = merge_attention(*parts[0], *merge_attention(*parts[1], *parts[2]))
    swapped = merge_attention(*parts[1], *parts[0])
    for (out, lse), what in ((left, "(a∘b)∘c"), (right, "a∘(b∘c)")):
        assert_close(out, whole_out, rtol=1e-12, atol=1e-12, what=f"merged output {what}")
        assert_close(lse, whole_lse, rtol=1e-12, atol=1e-12, what=f"merged lse {what}")
    ab = merge_attention(*parts[0], *parts[1])
    assert_close(swapped[0], ab[0], rtol=1e-13, atol=1e-14,
                 what="commutativity of the output merge")


def test_merge_attention_empty_parts_carry_no_weight():
    out_a, lse_a = np.array([[1.0, 2.0]]), np.array([0.3])
    empty_out, empty_lse = np.zeros((1, 2)), np.array([np.inf])
    out, lse = merge_attention(out_a, lse_a, empty_out, empty_lse)
    assert_close(out, out_a, what="merge with an empty part")
    assert_close(lse, lse_a, what="lse after merging with an empty part")
    out, lse = merge_attention(empty_out, empty_lse, empty_out, empty_lse)
    assert not np.isnan(out).any() and np.all(out == 0) and np.isposinf(lse).all()


def test_merge_attention_survives_large_log_sum_exps():
    out, lse = merge_attention(np.array([[1.0]]), np.array([1000.0]), np.array([[3.0]]),
                               np.array([1000.0]))
    assert_close(out, np.array([[2.0]]), what="merge of two equal-mass parts near lse = 1000")
    assert_close(lse, np.array([1000.0 + np.log(2.0)]), what="merged lse near 1000")


def test_merge_attention_names_the_arguments_and_the_shapes():
    with pytest.raises(ValueError, match=r"out_a and out_b must have the same shape; "
                                         r"got \(2, 3\) and \(3, 3\)"):
        merge_attention(np.zeros((2, 3)), np.zeros(2), np.zeros((3, 3)), np.zeros(3))
    with pytest.raises(ValueError,
                       match=r"out_b \(\.\.\., Ev\) and lse_b \(\.\.\.\) "
                             r"must share .* \(2, 3\) and \(3,\)"):
        merge_attention(np.zeros((2, 3)), np.zeros(2), np.zeros((2, 3)), np.zeros(3))
