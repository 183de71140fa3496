"""Graded tests for chapter 7: the sinusoidal encoding, the RoPE rotation, ALiBi slopes and biases."""
import numpy as np
import pytest

from attention_scratch.testing import assert_close, assert_shape


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch07_positions")


# Exercise 7.1 ------------------------------------------------------------------------------------


@pytest.mark.exercise("7.1")
def test_sinusoidal_table_entries(ch):
    pe = ch.sinusoidal_table(50, 8)
    assert_shape(pe, (50, 8), "sinusoidal_table(50, 8)")
    for p, i in [(0, 0), (7, 1), (49, 3)]:
        angle = p / 10000 ** (2 * i / 8)
        assert_close(pe[p, 2 * i], np.sin(angle), what=f"PE[{p}, {2 * i}] = sin({p} / 10000^({2 * i}/8))")
        assert_close(pe[p, 2 * i + 1], np.cos(angle), what=f"PE[{p}, {2 * i + 1}] = cos({p} / 10000^({2 * i}/8))")


@pytest.mark.exercise("7.1")
def test_sinusoidal_table_odd_width_and_base(ch):
    pe = ch.sinusoidal_table(4, 5, base=100.0)
    assert_shape(pe, (4, 5), "sinusoidal_table(4, 5) (odd width: the last column is a sine)")
    assert_close(pe[3, 4], np.sin(3 / 100 ** (4 / 5)), what="PE[3, 4] with base 100")


# Exercise 7.2 ------------------------------------------------------------------------------------


@pytest.mark.exercise("7.2")
def test_rotate_pairs_by_a_quarter_turn(ch):
    x = np.array([[1.0, 2.0, 3.0, 4.0]])
    y = ch.rotate_pairs(x, np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]]))
    assert_close(y, np.array([[-2.0, 1.0, 3.0, 4.0]]),
                 what="pair (1, 2) turned by 90° is (-2, 1); pair (3, 4) by 0° is unchanged")


@pytest.mark.exercise("7.2")
def test_rotate_pairs_relative_positions(ch, rng):
    q, k = rng.standard_normal((1, 6)), rng.standard_normal((1, 6))
    freq = 10000.0 ** (-np.arange(0, 6, 2) / 6)

    def rot(x, pos):
        return ch.rotate_pairs(x, np.cos(pos * freq)[None], np.sin(pos * freq)[None])

    assert_close(np.linalg.norm(rot(q, 5.0)), np.linalg.norm(q), what="a rotation keeps the length")
    assert_close((rot(q, 9.0) @ rot(k, 4.0).T), (rot(q, 105.0) @ rot(k, 100.0).T),
                 what="scores of rotated pairs depend only on the position difference")
    x = rng.standard_normal((2, 3, 4, 6))
    cos, sin = np.cos(np.arange(4)[:, None] * freq), np.sin(np.arange(4)[:, None] * freq)
    assert_shape(ch.rotate_pairs(x, cos, sin), (2, 3, 4, 6), "rotate_pairs with leading axes (2, 3)")


# Exercise 7.3 ------------------------------------------------------------------------------------


@pytest.mark.exercise("7.3")
def test_alibi_slopes_power_of_two(ch):
    assert_close(ch.alibi_slopes(8), np.array([1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32, 1 / 64, 1 / 128, 1 / 256]),
                 what="ALiBi slopes for 8 heads (the paper's 1/2 ... 1/256)")
    assert_close(ch.alibi_slopes(16)[:2], 2.0 ** np.array([-0.5, -1.0]), what="first slopes for 16 heads")


@pytest.mark.exercise("7.3")
def test_alibi_slopes_other_head_counts(ch):
    # 12 heads: 8 slopes of 8 heads, then the 1st, 3rd, 5th, 7th slopes of 16 heads (2^-0.5, 2^-1.5, ...)
    expected = np.r_[2.0 ** -np.arange(1, 9), 2.0 ** -np.array([0.5, 1.5, 2.5, 3.5])]
    got = ch.alibi_slopes(12)
    assert_shape(got, (12,), "alibi_slopes(12)")
    assert_close(got, expected, what="12 heads: the 8 slopes of 8 heads, then every other slope of 16 heads")


# Exercise 7.4 ------------------------------------------------------------------------------------


@pytest.mark.exercise("7.4")
def test_alibi_bias(ch):
    bias = ch.alibi_bias(np.array([0.5, 0.25]), 2, 4)
    assert_shape(bias, (2, 2, 4), "alibi_bias for 2 heads, 2 queries, 4 keys")
    assert_close(bias[0], -0.5 * np.array([[2, 1, 0, 1], [3, 2, 1, 0]]),
                 what="head 0 (slope 1/2): -m·|i' - j| with i' = i + S - L")
    assert_close(bias[1, 1], -0.25 * np.array([3, 2, 1, 0]), what="head 1, last query")
