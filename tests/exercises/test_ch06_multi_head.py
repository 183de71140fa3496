"""Graded tests for chapter 6: splitting and merging heads, GQA key repeat and its gradient, the KV cache."""
import numpy as np
import pytest

from attention_scratch.testing import (assert_close, assert_shape, attention_oracle,
                                       attention_oracle_backward)


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch06_multi_head")


# Exercise 6.1 ------------------------------------------------------------------------------------


@pytest.mark.exercise("6.1")
def test_split_heads(ch, rng):
    x = rng.standard_normal((2, 5, 12))
    h = ch.split_heads(x, 3)
    assert_shape(h, (2, 3, 5, 4), "split_heads of (B=2, L=5, 12) into 3 heads")
    assert_close(h[1, 2, 4], x[1, 4, 8:12], what="head 2 of token 4 must be features 8..11")


# Exercise 6.2 ------------------------------------------------------------------------------------


@pytest.mark.exercise("6.2")
def test_merge_heads(ch, rng):
    h = rng.standard_normal((2, 3, 5, 4))
    x = ch.merge_heads(h)
    assert_shape(x, (2, 5, 12), "merge_heads of (B=2, H=3, L=5, D=4)")
    assert_close(x[0, 1, 4:8], h[0, 1, 1], what="features 4..7 of token 1 must be head 1")


# Exercise 6.3 ------------------------------------------------------------------------------------


@pytest.mark.exercise("6.3")
def test_repeat_kv_order(ch, rng):
    kv = rng.standard_normal((2, 2, 5, 3))
    rep = ch.repeat_kv(kv, 6)
    assert_shape(rep, (2, 6, 5, 3), "repeat_kv of 2 key heads for 6 query heads")
    for h in range(6):
        assert_close(rep[:, h], kv[:, h // 3], what=f"query head {h} must read key head {h} // 3 = {h // 3}")


@pytest.mark.exercise("6.3")
def test_repeat_kv_gives_grouped_query_attention(ch, rng):
    q, k, v = rng.standard_normal((4, 3, 2)), rng.standard_normal((2, 5, 2)), rng.standard_normal((2, 5, 3))
    out, _, _ = attention_oracle(q, ch.repeat_kv(k, 4), ch.repeat_kv(v, 4))
    gqa, _, _ = attention_oracle(q, k, v)  # the oracle groups heads itself
    assert_close(out, gqa, what="attention with repeated key/value heads vs grouped-query attention")


# Exercise 6.4 ------------------------------------------------------------------------------------


@pytest.mark.exercise("6.4")
def test_fold_kv_grad_sums_each_group(ch, rng):
    g = rng.standard_normal((2, 6, 5, 3))
    folded = ch.fold_kv_grad(g, 2)
    assert_shape(folded, (2, 2, 5, 3), "fold_kv_grad of 6 query-head gradients onto 2 key heads")
    assert_close(folded[:, 1], g[:, 3:6].sum(axis=1), what="key head 1 gets the sum of query heads 3, 4, 5")


@pytest.mark.exercise("6.4")
def test_fold_kv_grad_gives_the_gqa_gradient(ch, rng):
    q, k, v = rng.standard_normal((4, 3, 2)), rng.standard_normal((1, 5, 2)), rng.standard_normal((1, 5, 3))
    g = rng.standard_normal((4, 3, 3))
    _, dk_rep, dv_rep = attention_oracle_backward(g, q, np.repeat(k, 4, 0), np.repeat(v, 4, 0))
    _, dk, dv = attention_oracle_backward(g, q, k, v)
    assert_close(ch.fold_kv_grad(dk_rep, 1), dk, what="folded key gradient (multi-query attention)")
    assert_close(ch.fold_kv_grad(dv_rep, 1), dv, what="folded value gradient (multi-query attention)")


# Exercise 6.5 ------------------------------------------------------------------------------------


@pytest.mark.exercise("6.5")
def test_append_within_capacity_writes_in_place(ch, rng):
    buf = np.zeros((2, 8, 3))
    new = rng.standard_normal((2, 2, 3))
    out, n = ch.append_to_buffer(buf, 3, new)
    assert n == 5, f"the new length must be 3 + 2 = 5; got {n}"
    assert out is buf, "with room left, write into the same buffer (no copy)"
    assert_close(out[:, 3:5], new, what="the new entries at positions 3, 4")


@pytest.mark.exercise("6.5")
def test_append_grows_and_keeps_the_history(ch, rng):
    buf, length, history = np.zeros((1, 2, 4)), 0, []
    capacities = []
    for step in range(7):
        new = rng.standard_normal((1, 1 if step else 3, 4))
        history.append(new)
        buf, length = ch.append_to_buffer(buf, length, new)
        capacities.append(buf.shape[1])
    assert length == 9, f"after appending 3 + 6 entries the length must be 9; got {length}"
    assert_close(buf[:, :length], np.concatenate(history, axis=1), what="the cached entries, in order")
    assert capacities == [4, 4, 8, 8, 8, 8, 16], (
        f"capacities after each append {capacities}; grow to max(2 * capacity, length + n) only when full")
