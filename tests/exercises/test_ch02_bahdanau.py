"""Graded tests for chapter 2: the additive score, the VJP of attention pooling, a GRU step.

References are computed here in float64, one position at a time (loops over the
equations) or by central differences, never with the library's answer. Every
returned array is checked entry by entry, with its shape and dtype (float32 in,
float32 out), through :mod:`attention_scratch.course.checks`; sizes are ragged so
that a swapped axis cannot hide.
"""
import numpy as np
import pytest

from attention_scratch.course.checks import check_close, expect_tuple
from attention_scratch.testing import numerical_gradient

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch02_bahdanau")


def softmax(e):
    z = np.exp(e - e.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


# Exercise 2.1 ------------------------------------------------------------------------------------


def additive_loops(q, k, v):
    """e_j = v·tanh(q + k_j) and the hidden layer, position by position, in float64, leading axes broadcast."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    q, k = np.broadcast_arrays(q[..., None, :], k)  # (..., S, A) both
    hidden = np.empty(q.shape)
    scores = np.empty(q.shape[:-1])
    for idx in np.ndindex(q.shape[:-1]):  # every leading index and every key j
        hidden[idx] = [np.tanh(q[idx][a] + k[idx][a]) for a in range(q.shape[-1])]
        scores[idx] = sum(v[a] * hidden[idx][a] for a in range(q.shape[-1]))
    return scores, hidden


def check_additive(got, q, k, v, shapes, dtype=np.float64):
    scores, hidden = expect_tuple(got, 2, what=f"additive_score for {shapes}: return (scores, hidden)")
    ref_scores, ref_hidden = additive_loops(q, k, v)
    check_close(hidden, ref_hidden.astype(dtype),
                what=f"the hidden layer tanh(q + k_j) for {shapes} (add q to every key row, then tanh)")
    check_close(scores, ref_scores.astype(dtype),
                what=f"the scores e_j = v·tanh(q + k_j) for {shapes} (contract the hidden layer with v)")


@pytest.mark.exercise("2.1")
def test_additive_score_against_the_loops(ch, rng):
    q, k, v = rng.standard_normal((2, 4)), rng.standard_normal((2, 5, 4)), rng.standard_normal(4)
    check_additive(ch.additive_score(q, k, v), q, k, v, "query_proj (2, 4), keys_proj (2, 5, 4), v (4,)")


@pytest.mark.exercise("2.1")
def test_additive_score_with_leading_axes(ch, rng):
    q, k, v = rng.standard_normal((2, 3, 6)), rng.standard_normal((2, 1, 5, 6)), rng.standard_normal(6)
    check_additive(ch.additive_score(q, k, v), q, k, v,
                   "query_proj (2, 3, 6), keys_proj (2, 1, 5, 6), v (6,): use ... so that leading axes broadcast")
    q1, k1, v1 = rng.standard_normal(3), rng.standard_normal((7, 3)), rng.standard_normal(3)
    check_additive(ch.additive_score(q1, k1, v1), q1, k1, v1,
                   "one query: query_proj (3,), keys_proj (7, 3), v (3,) (no batch axis at all)")


@pytest.mark.exercise("2.1")
def test_additive_score_keeps_float32(ch, rng):
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((3, 4), (3, 6, 4), (4,)))
    check_additive(ch.additive_score(q, k, v), q, k, v, "float32 inputs (the results stay float32)",
                   dtype=np.float32)


# Exercise 2.2 ------------------------------------------------------------------------------------


def pooling_backward_loops(g, weights, values):
    """dL/de and dL/dvalues one row at a time, with the softmax Jacobian built explicitly, in float64."""
    g, weights, values = (np.asarray(a, dtype=np.float64) for a in (g, weights, values))
    d_e = np.empty(weights.shape)
    d_values = np.empty(values.shape)
    for idx in np.ndindex(weights.shape[:-1]):
        alpha, h = weights[idx], values[idx]  # (S,), (S, Dv)
        d_values[idx] = np.outer(alpha, g[idx])  # (S, Dv): α_j g
        d_alpha = h @ g[idx]  # (S,)
        d_e[idx] = (np.diag(alpha) - np.outer(alpha, alpha)) @ d_alpha  # (S,)
    return d_e, d_values


def check_pooling(got, g, weights, values, shapes, dtype=np.float64):
    d_scores, d_values = expect_tuple(got, 2, what=f"attention_pooling_backward for {shapes}: "
                                      "return (grad_scores, grad_values)")
    ref_scores, ref_values = pooling_backward_loops(g, weights, values)
    check_close(d_values, ref_values.astype(dtype),
                what=f"dL/dvalues for {shapes} (entry j is α_j · dL/dc)")
    check_close(d_scores, ref_scores.astype(dtype),
                what=f"dL/dscores for {shapes} (the softmax VJP of dL/dα_j = h_j · dL/dc: "
                "α ∘ (dL/dα - Σ_j α_j dL/dα_j), the sum over the keys)")


@pytest.mark.exercise("2.2")
def test_pooling_backward_matches_finite_differences(ch, rng):
    e, values, g = rng.standard_normal((3, 6)), rng.standard_normal((3, 6, 2)), rng.standard_normal((3, 2))
    d_scores, d_values = expect_tuple(ch.attention_pooling_backward(g, softmax(e), values), 2,
                                      what="attention_pooling_backward: return (grad_scores, grad_values)")

    def loss_e(x):
        return float(np.sum(np.einsum("bs,bsd->bd", softmax(x), values) * g))

    def loss_v(x):
        return float(np.sum(np.einsum("bs,bsd->bd", softmax(e), x) * g))

    check_close(d_values, numerical_gradient(loss_v, values), rtol=1e-6, atol=1e-9,
                what="dL/dvalues = α_j · dL/dc against central differences (values (3, 6, 2))")
    check_close(d_scores, numerical_gradient(loss_e, e), rtol=1e-6, atol=1e-9,
                what="dL/dscores against central differences: the softmax VJP α ∘ (dL/dα - Σ_j α_j dL/dα_j) "
                "of dL/dα_j = h_j · dL/dc, the sum over the keys of each row")


@pytest.mark.exercise("2.2")
def test_pooling_backward_with_leading_axes(ch, rng):
    weights = softmax(rng.standard_normal((2, 3, 5)))
    values, g = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((2, 3, 4))
    check_pooling(ch.attention_pooling_backward(g, weights, values), g, weights, values,
                  "grad_context (2, 3, 4), weights (2, 3, 5), values (2, 3, 5, 4)")


@pytest.mark.exercise("2.2")
def test_pooling_backward_gives_masked_positions_zero(ch, rng):
    weights = np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.2, 0.3, 0.5], [0.0, 0.0, 0.0, 0.0],
                        [1e-4, 0.4999, 0.2, 0.3]])  # row 2: fully masked; row 3: a tiny weight, not a masked one
    values, g = rng.standard_normal((4, 4, 3)), rng.standard_normal((4, 3))
    got = ch.attention_pooling_backward(g, weights, values)
    if isinstance(got, (tuple, list)) and len(got) == 2 and isinstance(got[0], np.ndarray) \
            and got[0].shape == weights.shape and np.isnan(got[0][2]).any():
        raise AssertionError(
            "attention_pooling_backward: a fully masked row (every weight 0) gave NaN in dL/dscores; its "
            "gradient is 0. The softmax VJP α ∘ (dL/dα - Σ_j α_j dL/dα_j) needs no division: do not divide "
            "by the sum of the weights, which is 0 there.")
    check_pooling(got, g, weights, values, "masked positions (weight 0 must give gradient exactly 0; row 2 is "
                  "fully masked, row 3 holds a tiny weight 1e-4 whose gradient is small but not 0)")
    d_scores, d_values = got
    if np.any(d_scores[weights == 0] != 0) or np.any(d_values[weights == 0] != 0):
        raise AssertionError("attention_pooling_backward: masked positions (weight 0) must get gradient exactly 0")


@pytest.mark.exercise("2.2")
def test_pooling_backward_keeps_float32(ch, rng):
    weights = softmax(rng.standard_normal((3, 5))).astype(np.float32)
    values = rng.standard_normal((3, 5, 4)).astype(np.float32)
    g = rng.standard_normal((3, 4)).astype(np.float32)
    check_pooling(ch.attention_pooling_backward(g, weights, values), g, weights, values,
                  "float32 inputs (the results stay float32)", dtype=np.float32)


# Exercise 2.3 ------------------------------------------------------------------------------------


def reference_gru(x_proj, h, W_h, b_h):
    """The GRU equations unit by unit, in float64: (h_new, r, z, n, hh_n)."""
    x_proj, h, W_h, b_h = (np.asarray(a, dtype=np.float64) for a in (x_proj, h, W_h, b_h))
    B, H = h.shape
    out = [np.empty((B, H)) for _ in range(5)]
    for b in range(B):
        for k in range(H):
            hh = [h[b] @ W_h[:, gate * H + k] + b_h[gate * H + k] for gate in range(3)]  # reset, update, new
            r = 1 / (1 + np.exp(-(x_proj[b, k] + hh[0])))
            z = 1 / (1 + np.exp(-(x_proj[b, H + k] + hh[1])))
            n = np.tanh(x_proj[b, 2 * H + k] + r * hh[2])
            for array, value in zip(out, ((1 - z) * n + z * h[b, k], r, z, n, hh[2])):
                array[b, k] = value
    return tuple(out)


GRU_NAMES = ("h_new = (1 - z) ∘ n + z ∘ h", "r (reset gate, the first block of H columns)",
             "z (update gate, the middle block)", "n (candidate: tanh(x_n + r ∘ hh_n), the bias inside hh_n)",
             "hh_n = h W_hn + b_hn (the last block of h @ W_h + b_h, before the reset gate multiplies it)")
GRU_ORDER = (1, 2, 4, 3, 0)  # check r, z, hh_n, n, then h_new: the first wrong piece is the one reported


def check_gru(got, args, shapes, dtype=np.float64):
    got = expect_tuple(got, 5, what=f"gru_step for {shapes}: return (h_new, r, z, n, hh_n)")
    expected = reference_gru(*args)
    for i in GRU_ORDER:
        check_close(got[i], expected[i].astype(dtype), what=f"{GRU_NAMES[i]}, for {shapes}")


def gru_args(rng, B, H, dtype=np.float64):
    return tuple(rng.standard_normal(s).astype(dtype) for s in ((B, 3 * H), (B, H), (H, 3 * H), (3 * H,)))


@pytest.mark.exercise("2.3")
def test_gru_step_against_the_equations(ch, rng):
    args = gru_args(rng, 4, 3)
    check_gru(ch.gru_step(*args), args, "B = 4, H = 3")


@pytest.mark.exercise("2.3")
def test_gru_step_gate_order_and_update_direction(ch, rng):
    """With a huge update-gate bias, z = 1 and the state is copied unchanged."""
    H = 2
    x_proj, h = np.zeros((1, 3 * H)), rng.standard_normal((1, H))
    W_h, b_h = np.zeros((H, 3 * H)), np.zeros(3 * H)
    b_h[H:2 * H] = 50.0
    got = expect_tuple(ch.gru_step(x_proj, h, W_h, b_h), 5, what="gru_step: return (h_new, r, z, n, hh_n)")
    check_close(got[0], h, rtol=1e-9, atol=1e-12,
                what="h_new when z = 1 (h' = (1 - z) n + z h; the update gate is the middle block)")


@pytest.mark.exercise("2.3")
def test_gru_step_one_sequence_and_one_unit(ch, rng):
    for B, H in ((1, 5), (3, 1)):
        args = gru_args(rng, B, H)
        check_gru(ch.gru_step(*args), args, f"B = {B}, H = {H}")


@pytest.mark.exercise("2.3")
def test_gru_step_keeps_float32(ch, rng):
    args = gru_args(rng, 3, 4, np.float32)
    check_gru(ch.gru_step(*args), args, "float32 inputs, B = 3, H = 4 (the results stay float32)",
              dtype=np.float32)
