"""Graded tests for chapter 5: causal masks in both alignments, padding masks, sliding windows.

Each expected mask is built here from its definition, one entry at a time.
"""
import contextlib

import numpy as np
import pytest

from attention_scratch.course.checks import expect_array
from attention_scratch.course.remote import StudentRaised

_SHOWN = 5


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch05_masks")


@contextlib.contextmanager
def explained(what):
    """An error the student's function raises inside the block fails the test saying ``what`` was asked."""
    try:
        yield
    except StudentRaised as error:
        raise AssertionError(f"{what}; your function raised {error}") from None


def from_rule(shape, rule):
    """The boolean array whose entry ``idx`` is ``rule(*idx)``: a mask by its definition."""
    out = np.zeros(shape, dtype=bool)
    for idx in np.ndindex(*shape):
        out[idx] = rule(*idx)
    return out


def check_mask(got, expected, what, axes=("query", "key")):
    """``got`` is a boolean NumPy array equal to ``expected``; differences named by (query, key)."""
    got = expect_array(got, what=what)
    if got.shape != expected.shape:
        raise AssertionError(f"{what}: wrong shape: got {got.shape}, expected {expected.shape}")
    if got.dtype != bool:
        raise AssertionError(f"{what}: dtype {got.dtype}, expected bool (True = may attend); "
                             "return the comparisons themselves, not numbers")
    bad = np.argwhere(got != expected)
    if len(bad):
        names = ", ".join(axes)
        lines = [f"{what}: {len(bad)} of {expected.size} entries differ; first ones ({names}): got vs expected"]
        for idx in bad[:_SHOWN]:
            i = tuple(int(k) for k in idx)
            lines.append(f"    {i}: {bool(got[i])} vs {bool(expected[i])}")
        raise AssertionError("\n".join(lines))


# Exercise 5.1 ------------------------------------------------------------------------------------


def causal_expected(L, S, offset):
    return from_rule((L, S), lambda i, j: j <= i + offset)


@pytest.mark.exercise("5.1")
def test_causal_top_left(ch):
    for L, S in [(4, 4), (2, 5), (5, 3), (1, 1), (3, 1)]:
        check_mask(ch.causal_keep(L, S, "top_left"), causal_expected(L, S, 0),
                   f"top-left causal mask, L={L}, S={S}: query i keeps keys j <= i")


@pytest.mark.exercise("5.1")
def test_causal_bottom_right(ch):
    for L, S in [(4, 4), (2, 5), (5, 3), (1, 6), (6, 2)]:
        check_mask(ch.causal_keep(L, S, "bottom_right"), causal_expected(L, S, S - L),
                   f"bottom-right causal mask, L={L}, S={S}: query i keeps keys j <= i + S - L "
                   "(the last query sees every key)")


@pytest.mark.exercise("5.1")
def test_causal_default_and_empty(ch):
    check_mask(ch.causal_keep(3, 5), causal_expected(3, 5, 0),
               "causal_keep(3, 5) without align: the default is top-left")
    for L, S in [(0, 4), (3, 0)]:
        for align in ("top_left", "bottom_right"):
            check_mask(ch.causal_keep(L, S, align), np.zeros((L, S), bool),
                       f"causal mask with L={L}, S={S}, {align}: an empty (L, S) array")


# Exercise 5.2 ------------------------------------------------------------------------------------


@pytest.mark.exercise("5.2")
def test_lengths_keep(ch):
    lengths = np.array([3, 0, 4])
    check_mask(ch.lengths_keep(lengths, 4), from_rule((3, 4), lambda b, j: j < lengths[b]),
               "padding mask for lengths [3, 0, 4], S=4: row b is True on keys j < lengths[b]",
               axes=("sequence", "key"))


@pytest.mark.exercise("5.2")
def test_lengths_keep_one_sequence(ch):
    check_mask(ch.lengths_keep(np.array([2]), 6), np.array([[1, 1, 0, 0, 0, 0]], bool),
               "padding mask for one sequence of length 2 padded to 6: shape (B, S) = (1, 6)",
               axes=("sequence", "key"))


@pytest.mark.exercise("5.2")
def test_lengths_keep_more_sequences_than_keys(ch):
    lengths = np.array([5, 1, 0, 3, 5, 2, 4], dtype=np.int32)
    check_mask(ch.lengths_keep(lengths, 5), from_rule((7, 5), lambda b, j: j < lengths[b]),
               "padding mask for 7 int32 lengths [5, 1, 0, 3, 5, 2, 4], S=5: shape (B, S) = (7, 5)",
               axes=("sequence", "key"))
    square = np.array([1, 4, 2, 0])
    check_mask(ch.lengths_keep(square, 4), from_rule((4, 4), lambda b, j: j < square[b]),
               "padding mask for lengths [1, 4, 2, 0], S=4 (B == S): row b belongs to sequence b",
               axes=("sequence", "key"))


@pytest.mark.exercise("5.2")
def test_lengths_keep_with_small_integer_dtypes(ch):
    unsigned = np.array([3, 0, 4], dtype=np.uint8)
    check_mask(ch.lengths_keep(unsigned, 4), from_rule((3, 4), lambda b, j: j < unsigned[b]),
               "padding mask for uint8 lengths [3, 0, 4], S=4 (an unsigned subtraction such as "
               "lengths - j wraps around below 0: compare j < lengths[b] instead)",
               axes=("sequence", "key"))
    small = np.array([100, 2], dtype=np.int8)
    check_mask(ch.lengths_keep(small, 200), from_rule((2, 200), lambda b, j: j < small[b]),
               "padding mask for int8 lengths [100, 2], S=200 (key positions up to 199 do not fit in int8: "
               "build them with np.arange(S), not np.arange(S, dtype=lengths.dtype))",
               axes=("sequence", "key"))


@pytest.mark.exercise("5.2")
def test_lengths_keep_of_an_empty_batch(ch):
    what = ("padding mask for an empty batch (B = 0 lengths), S=4: an empty (0, 4) mask (compare the positions "
            "with the lengths in one broadcast; np.stack of no rows fails)")
    with explained(what):
        got = ch.lengths_keep(np.zeros(0, dtype=np.int64), 4)
    check_mask(got, np.zeros((0, 4), dtype=bool), what, axes=("sequence", "key"))


# Exercise 5.3 ------------------------------------------------------------------------------------


def window_expected(L, S, left, right, offset):
    def rule(i, j):
        centre = i + offset
        return (left is None or j >= centre - left) and (right is None or j <= centre + right)

    return from_rule((L, S), rule)


@pytest.mark.exercise("5.3")
def test_window_bottom_right(ch):
    for L, S, left, right in [(4, 9, 2, 0), (6, 6, 1, 1), (5, 3, None, 0), (3, 8, 2, None),
                              (5, 7, 0, 0), (4, 6, 1, 3), (7, 4, 2, 1)]:
        check_mask(ch.window_keep(L, S, left, right, "bottom_right"), window_expected(L, S, left, right, S - L),
                   f"window left={left}, right={right}, L={L}, S={S}, bottom-right: query i keeps keys "
                   "i' - left <= j <= i' + right with i' = i + S - L (None: no limit on that side)")


@pytest.mark.exercise("5.3")
def test_window_top_left(ch):
    for L, S, left, right in [(3, 5, 1, 1), (6, 4, 2, 0), (4, 8, 0, 3), (5, 5, None, 1), (2, 7, 1, None)]:
        check_mask(ch.window_keep(L, S, left, right, "top_left"), window_expected(L, S, left, right, 0),
                   f"window left={left}, right={right}, L={L}, S={S}, top-left: query i keeps keys "
                   "i - left <= j <= i + right (None: no limit on that side)")


@pytest.mark.exercise("5.3")
def test_window_defaults(ch):
    check_mask(ch.window_keep(4, 7, 2), window_expected(4, 7, 2, 0, 3),
               "window_keep(4, 7, 2): the defaults are right=0 and align='bottom_right'")
    check_mask(ch.window_keep(3, 5, None, None), np.ones((3, 5), bool),
               "window_keep(3, 5, None, None): no limit on either side keeps every key")
