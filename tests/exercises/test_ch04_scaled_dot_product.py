"""Graded tests for chapter 4: the scaled scores, dropout on the weights, the gradient of the scores."""
import copy

import numpy as np
import pytest

from attention_scratch.course.checks import check_close, check_equal, expect_array, expect_tuple
from attention_scratch.testing import attention_oracle, attention_oracle_backward


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch04_scaled_dot_product")


# Exercise 4.1 ------------------------------------------------------------------------------------


def reference_scores(query, key, scale):
    """``Q Kᵀ · scale`` in float64, cast to the inputs' dtype."""
    scores = np.einsum("...le,...se->...ls", query.astype(np.float64), key.astype(np.float64))  # (..., L, S)
    return (scores * scale).astype(np.result_type(query, key))


@pytest.mark.exercise("4.1")
def test_scaled_scores_one_head(ch, rng):
    q, k = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    check_close(ch.scaled_scores(q, k, 0.5), reference_scores(q, k, 0.5),
                what="scores of 3 queries and 5 keys, (L, E) and (S, E) -> (L, S): entry (i, j) is "
                     "(q_i · k_j) · scale with scale=0.5")


@pytest.mark.exercise("4.1")
def test_scaled_scores_use_the_scale_given(ch, rng):
    q, k = rng.standard_normal((2, 6, 9)), rng.standard_normal((2, 7, 9))
    for scale in (0.125, 1.0, 2.5, 1 / 3):  # 1/sqrt(9) = 1/3 is only one of them
        check_close(ch.scaled_scores(q, k, scale), reference_scores(q, k, scale),
                    what=f"scores (q · k) · scale with scale={scale:g} and E=9: multiply by the scale "
                         "argument as given (it is not always 1/sqrt(E))")


@pytest.mark.exercise("4.1")
def test_scaled_scores_broadcast_leading_axes(ch, rng):
    q, k = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((2, 1, 4, 5))
    check_close(ch.scaled_scores(q, k, 0.7), reference_scores(q, k, 0.7),
                what="scores of queries (2, 3, 6, 5) and keys (2, 1, 4, 5) -> (2, 3, 6, 4) "
                     "(the key's head axis broadcasts; swap only the last two axes of the key)")
    q3 = rng.standard_normal((3, 6, 5))
    check_close(ch.scaled_scores(q3, k, 0.7), reference_scores(q3, k, 0.7),
                what="scores of queries (3, 6, 5) and keys (2, 1, 4, 5) -> (2, 3, 6, 4) "
                     "(leading axes broadcast as in a NumPy matrix product)")


@pytest.mark.exercise("4.1")
def test_scaled_scores_keep_float32(ch, rng):
    q = rng.standard_normal((2, 5, 8)).astype(np.float32)
    k = rng.standard_normal((2, 7, 8)).astype(np.float32)
    check_close(ch.scaled_scores(q, k, 0.3), reference_scores(q, k, 0.3),
                what="scores of float32 queries and keys with scale=0.3: float32 in, float32 out")


# Exercise 4.2 ------------------------------------------------------------------------------------


def check_keep(got, expected, what):
    got = expect_array(got, what=what)
    if got.dtype != bool:
        raise AssertionError(f"{what}: dtype {got.dtype}, expected bool (True where a weight survives); "
                             "return the comparison itself, not numbers")
    check_equal(got, expected, what=what)


@pytest.mark.exercise("4.2")
def test_dropout_draws_one_uniform_array_and_rescales(ch, rng):
    w = rng.random((3, 4, 50))
    before = copy.deepcopy(rng)
    dropped, keep = expect_tuple(ch.dropout_weights(w, 0.3, rng), 2, what="dropout_weights(weights, p, rng)")
    expected_keep = before.random(w.shape) >= 0.3  # (3, 4, 50)
    check_keep(keep, expected_keep, what="keep: rng.random(weights.shape) >= p with p=0.3 "
                                         "(one draw, so that the backward pass can draw it again)")
    check_close(dropped, np.where(expected_keep, w / 0.7, 0.0),
                what="dropped weights with p=0.3: survivors divided by (1 - p), the others 0")
    assert np.array_equal(rng.random(8), before.random(8)), (
        "the generator must draw exactly one rng.random(weights.shape) and nothing else: after the call "
        "it is not where one such draw leaves it")


@pytest.mark.exercise("4.2")
def test_dropout_keeps_float32(ch, rng):
    w = rng.random((2, 6, 9)).astype(np.float32)
    before = copy.deepcopy(rng)
    dropped, keep = expect_tuple(ch.dropout_weights(w, 0.25, rng), 2, what="dropout_weights(weights, p, rng)")
    expected_keep = before.random(w.shape) >= 0.25  # (2, 6, 9)
    check_keep(keep, expected_keep, what="keep for float32 weights with p=0.25")
    expected = np.where(expected_keep, w.astype(np.float64) / 0.75, 0.0).astype(np.float32)
    check_close(dropped, expected, what="dropped float32 weights with p=0.25: float32 in, float32 out")


@pytest.mark.exercise("4.2")
def test_dropout_keeps_the_expectation(ch, rng):
    w = np.full((200, 200), 0.25)
    dropped, keep = expect_tuple(ch.dropout_weights(w, 0.2, rng), 2, what="dropout_weights(weights, 0.2, rng)")
    keep = expect_array(keep, shape=w.shape, what="keep for (200, 200) weights with p=0.2")
    dropped = expect_array(dropped, shape=w.shape, what="dropped (200, 200) weights with p=0.2")
    assert abs(keep.mean() - 0.8) < 0.01, f"fraction kept {keep.mean():.3f}, expected about 1 - p = 0.8"
    assert abs(dropped.mean() - 0.25) < 0.01, (
        f"mean weight after dropout {dropped.mean():.4f}, expected about 0.25: inverted dropout keeps "
        "the expected weights unchanged")


@pytest.mark.exercise("4.2")
def test_dropout_with_p_0_and_p_1(ch, rng):
    w = rng.random((3, 5))
    before = copy.deepcopy(rng)
    dropped, keep = expect_tuple(ch.dropout_weights(w, 0.0, rng), 2, what="dropout_weights(weights, 0.0, rng)")
    check_keep(keep, np.ones(w.shape, bool), what="keep with p=0: every weight survives")
    check_close(dropped, w, what="dropped weights with p=0: unchanged")
    check_one_draw(rng, before, w.shape, 0.0)
    before = copy.deepcopy(rng)
    dropped, keep = expect_tuple(ch.dropout_weights(w, 1.0, rng), 2, what="dropout_weights(weights, 1.0, rng)")
    check_keep(keep, np.zeros(w.shape, bool), what="keep with p=1: no weight survives")
    check_close(dropped, np.zeros_like(w), what="dropped weights with p=1: all 0, not NaN (never divide by 1 - p = 0)")
    check_one_draw(rng, before, w.shape, 1.0)


def check_one_draw(rng, before, shape, p):
    before.random(shape)  # the one draw the call must make
    if not np.array_equal(rng.random(8), before.random(8)):
        raise AssertionError(
            f"dropout_weights(weights, {p}, rng) must draw exactly one rng.random(weights.shape), even when "
            f"p = {p} decides every entry without it: the generator's state after the call must not depend on "
            "p, or every later draw (the next layer's dropout, the backward pass's replay) changes with it. "
            "Do not return early before drawing.")


# Exercise 4.3 ------------------------------------------------------------------------------------


def reference_ds(grad_out, value, probs):
    """``dS = P ∘ (dP - rowsum(dP ∘ P))``, ``dP = dO Vᵀ``, in float64, cast to the inputs' dtype."""
    g, v, p = (a.astype(np.float64) for a in (grad_out, value, probs))
    d_probs = np.einsum("...le,...se->...ls", g, v)  # (..., L, S)
    d_s = p * (d_probs - np.einsum("...ls,...ls->...l", d_probs, p)[..., None])  # (..., L, S)
    return d_s.astype(np.result_type(grad_out, value, probs))


@pytest.mark.exercise("4.3")
def test_scores_gradient_square_with_broadcast_heads(ch, rng):
    # L == S and one head: a row sum without keepdims broadcasts along the wrong axis instead of failing
    g, v = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    p = attention_oracle(rng.standard_normal((1, 6, 5)), rng.standard_normal((1, 6, 5)), v[None])[2][0]  # (6, 6)
    check_close(ch.scores_gradient(g, v, p), reference_ds(g, v, p),
                what="dS for one head of 6 queries and 6 keys, (L, Ev), (S, Ev), (L, S) -> (L, S): "
                     "P ∘ (dP - rowsum(dP ∘ P)), where rowsum(dP ∘ P), taken along the key axis, is one number per "
                     "query row (keep its axis to subtract it from the row)")
    g = rng.standard_normal((2, 3, 6, 4))
    v = rng.standard_normal((2, 1, 6, 4))  # one value head shared by 3 query heads
    p = attention_oracle(rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((2, 1, 6, 5)),
                         v, scale=1.3)[2]  # (2, 3, 6, 6)
    check_close(ch.scores_gradient(g, v, p), reference_ds(g, v, p),
                what="dS for 6 queries and 6 keys, value (2, 1, 6, 4) broadcast over 3 heads: "
                     "P ∘ (dP - rowsum(dP ∘ P)), where rowsum(dP ∘ P), taken along the key axis, is one number per "
                     "query row (keep its axis to subtract it from the row)")


@pytest.mark.exercise("4.3")
def test_scores_gradient_gives_the_oracle_gradients(ch, rng):
    q, k, v = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 6, 3)), rng.standard_normal((2, 6, 4))
    g = rng.standard_normal((2, 5, 4))
    _, _, p = attention_oracle(q, k, v, scale=0.7)
    ds = ch.scores_gradient(g, v, p)
    check_close(ds, reference_ds(g, v, p),
                what="dS for 5 queries, 6 keys, Ev=4: P ∘ (dP - rowsum(dP ∘ P)) with dP = dO Vᵀ, "
                     "the row sum taken along the key axis")
    dq, dk, _ = attention_oracle_backward(g, q, k, v, scale=0.7)
    check_close(ds @ k * 0.7, dq, what="dQ = dS K · scale built from your dS")
    check_close(np.swapaxes(ds, -1, -2) @ q * 0.7, dk, what="dK = dSᵀ Q · scale built from your dS")


@pytest.mark.exercise("4.3")
def test_scores_gradient_is_zero_where_masked(ch, rng):
    q, k, v = rng.standard_normal((1, 4, 3)), rng.standard_normal((1, 5, 3)), rng.standard_normal((1, 5, 2))
    mask = np.tril(np.ones((4, 5), bool))
    mask[2] = False  # query 2 may attend to nothing: its weights are all 0
    _, _, p = attention_oracle(q, k, v, mask)
    g = rng.standard_normal((1, 4, 2))
    check_close(ch.scores_gradient(g, v, p), reference_ds(g, v, p),
                what="dS under a causal mask, query 2 fully masked: 0 wherever P = 0")


@pytest.mark.exercise("4.3")
def test_scores_gradient_keeps_float32(ch, rng):
    q, k, v = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 7, 3)), rng.standard_normal((2, 7, 4))
    g = rng.standard_normal((2, 5, 4))
    p = attention_oracle(q, k, v)[2]
    g32, v32, p32 = (a.astype(np.float32) for a in (g, v, p))
    check_close(ch.scores_gradient(g32, v32, p32), reference_ds(g32, v32, p32),
                what="dS from float32 dO, V and P: float32 in, float32 out")
