"""Graded tests for chapter 11: the split-KV combine."""
import numpy as np
import pytest

from attention_scratch.testing import assert_close, assert_shape, attention_oracle, warnings_as_failures


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch11_decoding_and_distribution")


@pytest.mark.exercise("11.1")
@pytest.mark.parametrize("edges", [(0, 30), (0, 7, 30), (0, 3, 11, 12, 30)])
def test_combine_splits_equals_attention_over_all_keys(ch, rng, edges):
    q, k, v = rng.standard_normal((3, 1, 8)), rng.standard_normal((3, 30, 8)), rng.standard_normal((3, 30, 5))
    parts = [attention_oracle(q, k[:, a:b], v[:, a:b]) for a, b in zip(edges[:-1], edges[1:])]
    out, lse = ch.combine_splits(np.stack([o for o, _, _ in parts]), np.stack([s for _, s, _ in parts]))
    ref_out, ref_lse, _ = attention_oracle(q, k, v)
    assert_shape(out, ref_out.shape, f"combined output of {len(parts)} splits")
    assert_close(out, ref_out, what=f"combined output of splits at {edges}")
    assert_close(lse, ref_lse, what=f"combined log-sum-exp of splits at {edges}")


@pytest.mark.exercise("11.1")
def test_combine_splits_survives_large_lse(ch):
    outs = np.array([[[1.0, 0.0]], [[3.0, 2.0]]])  # (P=2, L=1, Ev=2)
    lses = np.array([[900.0], [900.0 + np.log(3.0)]])  # (P=2, L=1): masses 1 : 3
    with warnings_as_failures("exp(900) overflowed: subtract the largest lse over the chunks first"):
        out, lse = ch.combine_splits(outs, lses)
    assert np.isfinite(out).all() and np.isfinite(lse).all(), (
        "exp(900) overflowed: subtract the largest lse over the chunks before exponentiating")
    assert_close(out, np.array([[2.5, 1.5]]), what="combine of chunks with masses 1 : 3 near lse = 900")
    assert_close(lse, np.array([900.0 + np.log(4.0)]), what="combined lse near 900")


@pytest.mark.exercise("11.1")
def test_combine_splits_empty_chunks_and_large_lse(ch):
    outs = np.array([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [[3.0, 2.0], [0.0, 0.0]]])
    lses = np.array([[900.0, np.inf], [np.inf, np.inf], [900.0, np.inf]])  # (P=3, L=2)
    with warnings_as_failures("empty chunks (output 0, lse +inf) must carry zero weight: treat lse = "
                              "+inf as log(0) = -inf, and shift by 0 on a row empty in every chunk"):
        out, lse = ch.combine_splits(outs, lses)
    assert not np.isnan(out).any() and not np.isnan(lse).any(), (
        "empty chunks (output 0, lse +inf) gave NaN; they must carry zero weight: treat lse = +inf "
        "as log(0) = -inf, and a row empty in every chunk as output 0, lse +inf")
    assert np.isfinite(out).all(), "exp(900) overflowed: subtract the largest lse first"
    assert_close(out, np.array([[2.0, 1.0], [0.0, 0.0]]), what="combine: equal masses, one empty chunk")
    assert_close(lse, np.array([900.0 + np.log(2.0), np.inf]), what="combined lse (+inf if all empty)")
