"""Graded tests for chapter 6: splitting and merging heads, GQA key repeat and its gradient, the KV cache.

Each expected result is built here from its definition, head by head.
"""
import contextlib

import numpy as np
import pytest

from attention_scratch.course.checks import check_close, check_equal, check_scalar, expect_array, expect_tuple
from attention_scratch.course.remote import StudentRaised
from attention_scratch.testing import attention_oracle, attention_oracle_backward


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch06_multi_head")


@contextlib.contextmanager
def explained(what):
    """An error the student's function raises inside the block fails the test saying ``what`` was asked."""
    try:
        yield
    except StudentRaised as error:
        raise AssertionError(f"{what}; your function raised {error}") from None


# Exercise 6.1 ------------------------------------------------------------------------------------


def split_expected(x, H):
    """Head h of token l: features h·D .. h·D + D - 1 of token l. (..., L, H·D) -> (..., H, L, D)."""
    D = x.shape[-1] // H
    return np.stack([x[..., h * D:(h + 1) * D] for h in range(H)], axis=-3)  # (..., H, L, D)


@pytest.mark.exercise("6.1")
def test_split_heads(ch, rng):
    x = rng.standard_normal((2, 5, 12))
    check_equal(ch.split_heads(x, 3), split_expected(x, 3),
                what="split_heads of (B=2, L=5, 12) into 3 heads -> (2, 3, 5, 4): entry (b, h, l, d) is "
                     "feature h·D + d of token l (reshape to (B, L, H, D), then move the head axis before L)")


@pytest.mark.exercise("6.1")
def test_split_heads_any_leading_axes(ch, rng):
    x = rng.standard_normal((2, 3, 5, 8))
    check_equal(ch.split_heads(x, 2), split_expected(x, 2),
                what="split_heads of a (2, 3, 5, 8) input into 2 heads -> (2, 3, 2, 5, 4): "
                     "any number of leading axes, the head axis just before L")
    x = rng.standard_normal((5, 6))
    check_equal(ch.split_heads(x, 3), split_expected(x, 3),
                what="split_heads of a (5, 6) input (no batch axis) into 3 heads -> (3, 5, 2)")


@pytest.mark.exercise("6.1")
def test_split_heads_keeps_float32_and_one_head(ch, rng):
    x = rng.standard_normal((2, 4, 6)).astype(np.float32)
    check_equal(ch.split_heads(x, 2), split_expected(x, 2),
                what="split_heads of float32 (2, 4, 6) into 2 heads: float32 in, float32 out")
    check_equal(ch.split_heads(x, 1), split_expected(x, 1),
                what="split_heads into 1 head -> (2, 1, 4, 6)")


@pytest.mark.exercise("6.1")
def test_split_heads_of_an_empty_sequence(ch):
    x = np.zeros((2, 0, 6))
    what = ("split_heads of (B=2, L=0, 6) into 3 heads -> (2, 3, 0, 2): an empty sequence has no tokens, but its "
            "head width is still 6 // 3 = 2 (reshape(..., num_heads, -1) cannot tell -1 from the size 0 of L: "
            "compute the head width)")
    with explained(what):
        got = ch.split_heads(x, 3)
    check_equal(got, split_expected(x, 3), what=what)


# Exercise 6.2 ------------------------------------------------------------------------------------


def merge_expected(x):
    """Features h·D .. h·D + D - 1 of token l: head h of token l. (..., H, L, D) -> (..., L, H·D)."""
    return np.concatenate([x[..., h, :, :] for h in range(x.shape[-3])], axis=-1)  # (..., L, H·D)


@pytest.mark.exercise("6.2")
def test_merge_heads(ch, rng):
    h = rng.standard_normal((2, 3, 5, 4))
    check_equal(ch.merge_heads(h), merge_expected(h),
                what="merge_heads of (B=2, H=3, L=5, D=4) -> (2, 5, 12): features h·D .. h·D + D - 1 of "
                     "token l are head h's row l (move the head axis after L, then reshape)")


@pytest.mark.exercise("6.2")
def test_merge_heads_any_leading_axes(ch, rng):
    h = rng.standard_normal((2, 2, 3, 5, 4))
    check_equal(ch.merge_heads(h), merge_expected(h),
                what="merge_heads of a (2, 2, 3, 5, 4) input -> (2, 2, 5, 12): any number of leading axes")
    h = rng.standard_normal((3, 5, 2))
    check_equal(ch.merge_heads(h), merge_expected(h),
                what="merge_heads of a (3, 5, 2) input (no batch axis) -> (5, 6)")


@pytest.mark.exercise("6.2")
def test_merge_heads_keeps_float32(ch, rng):
    h = rng.standard_normal((2, 4, 3, 2)).astype(np.float32)
    check_equal(ch.merge_heads(h), merge_expected(h),
                what="merge_heads of float32 (2, 4, 3, 2): float32 in, float32 out")


@pytest.mark.exercise("6.2")
def test_merge_heads_of_an_empty_sequence(ch):
    h = np.zeros((2, 3, 0, 4))
    what = ("merge_heads of (B=2, H=3, L=0, D=4) -> (2, 0, 12): an empty sequence keeps its model width H·D = 12 "
            "(reshape(..., L, -1) cannot infer -1 when L = 0: write H * D)")
    with explained(what):
        got = ch.merge_heads(h)
    check_equal(got, merge_expected(h), what=what)


# Exercise 6.3 ------------------------------------------------------------------------------------


def repeat_expected(x, Hq):
    """Query head h reads key/value head h // G. (..., Hkv, S, D) -> (..., Hq, S, D)."""
    G = Hq // x.shape[-3]
    return np.stack([x[..., h // G, :, :] for h in range(Hq)], axis=-3)  # (..., Hq, S, D)


@pytest.mark.exercise("6.3")
def test_repeat_kv_order(ch, rng):
    kv = rng.standard_normal((2, 2, 5, 3))
    check_equal(ch.repeat_kv(kv, 6), repeat_expected(kv, 6),
                what="repeat_kv of 2 key heads for 6 query heads -> (2, 6, 5, 3): query head h must read "
                     "key head h // 3, in the order 0, 0, 0, 1, 1, 1")


@pytest.mark.exercise("6.3")
def test_repeat_kv_mqa_mha_and_leading_axes(ch, rng):
    kv = rng.standard_normal((3, 1, 4, 2))
    check_equal(ch.repeat_kv(kv, 4), repeat_expected(kv, 4),
                what="repeat_kv of 1 key head for 4 query heads (multi-query attention) -> (3, 4, 4, 2)")
    kv = rng.standard_normal((2, 3, 4, 2))
    check_equal(ch.repeat_kv(kv, 3), kv, what="repeat_kv with as many key heads as query heads: unchanged")
    kv = rng.standard_normal((2, 3, 2, 4, 3))
    check_equal(ch.repeat_kv(kv, 4), repeat_expected(kv, 4),
                what="repeat_kv of a (2, 3, 2, 4, 3) input for 4 query heads -> (2, 3, 4, 4, 3): "
                     "the head axis is the third from the end, whatever comes before it")
    kv = rng.standard_normal((2, 5, 3))
    check_equal(ch.repeat_kv(kv, 4), repeat_expected(kv, 4),
                what="repeat_kv of a (2, 5, 3) input (no batch axis) for 4 query heads -> (4, 5, 3)")


@pytest.mark.exercise("6.3")
def test_repeat_kv_keeps_float32(ch, rng):
    kv = rng.standard_normal((2, 2, 3, 4)).astype(np.float32)
    check_equal(ch.repeat_kv(kv, 4), repeat_expected(kv, 4),
                what="repeat_kv of float32 key heads: float32 in, float32 out")


@pytest.mark.exercise("6.3")
def test_repeat_kv_gives_grouped_query_attention(ch, rng):
    q, k, v = rng.standard_normal((4, 3, 2)), rng.standard_normal((2, 5, 2)), rng.standard_normal((2, 5, 3))
    k_rep = expect_array(ch.repeat_kv(k, 4), shape=(4, 5, 2), what="repeat_kv of 2 key heads for 4 query heads")
    v_rep = expect_array(ch.repeat_kv(v, 4), shape=(4, 5, 3), what="repeat_kv of 2 value heads for 4 query heads")
    out, _, _ = attention_oracle(q, k_rep, v_rep)
    gqa, _, _ = attention_oracle(q, k, v)  # the oracle groups heads itself
    check_close(out, gqa, what="attention with repeated key/value heads vs grouped-query attention")


# Exercise 6.4 ------------------------------------------------------------------------------------


def fold_expected(grad, Hkv):
    """Key/value head g receives the sum over its query heads g·G .. g·G + G - 1, in float64, cast back."""
    G = grad.shape[-3] // Hkv
    g64 = grad.astype(np.float64)
    folded = np.stack([g64[..., i * G:(i + 1) * G, :, :].sum(axis=-3) for i in range(Hkv)], axis=-3)
    return folded.astype(grad.dtype)  # (..., Hkv, S, D)


@pytest.mark.exercise("6.4")
def test_fold_kv_grad_sums_each_group(ch, rng):
    g = rng.standard_normal((2, 6, 5, 3))
    check_close(ch.fold_kv_grad(g, 2), fold_expected(g, 2),
                what="fold_kv_grad of 6 query-head gradients onto 2 key heads -> (2, 2, 5, 3): key head 0 "
                     "gets the sum of query heads 0, 1, 2 and key head 1 the sum of query heads 3, 4, 5")


@pytest.mark.exercise("6.4")
def test_fold_kv_grad_mqa_mha_and_leading_axes(ch, rng):
    g = rng.standard_normal((3, 4, 2, 5))
    check_close(ch.fold_kv_grad(g, 1), fold_expected(g, 1),
                what="fold_kv_grad onto 1 key head (multi-query attention): the sum over all 4 query heads")
    check_close(ch.fold_kv_grad(g, 4), g, what="fold_kv_grad onto as many key heads as query heads: unchanged")
    g = rng.standard_normal((2, 3, 6, 4, 2))
    check_close(ch.fold_kv_grad(g, 3), fold_expected(g, 3),
                what="fold_kv_grad of a (2, 3, 6, 4, 2) gradient onto 3 key heads -> (2, 3, 3, 4, 2): "
                     "the head axis is the third from the end, whatever comes before it")
    g = rng.standard_normal((6, 4, 2))
    check_close(ch.fold_kv_grad(g, 2), fold_expected(g, 2),
                what="fold_kv_grad of a (6, 4, 2) gradient (no batch axis) onto 2 key heads -> (2, 4, 2)")


@pytest.mark.exercise("6.4")
def test_fold_kv_grad_keeps_float32(ch, rng):
    g = rng.standard_normal((2, 8, 3, 4)).astype(np.float32)
    check_close(ch.fold_kv_grad(g, 2), fold_expected(g, 2),
                what="fold_kv_grad of a float32 gradient: float32 in, float32 out")


@pytest.mark.exercise("6.4")
def test_fold_kv_grad_gives_the_gqa_gradient(ch, rng):
    q, k, v = rng.standard_normal((4, 3, 2)), rng.standard_normal((1, 5, 2)), rng.standard_normal((1, 5, 3))
    g = rng.standard_normal((4, 3, 3))
    _, dk_rep, dv_rep = attention_oracle_backward(g, q, np.repeat(k, 4, 0), np.repeat(v, 4, 0))
    _, dk, dv = attention_oracle_backward(g, q, k, v)
    check_close(ch.fold_kv_grad(dk_rep, 1), dk, what="folded key gradient (multi-query attention)")
    check_close(ch.fold_kv_grad(dv_rep, 1), dv, what="folded value gradient (multi-query attention)")


# Exercise 6.5 ------------------------------------------------------------------------------------


def append(ch, buffer, length, new, what):
    """Call the student's append_to_buffer; check that it returns (an array, an int)."""
    out, n = expect_tuple(ch.append_to_buffer(buffer, length, new), 2,
                          what=f"{what}: append_to_buffer must return (buffer, new length)")
    expect_array(out, what=f"{what}: the buffer returned")
    check_scalar(n, length + new.shape[-2], what=f"{what}: the new length, length + n")
    return out, n


@pytest.mark.exercise("6.5")
def test_append_within_capacity_writes_in_place(ch, rng):
    buf = rng.standard_normal((2, 8, 3))
    history = buf[:, :3].copy()
    new = rng.standard_normal((2, 2, 3))
    out, _ = append(ch, buf, 3, new, "appending 2 entries after 3 into capacity 8")
    assert out is buf, ("with room left, write into `buffer` itself and return that same array "
                        "(not a new array, not a view of part of it)")
    check_close(buf[:, :3], history, what="the 3 cached entries must stay as they were")
    check_close(buf[:, 3:5], new, what="the new entries at positions 3, 4")


@pytest.mark.exercise("6.5")
def test_append_that_fills_the_buffer_exactly(ch, rng):
    buf = rng.standard_normal((1, 2, 5, 4))
    history = buf[..., :3, :].copy()
    new = rng.standard_normal((1, 2, 2, 4))
    out, _ = append(ch, buf, 3, new, "appending 2 entries after 3 into capacity 5")
    assert out is buf, ("length + n == capacity (3 + 2 == 5) still fits: grow only when length + n exceeds "
                        "the capacity, and write into `buffer` itself")
    check_close(buf[..., :5, :], np.concatenate([history, new], axis=-2),
                what="the 3 cached entries followed by the 2 new ones")


@pytest.mark.exercise("6.5")
def test_append_grows_and_keeps_the_history(ch, rng):
    buf, length, history = np.zeros((1, 2, 4)), 0, []
    capacities = []
    for step in range(7):
        new = rng.standard_normal((1, 1 if step else 3, 4))
        history.append(new)
        buf, length = append(ch, buf, length, new, f"append number {step + 1} (length {length})")
        capacities.append(buf.shape[1])
    check_close(buf[:, :length], np.concatenate(history, axis=1),
                what="the cached entries after 7 appends, in order (copy them over when the buffer grows)")
    assert capacities == [4, 4, 8, 8, 8, 8, 16], (
        f"capacities after each append {capacities}, expected [4, 4, 8, 8, 8, 8, 16]: grow to "
        "max(2 * capacity, length + n) only when length + n exceeds the capacity")


@pytest.mark.exercise("6.5")
def test_append_more_than_double_the_capacity(ch, rng):
    buf = rng.standard_normal((2, 3, 2, 5)).astype(np.float32)
    history = buf[..., :1, :].copy()
    new = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    out, _ = append(ch, buf, 1, new, "appending 6 entries after 1 into capacity 2")
    expect_array(out, shape=(2, 3, 7, 5), dtype=np.float32,
                 what="the grown float32 buffer: capacity max(2 * 2, 1 + 6) = 7, the dtype of the buffer kept")
    check_close(out[..., :7, :], np.concatenate([history, new], axis=-2),
                what="the cached entry followed by the 6 new ones, for every batch and head")


@pytest.mark.exercise("6.5")
def test_a_grown_buffer_keeps_the_dtype_of_the_buffer(ch, rng):
    buf = rng.standard_normal((1, 2, 4)).astype(np.float32)
    history = buf[:, :2].copy()
    new = rng.standard_normal((1, 1, 4))  # float64 entries for a float32 cache
    out, _ = append(ch, buf, 2, new, "appending 1 float64 entry after 2 into a full float32 buffer of capacity 2")
    expect_array(out, shape=(1, 4, 4), dtype=np.float32,
                 what="the grown buffer for a float32 buffer and float64 `new`: the cache keeps the dtype of "
                 "`buffer` (allocate with dtype=buffer.dtype, not new.dtype), as it does when there is room")
    check_close(out[:, :3], np.concatenate([history, new.astype(np.float32)], axis=1),
                what="the 2 cached entries followed by the new one, stored as float32")
