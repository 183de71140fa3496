"""Graded tests for chapter 3: the general score, the concat score, the local-p window."""
import numpy as np
import pytest

from attention_scratch.testing import assert_close, assert_shape


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch03_luong")


@pytest.mark.exercise("3.1")
def test_general_score(ch, rng):
    q, k, W = rng.standard_normal((2, 3)), rng.standard_normal((2, 5, 4)), rng.standard_normal((3, 4))
    got = ch.general_score(q, k, W)
    assert_shape(got, (2, 5), "scores of B=2 queries against S=5 keys")
    expected = np.array([[q[b] @ W @ k[b, s] for s in range(5)] for b in range(2)])
    assert_close(got, expected, what="e_s = h_tᵀ W_a h̄_s (W_a is (Dq, Dk): query on the left)")


@pytest.mark.exercise("3.2")
def test_concat_score(ch, rng):
    q, k = rng.standard_normal((2, 3)), rng.standard_normal((2, 5, 4))
    W, v = rng.standard_normal((7, 6)), rng.standard_normal(6)
    got = ch.concat_score(q, k, W, v)
    assert_shape(got, (2, 5), "scores of B=2 queries against S=5 keys")
    expected = np.array([[v @ np.tanh(np.concatenate([q[b], k[b, s]]) @ W) for s in range(5)]
                         for b in range(2)])
    assert_close(got, expected, what="v_aᵀ tanh(W_a [h_t; h̄_s]) with the query first")


@pytest.mark.exercise("3.2")
def test_concat_score_does_not_mix_batch_rows(ch, rng):
    q, k = rng.standard_normal((3, 2)), rng.standard_normal((3, 4, 2))
    W, v = rng.standard_normal((4, 5)), rng.standard_normal(5)
    full = ch.concat_score(q, k, W, v)
    assert_close(full[1:2], ch.concat_score(q[1:2], k[1:2], W, v), what="row 1 alone vs in the batch")


@pytest.mark.exercise("3.3")
def test_local_window_keep(ch):
    keep, _ = ch.local_window(np.array([0.4, 6.0, 2.5]), np.array([7, 7, 4]), 8, 2)
    assert_shape(keep, (3, 8), "keep")
    assert keep.dtype == bool, f"keep must be boolean; got {keep.dtype}"
    expected = np.array([[1, 1, 1, 0, 0, 0, 0, 0],   # p=0.4: |s - 0.4| <= 2 -> s = 0, 1, 2
                         [0, 0, 0, 0, 1, 1, 1, 0],   # p=6: s = 4..8 clipped to s < 7
                         [0, 1, 1, 1, 0, 0, 0, 0]],  # p=2.5, length 4: s = 1, 2, 3 (4 is padding)
                        dtype=bool)
    for b in range(3):
        assert np.array_equal(keep[b], expected[b]), (
            f"row {b}: got window {keep[b].astype(int).tolist()}, expected "
            f"{expected[b].astype(int).tolist()} (|s - p| <= D and s < length)")


@pytest.mark.exercise("3.3")
def test_local_window_gaussian(ch, rng):
    p = rng.uniform(0, 9, size=4)
    _, gauss = ch.local_window(p, np.full(4, 10), 10, 4)
    s = np.arange(10)
    assert_close(gauss, np.exp(-(s[None] - p[:, None]) ** 2 / (2 * 2.0 ** 2)),
                 what="Gaussian exp(-(s - p)² / 2σ²) with σ = D/2 = 2")
