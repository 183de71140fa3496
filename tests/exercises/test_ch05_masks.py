"""Graded tests for chapter 5: causal masks in both alignments, padding masks, sliding windows."""
import numpy as np
import pytest

from attention_scratch.testing import reference_mask


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch05_masks")


def assert_mask(got, expected, what):
    got = np.asarray(got)
    assert got.shape == expected.shape, f"{what}: shape {got.shape}, expected {expected.shape}"
    assert got.dtype == bool, f"{what}: dtype {got.dtype}, expected bool (True = may attend)"
    bad = np.argwhere(got != expected)
    first = tuple(int(i) for i in bad[0]) if len(bad) else None  # plain ints print as (0, 2)
    assert len(bad) == 0, (f"{what}: {len(bad)} entries differ; first at (query, key) = "
                           f"{first}: got {got[first]}, expected {expected[first]}")


# Exercise 5.1 ------------------------------------------------------------------------------------


@pytest.mark.exercise("5.1")
def test_causal_top_left(ch):
    for L, S in [(4, 4), (2, 5), (5, 3), (1, 1)]:
        assert_mask(ch.causal_keep(L, S, "top_left"), reference_mask(L, S, is_causal=True),
                    f"top-left causal mask, L={L}, S={S}")


@pytest.mark.exercise("5.1")
def test_causal_bottom_right(ch):
    for L, S in [(4, 4), (2, 5), (5, 3), (1, 6)]:
        assert_mask(ch.causal_keep(L, S, "bottom_right"),
                    reference_mask(L, S, is_causal=True, causal_align="bottom_right"),
                    f"bottom-right causal mask, L={L}, S={S} (the last query sees every key)")


# Exercise 5.2 ------------------------------------------------------------------------------------


@pytest.mark.exercise("5.2")
def test_lengths_keep(ch):
    expected = np.array([[1, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], bool)
    assert_mask(ch.lengths_keep(np.array([3, 0, 4]), 4), expected, "padding mask for lengths [3, 0, 4]")


@pytest.mark.exercise("5.2")
def test_lengths_keep_one_sequence(ch):
    assert_mask(ch.lengths_keep(np.array([2]), 6), np.array([[1, 1, 0, 0, 0, 0]], bool),
                "padding mask for one sequence of length 2 padded to 6")


# Exercise 5.3 ------------------------------------------------------------------------------------


@pytest.mark.exercise("5.3")
def test_window_bottom_right(ch):
    for L, S, left, right in [(4, 9, 2, 0), (6, 6, 1, 1), (5, 3, None, 0), (3, 8, 2, None)]:
        assert_mask(ch.window_keep(L, S, left, right, "bottom_right"),
                    reference_mask(L, S, window=(left, right)),
                    f"sliding window left={left}, right={right}, L={L}, S={S}, bottom-right")


@pytest.mark.exercise("5.3")
def test_window_top_left(ch):
    expected = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 1, 1, 1, 0]], bool)
    assert_mask(ch.window_keep(3, 5, 1, 1, "top_left"), expected,
                "window left=1, right=1, top-left: query i keeps keys i-1..i+1")
