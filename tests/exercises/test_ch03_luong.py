"""Graded tests for chapter 3: the general score, the concat score, the local-p window.

References are computed here in float64, one sentence and one source position
at a time, as the equations read. Every returned array is checked entry by entry,
with its shape and dtype (float32 in, float32 out for the scores; a boolean
window and a float64 Gaussian), through :mod:`attention_scratch.course.checks`.
Sizes are ragged (Dq, Dk, A, S and B all different) so that a swapped axis
cannot hide; one test uses a square W_a so that a transposed W_a cannot either.
"""
import numpy as np
import pytest

from attention_scratch.course.checks import check_close, check_equal, expect_tuple

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch03_luong")


# Exercise 3.1 ------------------------------------------------------------------------------------


def general_loops(q, k, W):
    q, k, W = (np.asarray(a, dtype=np.float64) for a in (q, k, W))
    return np.array([[q[b] @ W @ k[b, s] for s in range(k.shape[1])] for b in range(k.shape[0])])


@pytest.mark.exercise("3.1")
def test_general_score_with_a_square_W_a(ch, rng):
    q, k, W = rng.standard_normal((3, 4)), rng.standard_normal((3, 5, 4)), rng.standard_normal((4, 4))
    check_close(ch.general_score(q, k, W), general_loops(q, k, W),
                what="e_s = h_tᵀ W_a h̄_s for a square, non-symmetric W_a (4, 4): the query multiplies W_a "
                "from the left (query @ W_a), the keys from the right")


@pytest.mark.exercise("3.1")
def test_general_score(ch, rng):
    q, k, W = rng.standard_normal((2, 3)), rng.standard_normal((2, 5, 4)), rng.standard_normal((3, 4))
    check_close(ch.general_score(q, k, W), general_loops(q, k, W),
                what="e_s = h_tᵀ W_a h̄_s for query (2, 3), keys (2, 5, 4), W_a (3, 4): scores (2, 5), "
                "each sentence's query against its own keys")


@pytest.mark.exercise("3.1")
def test_general_score_keeps_float32(ch, rng):
    q, k, W = (rng.standard_normal(s).astype(np.float32) for s in ((4, 6), (4, 7, 5), (6, 5)))
    check_close(ch.general_score(q, k, W), general_loops(q, k, W).astype(np.float32),
                what="general_score for float32 inputs (the scores stay float32)")


@pytest.mark.exercise("3.1")
def test_general_score_keeps_axes_of_size_one(ch, rng):
    for B, S in ((1, 5), (3, 1), (1, 1)):
        q, k, W = rng.standard_normal((B, 3)), rng.standard_normal((B, S, 4)), rng.standard_normal((3, 4))
        check_close(ch.general_score(q, k, W), general_loops(q, k, W),
                    what=f"general_score for a batch of B={B} and S={S} source positions: the scores have shape "
                    f"({B}, {S}) even when an axis has size 1 (squeeze only the axis you added, "
                    "squeeze(-1), never squeeze())")


# Exercise 3.2 ------------------------------------------------------------------------------------


def concat_loops(q, k, W, v):
    q, k, W, v = (np.asarray(a, dtype=np.float64) for a in (q, k, W, v))
    return np.array([[v @ np.tanh(np.concatenate([q[b], k[b, s]]) @ W) for s in range(k.shape[1])]
                     for b in range(k.shape[0])])


@pytest.mark.exercise("3.2")
def test_concat_score_does_not_mix_sentences(ch, rng):
    q, k = rng.standard_normal((3, 2)), rng.standard_normal((3, 4, 2))
    W, v = rng.standard_normal((4, 5)), rng.standard_normal(5)
    full = ch.concat_score(q, k, W, v)
    for b in range(3):
        check_close(ch.concat_score(q[b:b + 1], k[b:b + 1], W, v), concat_loops(q[b:b + 1], k[b:b + 1], W, v),
                    what=f"concat_score for sentence {b} alone (a batch of one): v_aᵀ tanh(W_a [h_t ; h̄_s]), "
                    "with the query first in the concatenation and the tanh between the product with W_a "
                    "and the one with v_a")
    check_close(full, concat_loops(q, k, W, v),
                what="concat_score for a batch of 3 sentences: each sentence's own query must be paired with "
                "each of its own keys (each sentence alone was right, so in the batch a query met another "
                "sentence's keys: check how the query is repeated along the key axis)")


@pytest.mark.exercise("3.2")
def test_concat_score(ch, rng):
    q, k = rng.standard_normal((2, 3)), rng.standard_normal((2, 5, 4))
    W, v = rng.standard_normal((7, 6)), rng.standard_normal(6)
    check_close(ch.concat_score(q, k, W, v), concat_loops(q, k, W, v),
                what="v_aᵀ tanh(W_a [h_t; h̄_s]) with the query first, for query (2, 3), keys (2, 5, 4), "
                "W_a (7, 6), v_a (6,): the tanh between the product with W_a and the one with v_a")


@pytest.mark.exercise("3.2")
def test_concat_score_keeps_float32(ch, rng):
    q, k, W, v = (rng.standard_normal(s).astype(np.float32) for s in ((2, 4), (2, 3, 2), (6, 5), (5,)))
    check_close(ch.concat_score(q, k, W, v), concat_loops(q, k, W, v).astype(np.float32),
                what="concat_score for float32 inputs (the scores stay float32)")


# Exercise 3.3 ------------------------------------------------------------------------------------


def window_loops(p, lengths, S, D):
    keep = np.zeros((len(p), S), dtype=bool)
    gauss = np.zeros((len(p), S))
    sigma = D / 2
    for b in range(len(p)):
        for s in range(S):
            keep[b, s] = abs(s - p[b]) <= D and s < lengths[b]
            gauss[b, s] = np.exp(-(s - p[b]) ** 2 / (2 * sigma**2))
    return keep, gauss


def check_window(got, p, lengths, S, D):
    keep, gauss = expect_tuple(got, 2, what=f"local_window(p, lengths, S={S}, D={D}): return (keep, gauss)")
    ref_keep, ref_gauss = window_loops(p, lengths, S, D)
    check_equal(keep, ref_keep,
                what=f"keep for p = {np.round(p, 2).tolist()}, lengths = {np.asarray(lengths).tolist()}, S = {S}, D = {D} "
                "(True where |s - p| <= D and s < length; a boolean array)")
    check_close(gauss, ref_gauss,
                what=f"gauss for p = {np.round(p, 2).tolist()}, S = {S}, D = {D}: exp(-(s - p)² / 2σ²) with "
                "σ = D/2, at every position (inside the window or not)")


@pytest.mark.exercise("3.3")
def test_local_window_keep(ch):
    p, lengths = np.array([0.4, 6.0, 2.5, 2.0]), np.array([7, 7, 4, 8])
    # p=0.4: s = 0, 1, 2; p=6: s = 4..8 clipped to s < 7; p=2.5, length 4: s = 1, 2, 3;
    # p=2: s = 0..4, both ends at |s - p| = D exactly
    check_window(ch.local_window(p, lengths, 8, 2), p, lengths, 8, 2)


@pytest.mark.exercise("3.3")
def test_local_window_odd_half_width(ch, rng):
    p, lengths = rng.uniform(0, 9, size=5), np.array([10, 6, 9, 10, 3])
    check_window(ch.local_window(p, lengths, 10, 3), p, lengths, 10, 3)


@pytest.mark.exercise("3.3")
def test_local_window_gaussian(ch, rng):
    p = rng.uniform(0, 9, size=4)
    lengths = np.full(4, 10)
    check_window(ch.local_window(p, lengths, 10, 4), p, lengths, 10, 4)
    p1 = np.array([11.5])
    check_window(ch.local_window(p1, np.array([13]), 13, 1), p1, np.array([13]), 13, 1)
