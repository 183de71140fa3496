"""Graded tests for chapter 7: the sinusoidal encoding, the RoPE rotation, ALiBi slopes and biases.

Every expected value is computed here in float64 by loops that follow the formulas literally, and
every returned array is compared whole, with its shape and dtype (``checks.check_close``).
"""
import math

import numpy as np
import pytest

from attention_scratch.course.checks import check_close


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch07_positions")


# Exercise 7.1 ------------------------------------------------------------------------------------


def table_by_the_formula(length, d_model, base):
    """PE[p, c] entry by entry: column c belongs to pair i = c // 2; sine on even c, cosine on odd c."""
    pe = np.empty((length, d_model))
    for p in range(length):
        for c in range(d_model):
            angle = p / base ** (2 * (c // 2) / d_model)
            pe[p, c] = math.sin(angle) if c % 2 == 0 else math.cos(angle)
    return pe


FORMULA = "PE[p, 2i] = sin(p / base^(2i/d)), PE[p, 2i+1] = cos(p / base^(2i/d)), p counted from 0"


@pytest.mark.exercise("7.1")
def test_sinusoidal_table_default_base(ch):
    check_close(ch.sinusoidal_table(50, 8), table_by_the_formula(50, 8, 10000.0),
                what=f"sinusoidal_table(50, 8), a float64 array: {FORMULA}, base = 10000")


@pytest.mark.exercise("7.1")
@pytest.mark.parametrize("length,d_model,base", [(12, 6, 100.0), (40, 16, 500.0), (9, 4, 2.0)])
def test_sinusoidal_table_uses_its_base(ch, length, d_model, base):
    check_close(ch.sinusoidal_table(length, d_model, base=base), table_by_the_formula(length, d_model, base),
                what=f"sinusoidal_table({length}, {d_model}, base={base}): {FORMULA} (use the base argument)")


@pytest.mark.exercise("7.1")
@pytest.mark.parametrize("length,d_model,base", [(7, 5, 100.0), (30, 33, 10000.0), (4, 1, 10000.0),
                                                 (1, 7, 10.0)])
def test_sinusoidal_table_odd_widths_and_one_position(ch, length, d_model, base):
    check_close(ch.sinusoidal_table(length, d_model, base=base), table_by_the_formula(length, d_model, base),
                what=f"sinusoidal_table({length}, {d_model}, base={base}): {FORMULA}; an odd d_model "
                "ends with a sine column of its own frequency (pair (d_model - 1) / 2)")


# Exercise 7.2 ------------------------------------------------------------------------------------


def rotate_by_loops(x, cos, sin):
    """y[2i] = x[2i]·cos_i - x[2i+1]·sin_i, y[2i+1] = x[2i]·sin_i + x[2i+1]·cos_i, one pair at a time, float64."""
    x = np.asarray(x, dtype=np.float64)
    half = x.shape[-1] // 2
    cos = np.broadcast_to(np.asarray(cos, dtype=np.float64), x.shape[:-1] + (half,))  # (..., L, D/2)
    sin = np.broadcast_to(np.asarray(sin, dtype=np.float64), x.shape[:-1] + (half,))  # (..., L, D/2)
    y = np.empty_like(x)  # (..., L, D)
    for i in range(half):
        y[..., 2 * i] = x[..., 2 * i] * cos[..., i] - x[..., 2 * i + 1] * sin[..., i]
        y[..., 2 * i + 1] = x[..., 2 * i] * sin[..., i] + x[..., 2 * i + 1] * cos[..., i]
    return y


def angles(positions, D, base=10000.0):
    """cos and sin of the RoPE angles p · base^(-2i/D), (len(positions), D/2) each."""
    theta = np.asarray(positions, dtype=np.float64)[:, None] * base ** (-np.arange(0, D, 2) / D)  # (L, D/2)
    return np.cos(theta), np.sin(theta)


PAIRS = "pair i is (x[..., 2i], x[..., 2i+1]), turned by the angle whose cosine and sine are cos[..., i], sin[..., i]"


@pytest.mark.exercise("7.2")
def test_rotate_pairs_by_a_quarter_turn(ch):
    x = np.array([[1.0, 2.0, 3.0, 4.0]])
    y = ch.rotate_pairs(x, np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]]))
    check_close(y, np.array([[-2.0, 1.0, 3.0, 4.0]]),
                what="pair (x0, x1) = (1, 2) turned by 90° is (-2, 1) (counter-clockwise: y0 = x0·cos - x1·sin); "
                "pair (x2, x3) = (3, 4) turned by 0° stays (3, 4): pairs are features 2i and 2i+1")


@pytest.mark.exercise("7.2")
def test_rotate_pairs_one_head(ch, rng):
    x = rng.standard_normal((5, 8))
    cos, sin = angles([3, 0, 17, 5, 120], 8)
    check_close(ch.rotate_pairs(x, cos, sin), rotate_by_loops(x, cos, sin),
                what=f"rotate_pairs on x (5, 8) with cos, sin (5, 4): {PAIRS}")


@pytest.mark.exercise("7.2")
def test_rotate_pairs_with_leading_axes(ch, rng):
    x = rng.standard_normal((2, 3, 6, 10))  # (B, H, L, D)
    cos, sin = angles(np.arange(6) + 40, 10)  # (L, D/2), shared by every batch and head
    check_close(ch.rotate_pairs(x, cos, sin), rotate_by_loops(x, cos, sin),
                what=f"rotate_pairs on x (2, 3, 6, 10) with cos, sin (6, 5): {PAIRS}; the leading axes broadcast")
    per_batch = [angles(np.arange(6) + offset, 10) for offset in (0, 100)]
    cos = np.stack([c for c, _ in per_batch])[:, None]  # (2, 1, 6, 5): other positions in each batch
    sin = np.stack([s for _, s in per_batch])[:, None]  # (2, 1, 6, 5)
    check_close(ch.rotate_pairs(x, cos, sin), rotate_by_loops(x, cos, sin),
                what="rotate_pairs on x (2, 3, 6, 10) with cos, sin (2, 1, 6, 5) (each batch at its own "
                "positions): cos and sin broadcast against x's leading axes too")


@pytest.mark.exercise("7.2")
def test_rotate_pairs_one_pair(ch, rng):
    x = rng.standard_normal((4, 2))
    cos, sin = angles([1, 2, 3, 4], 2)
    check_close(ch.rotate_pairs(x, cos, sin), rotate_by_loops(x, cos, sin),
                what="rotate_pairs with D = 2 (a single pair per row)")


@pytest.mark.exercise("7.2")
def test_rotate_pairs_keeps_float32(ch, rng):
    x = rng.standard_normal((3, 7, 8)).astype(np.float32)
    cos, sin = (a.astype(np.float32) for a in angles(np.arange(7), 8))
    check_close(ch.rotate_pairs(x, cos, sin), rotate_by_loops(x, cos, sin).astype(np.float32),
                what="rotate_pairs on float32 x, cos and sin (the result must stay float32)")


@pytest.mark.exercise("7.2")
def test_rotate_pairs_relative_positions(ch, rng):
    q, k = rng.standard_normal((1, 6)), rng.standard_normal((1, 6))

    def rot(x, pos):
        cos, sin = angles([pos], 6)
        return ch.rotate_pairs(x, cos, sin)

    check_close(np.linalg.norm(rot(q, 5.0), axis=-1), np.linalg.norm(q, axis=-1),
                what="the length of a rotated vector (a rotation keeps lengths)")
    check_close(rot(q, 9.0) @ rot(k, 4.0).T, rot(q, 105.0) @ rot(k, 100.0).T,
                what="scores of rotated pairs at positions (9, 4) and (105, 100): they depend only on the "
                "position difference")


# Exercise 7.3 ------------------------------------------------------------------------------------


def paper_slopes(n):
    """The slopes as the code released with Press et al. (2022) computes them, as a float64 array."""
    def power_of_two(n):
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start * start ** i for i in range(n)]

    if math.log2(n).is_integer():
        return np.array(power_of_two(n))
    c = 2 ** math.floor(math.log2(n))
    return np.array(power_of_two(c) + list(paper_slopes(2 * c))[0::2][: n - c])


@pytest.mark.exercise("7.3")
def test_alibi_slopes_eight_heads(ch):
    check_close(ch.alibi_slopes(8), np.array([1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32, 1 / 64, 1 / 128, 1 / 256]),
                what="alibi_slopes(8), a float64 array: the paper's 1/2, 1/4, ..., 1/256 "
                "(start 2^(-8/8), ratio 2^(-8/8))")


@pytest.mark.exercise("7.3")
@pytest.mark.parametrize("n", [1, 2, 4, 16, 32])
def test_alibi_slopes_powers_of_two(ch, n):
    check_close(ch.alibi_slopes(n), 2.0 ** (-8.0 * np.arange(1, n + 1) / n),
                what=f"alibi_slopes({n}): 2^(-8/{n}), 2^(-16/{n}), ..., 2^(-8) (start and ratio 2^(-8/n))")


@pytest.mark.exercise("7.3")
@pytest.mark.parametrize("n", [3, 5, 6, 7, 12, 20, 24, 40])
def test_alibi_slopes_other_head_counts(ch, n):
    c = 2 ** math.floor(math.log2(n))
    check_close(ch.alibi_slopes(n), paper_slopes(n),
                what=f"alibi_slopes({n}): the {c} slopes of {c} heads, followed by the first {n - c} of every "
                f"other slope of {2 * c} heads, starting with its first ([0::2]: its 1st, 3rd, 5th, ...)")


# Exercise 7.4 ------------------------------------------------------------------------------------


def bias_by_loops(slopes, L, S):
    bias = np.empty((len(slopes), L, S))
    for h, slope in enumerate(slopes):
        for i in range(L):
            for j in range(S):
                bias[h, i, j] = -slope * abs(i + S - L - j)
    return bias


BIAS = ("bias[h, i, j] = -m_h·|i' - j| with i' = i + S - L (bottom-right aligned), a penalty on keys before "
        "and after i'")


@pytest.mark.exercise("7.4")
def test_alibi_bias_two_heads(ch):
    expected = np.stack([-0.5 * np.array([[2, 1, 0, 1], [3, 2, 1, 0]]),
                         -0.25 * np.array([[2, 1, 0, 1], [3, 2, 1, 0]])])
    check_close(ch.alibi_bias(np.array([0.5, 0.25]), 2, 4), expected,
                what=f"alibi_bias(slopes=[1/2, 1/4], L=2, S=4): {BIAS}")


@pytest.mark.exercise("7.4")
@pytest.mark.parametrize("L,S", [(5, 5), (3, 8), (6, 3), (1, 7), (7, 1)])
def test_alibi_bias_every_alignment(ch, rng, L, S):
    slopes = rng.uniform(0.01, 1.0, 3)
    check_close(ch.alibi_bias(slopes, L, S), bias_by_loops(slopes, L, S),
                what=f"alibi_bias with 3 heads, L={L}, S={S}: {BIAS}")


@pytest.mark.exercise("7.4")
def test_alibi_bias_accepts_a_list_of_slopes(ch):
    slopes = [1 / 2, 1 / 8, 1 / 32, 1 / 128]
    check_close(ch.alibi_bias(slopes, 4, 6), bias_by_loops(slopes, 4, 6),
                what=f"alibi_bias with slopes given as a Python list of 4, L=4, S=6: {BIAS}")
    slopes32 = np.array(slopes, dtype=np.float32)
    check_close(ch.alibi_bias(slopes32, 4, 6), bias_by_loops(slopes32, 4, 6),
                what=f"alibi_bias with float32 slopes, L=4, S=6: the bias is float64 whatever the slopes' dtype "
                f"(np.asarray(slopes, dtype=np.float64), as the function begins): {BIAS}")
