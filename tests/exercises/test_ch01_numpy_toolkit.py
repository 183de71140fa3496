"""Graded tests for chapter 1 (exercises/ch01_numpy_toolkit.py).

Each test names its exercise with ``@pytest.mark.exercise``; an exercise earns
its points when all of its tests pass. References are computed independently:
in float64 on small inputs where the textbook formula is exact enough, or from
identities (shift invariance, known closed forms).
"""
import numpy as np
import pytest

from attention_scratch.testing import assert_close, assert_shape

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch01_numpy_toolkit")


def textbook_softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) in float64: exact enough for |x| < 20."""
    e = np.exp(np.asarray(x, dtype=np.float64))
    return e / e.sum(axis=axis, keepdims=True)


def small_scores(rng, shape=(3, 7)):
    return rng.standard_normal(shape) * 3


# Exercise 1.1: stable softmax -------------------------------------------------------------


@pytest.mark.exercise("1.1")
def test_stable_softmax_matches_the_formula_on_small_inputs(ch, rng):
    x = small_scores(rng)
    out = ch.stable_softmax(x)
    assert_shape(out, x.shape, "stable_softmax(x) for x of shape (3, 7)")
    assert_close(out, textbook_softmax(x), what="stable_softmax(x) on small inputs")


@pytest.mark.exercise("1.1")
def test_stable_softmax_survives_large_inputs(ch, rng):
    x = small_scores(rng)
    for shift in (1000.0, -1000.0):
        out = ch.stable_softmax(x + shift)
        assert np.isfinite(out).all(), (
            f"stable_softmax(x + {shift:+g}) holds NaN or inf: exp overflowed or underflowed. "
            "Subtract the row maximum before calling np.exp.")
        assert_close(out, textbook_softmax(x),
                     what=f"stable_softmax(x + {shift:+g}) (softmax ignores a constant shift)")


@pytest.mark.exercise("1.1")
def test_stable_softmax_respects_axis_and_dtype(ch, rng):
    x = small_scores(rng, (4, 5)).astype(np.float32)
    out = ch.stable_softmax(x, axis=0)
    assert out.dtype == np.float32, f"float32 input gave dtype {out.dtype}; keep the input dtype"
    assert_close(out, textbook_softmax(x, axis=0), what="stable_softmax(x, axis=0) on float32")


@pytest.mark.exercise("1.1")
def test_stable_softmax_gives_minus_inf_zero_weight(ch):
    x = np.array([[0.0, -np.inf, 1.0], [-np.inf, 2.0, 2.0]])
    expected = np.array([[1 / (1 + np.e), 0.0, np.e / (1 + np.e)], [0.0, 0.5, 0.5]])
    assert_close(ch.stable_softmax(x), expected, what="stable_softmax on rows holding -inf")


# Exercise 1.2: masked softmax -------------------------------------------------------------


@pytest.mark.exercise("1.2")
def test_masked_softmax_equals_deleting_the_masked_entries(ch, rng):
    x = small_scores(rng, (2, 6))
    mask = np.array([[True, False, True, True, False, True], [False, True, True, False, True, True]])
    out = ch.masked_softmax(x, mask)
    assert_shape(out, x.shape, "masked_softmax(x, mask)")
    for r in range(2):
        kept = textbook_softmax(x[r][mask[r]])
        assert_close(out[r][mask[r]], kept, what=f"row {r} on its unmasked entries")
        assert_close(out[r][~mask[r]], np.zeros((~mask[r]).sum()),
                     what=f"row {r} on its masked entries (must be exactly 0)")


@pytest.mark.exercise("1.2")
def test_masked_softmax_fully_masked_row_is_zero(ch, rng):
    x = small_scores(rng, (3, 4))
    mask = np.array([[True, True, False, True], [False] * 4, [True] * 4])
    out = ch.masked_softmax(x, mask)
    assert not np.isnan(out).any(), "a fully masked row gave NaN; it must give zeros"
    assert_close(out[1], np.zeros(4), what="the fully masked row 1")
    assert_close(out[2], textbook_softmax(x[2]), what="the unmasked row 2")


@pytest.mark.exercise("1.2")
def test_masked_softmax_nan_in_masked_position_does_not_leak(ch, rng):
    x = small_scores(rng, (2, 5))
    mask = np.ones((2, 5), dtype=bool)
    mask[:, 2] = False
    x_nan = x.copy()
    x_nan[:, 2] = np.nan
    assert_close(ch.masked_softmax(x_nan, mask), ch.masked_softmax(x, mask),
                 what="masked_softmax with NaN hidden under the mask (the NaN must not leak)")


@pytest.mark.exercise("1.2")
def test_masked_softmax_broadcasts_the_mask_and_survives_large_inputs(ch, rng):
    x = small_scores(rng, (3, 5)) + 1000.0
    mask = np.array([[True, True, False, True, False]])  # (1, 5): one mask for every row
    out = ch.masked_softmax(x, mask)
    expected = np.zeros((3, 5))
    expected[:, mask[0]] = textbook_softmax(x[:, mask[0]] - 1000.0)
    assert_close(out, expected, what="masked_softmax(x + 1000, mask of shape (1, 5))")


# Exercise 1.3: logsumexp ------------------------------------------------------------------


@pytest.mark.exercise("1.3")
def test_logsumexp_matches_the_formula_on_small_inputs(ch, rng):
    x = small_scores(rng, (4, 6))
    out = ch.stable_logsumexp(x)
    assert_shape(out, (4,), "stable_logsumexp(x) for x of shape (4, 6) (the axis is removed)")
    assert_close(out, np.log(np.exp(x).sum(axis=-1)), what="stable_logsumexp on small inputs")
    assert_close(ch.stable_logsumexp(x, axis=0), np.log(np.exp(x).sum(axis=0)),
                 what="stable_logsumexp(x, axis=0)")


@pytest.mark.exercise("1.3")
def test_logsumexp_does_not_overflow(ch):
    x = np.array([[1000.0, 1000.0], [-1000.0, -1000.0], [1000.0, -1000.0]])
    expected = np.array([1000 + np.log(2), -1000 + np.log(2), 1000.0])
    out = ch.stable_logsumexp(x)
    assert np.isfinite(out).all(), (
        "stable_logsumexp([1000, 1000]) is not finite: exp(1000) overflowed. "
        "Compute m + log(sum(exp(x - m))) with m the row maximum.")
    assert_close(out, expected, what="stable_logsumexp on rows near ±1000")


@pytest.mark.exercise("1.3")
def test_logsumexp_of_an_empty_row_is_minus_inf(ch):
    x = np.array([[-np.inf, -np.inf, -np.inf], [0.0, -np.inf, 0.0]])
    out = ch.stable_logsumexp(x)
    assert not np.isnan(out).any(), "a row of only -inf gave NaN; the log of an empty sum is -inf"
    assert_close(out, np.array([-np.inf, np.log(2)]), what="stable_logsumexp on rows with -inf")


# Exercise 1.4: the softmax VJP ------------------------------------------------------------


def explicit_jacobian_vjp(grad_out, probs):
    """g J with J = diag(p) - p pᵀ built explicitly, one row at a time (rows on the last axis)."""
    out = np.empty_like(probs)
    for idx in np.ndindex(probs.shape[:-1]):
        p = probs[idx]
        jacobian = np.diag(p) - np.outer(p, p)  # (n, n), symmetric
        out[idx] = grad_out[idx] @ jacobian
    return out


@pytest.mark.exercise("1.4")
def test_softmax_vjp_matches_the_explicit_jacobian(ch, rng):
    probs = textbook_softmax(small_scores(rng, (2, 3, 5)))
    grad_out = rng.standard_normal((2, 3, 5))
    out = ch.softmax_vjp(grad_out, probs)
    assert_shape(out, probs.shape, "softmax_vjp(g, p) for shape (2, 3, 5)")
    assert_close(out, explicit_jacobian_vjp(grad_out, probs),
                 what="softmax_vjp against g @ (diag(p) - p pᵀ), rows on the last axis")


@pytest.mark.exercise("1.4")
def test_softmax_vjp_along_axis_zero(ch, rng):
    probs = textbook_softmax(small_scores(rng, (4, 3)), axis=0)
    grad_out = rng.standard_normal((4, 3))
    expected = explicit_jacobian_vjp(grad_out.T, probs.T).T
    assert_close(ch.softmax_vjp(grad_out, probs, axis=0), expected,
                 what="softmax_vjp(g, p, axis=0): the sum g·p must run along axis 0")


@pytest.mark.exercise("1.4")
def test_softmax_vjp_matches_finite_differences(ch, rng):
    x = small_scores(rng, (3, 4))
    grad_out = rng.standard_normal((3, 4))
    eps = 1e-6
    numeric = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[idx] = eps
        numeric[idx] = ((textbook_softmax(x + step) - textbook_softmax(x - step)) * grad_out).sum() / (2 * eps)
    assert_close(ch.softmax_vjp(grad_out, textbook_softmax(x)), numeric, rtol=1e-6, atol=1e-8,
                 what="softmax_vjp against central differences of sum(softmax(x) * g)")


# Exercise 1.5: numerical gradient ---------------------------------------------------------


def wiggly(x):
    return float(np.sum(np.sin(x) * x**2))


def wiggly_grad(x):
    return np.cos(x) * x**2 + 2 * x * np.sin(x)


@pytest.mark.exercise("1.5")
def test_numerical_gradient_is_accurate_to_second_order(ch, rng):
    x = rng.standard_normal((2, 3))
    out = ch.numerical_gradient(wiggly, x, eps=1e-3)
    assert_shape(out, x.shape, "numerical_gradient(f, x) for x of shape (2, 3)")
    # Central differences err by about eps² = 1e-6 here; a one-sided difference by about eps = 1e-3.
    assert_close(out, wiggly_grad(x), rtol=0, atol=2e-5,
                 what="numerical_gradient with eps=1e-3 (central differences are O(eps²) accurate)")


@pytest.mark.exercise("1.5")
def test_numerical_gradient_leaves_the_input_alone(ch, rng):
    x = rng.standard_normal(4)
    before = x.copy()
    ch.numerical_gradient(wiggly, x)
    assert np.array_equal(x, before), "numerical_gradient changed the caller's x; perturb a copy"


@pytest.mark.exercise("1.5")
def test_numerical_gradient_of_a_quadratic_form(ch, rng):
    a = rng.standard_normal((3, 3))
    x = rng.standard_normal(3)
    out = ch.numerical_gradient(lambda v: float(v @ a @ v), x)
    assert_close(out, (a + a.T) @ x, rtol=1e-6, atol=1e-7, what="gradient of xᵀAx, which is (A + Aᵀ)x")
