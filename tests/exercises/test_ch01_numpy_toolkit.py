"""Graded tests for chapter 1 (exercises/ch01_numpy_toolkit.py).

Each test names its exercise with ``@pytest.mark.exercise``; an exercise earns
its points when all of its tests pass. References are computed here, in
float64, one row at a time or from closed forms, never with the library's
answer. Every returned array is checked entry by entry, with the shape and the
dtype the exercise's docstring promises (float32 in, float32 out), through
:mod:`attention_scratch.course.checks`. Shapes are ragged (every axis a
different size) so that a transposed or forgotten axis cannot hide.
"""
import numpy as np
import pytest

from attention_scratch.course.checks import check_close, expect_array

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch01_numpy_toolkit")


def reference_softmax(x, axis=-1, mask=None):
    """Softmax in float64, one row at a time, over the entries where ``mask`` is True and x > -inf.

    A row with no such entry is all zeros. Entries outside the mask are never read.
    """
    x = np.asarray(x, dtype=np.float64)
    keep = np.ones(x.shape, dtype=bool) if mask is None else np.broadcast_to(mask, x.shape)
    rows, keeps = np.moveaxis(x, axis, -1), np.moveaxis(keep, axis, -1)  # (..., n)
    out = np.zeros(rows.shape)
    for idx in np.ndindex(rows.shape[:-1]):
        live = keeps[idx].copy()
        live[live] = rows[idx][live] != -np.inf  # -inf scores count as masked
        if live.any():
            kept = rows[idx][live]
            e = np.exp(kept - kept.max())
            out[idx][live] = e / e.sum()
    return np.moveaxis(out, -1, axis)


def reference_logsumexp(x, axis=-1):
    """log(sum(exp(x))) in float64, one row at a time, with the conventions of the exercise."""
    x = np.asarray(x, dtype=np.float64)
    rows = np.moveaxis(x, axis, -1)  # (..., n)
    out = np.empty(rows.shape[:-1])
    for idx in np.ndindex(rows.shape[:-1]):
        row = rows[idx]
        m = row.max()
        out[idx] = m if np.isinf(m) else m + np.log(np.exp(row - m).sum())
    return out


def scores(rng, shape, spread=3.0):
    return rng.standard_normal(shape) * spread


# Exercise 1.1: stable softmax -------------------------------------------------------------


@pytest.mark.exercise("1.1")
def test_stable_softmax_matches_the_formula_on_every_entry(ch, rng):
    x = scores(rng, (3, 7))
    check_close(ch.stable_softmax(x), reference_softmax(x),
                what="stable_softmax(x) for float64 x of shape (3, 7), softmax along the last axis")


@pytest.mark.exercise("1.1")
def test_stable_softmax_survives_large_inputs(ch, rng):
    x = scores(rng, (3, 7))
    for shift in (1000.0, -1000.0):
        out = ch.stable_softmax(x + shift)
        if isinstance(out, np.ndarray) and not np.isfinite(out).all():
            raise AssertionError(
                f"stable_softmax(x + {shift:+g}) holds NaN or inf: exp overflowed or underflowed. "
                "Subtract the row maximum before calling np.exp.")
        check_close(out, reference_softmax(x),
                    what=f"stable_softmax(x + {shift:+g}) (softmax ignores a constant shift)")


@pytest.mark.exercise("1.1")
def test_stable_softmax_shifts_each_row_by_its_own_maximum(ch, rng):
    x = scores(rng, (4, 6)) + np.array([[1000.0], [-1000.0], [0.0], [500.0]])  # rows far apart
    out = ch.stable_softmax(x)
    if isinstance(out, np.ndarray) and out.shape == x.shape and not np.isfinite(out).all():
        bad = sorted({int(r) for r in np.argwhere(~np.isfinite(out))[:, 0]})
        raise AssertionError(
            f"stable_softmax(x) for rows around +1000, -1000, 0 and +500 holds NaN or inf in rows {bad}: "
            "subtract each row's own maximum (x.max(axis=axis, keepdims=True)), not one maximum of "
            "the whole array; a row far below the global maximum underflows to 0 / 0.")
    check_close(out, reference_softmax(x), what="stable_softmax(x) for rows around +1000, -1000, 0 and +500")


@pytest.mark.exercise("1.1")
def test_stable_softmax_along_other_axes(ch, rng):
    x = scores(rng, (2, 3, 4))
    for axis in (0, 1, -2):
        check_close(ch.stable_softmax(x, axis=axis), reference_softmax(x, axis=axis),
                    what=f"stable_softmax(x, axis={axis}) for x of shape (2, 3, 4): the maximum, the "
                    "exponentials and the sum all along `axis`, with keepdims=True")


@pytest.mark.exercise("1.1")
def test_stable_softmax_keeps_float32(ch, rng):
    x = (scores(rng, (4, 5)) + 100.0).astype(np.float32)  # exp(100) overflows float32
    check_close(ch.stable_softmax(x), reference_softmax(x).astype(np.float32),
                what="stable_softmax(x) for float32 x near 100 (the result stays float32)")
    check_close(ch.stable_softmax(x, axis=0), reference_softmax(x, axis=0).astype(np.float32),
                what="stable_softmax(x, axis=0) for float32 x (the result stays float32)")


@pytest.mark.exercise("1.1")
def test_stable_softmax_keeps_float16(ch, rng):
    x = scores(rng, (3, 5)).astype(np.float16)
    check_close(ch.stable_softmax(x), reference_softmax(x).astype(np.float16),
                what="stable_softmax(x) for float16 x (the result has the dtype of x: float16, not float32)")


@pytest.mark.exercise("1.1")
def test_stable_softmax_lets_nan_and_inf_make_their_row_nan(ch, rng):
    x = scores(rng, (4, 5))
    x[1, 2] = np.nan
    x[3, 0] = np.inf
    out = expect_array(ch.stable_softmax(x), shape=x.shape, dtype=x.dtype, what="stable_softmax(x)")
    # A NaN makes its whole row NaN; +inf gives NaN at least where it stands (x - max is inf - inf there:
    # exp(x - logsumexp(x)) leaves the other entries 0, the shift by the maximum makes the whole row NaN).
    for row, bad, held in ((1, out[1], "NaN"), (3, out[3, :1], "+inf")):
        if not np.isnan(bad).all():
            raise AssertionError(
                f"stable_softmax(x): row {row} holds {held}, so it must come out NaN (the whole row for NaN, at "
                f"least the entry itself for +inf): a softmax over a NaN or +inf score has no meaning, and "
                f"hiding it hides a bug upstream; got {out[row]}. Do not clean the result with np.nan_to_num, "
                "nanmax or nansum.")
    keep = [0, 2]
    check_close(out[keep], reference_softmax(x[keep]),
                what="stable_softmax(x): rows 0 and 2, which hold no NaN or inf, must not be touched by the "
                "NaN of row 1 or the +inf of row 3")


@pytest.mark.exercise("1.1")
def test_stable_softmax_gives_minus_inf_zero_weight(ch):
    x = np.array([[0.0, -np.inf, 1.0], [-np.inf, 2.0, 2.0]])
    expected = np.array([[1 / (1 + np.e), 0.0, np.e / (1 + np.e)], [0.0, 0.5, 0.5]])
    out = ch.stable_softmax(x)
    check_close(out, expected, what="stable_softmax on rows holding -inf (which gets weight 0)")
    if out[0, 1] != 0 or out[1, 0] != 0:
        raise AssertionError("stable_softmax: an entry equal to -inf must get weight exactly 0")


# Exercise 1.2: masked softmax -------------------------------------------------------------


@pytest.mark.exercise("1.2")
def test_masked_softmax_equals_deleting_the_masked_entries(ch, rng):
    x = scores(rng, (2, 6))
    mask = np.array([[True, False, True, True, False, True], [False, True, True, False, True, True]])
    check_close(ch.masked_softmax(x, mask), reference_softmax(x, mask=mask),
                what="masked_softmax(x, mask) for x of shape (2, 6): the softmax of the kept entries, "
                "exactly 0 at the masked ones")


@pytest.mark.exercise("1.2")
def test_masked_softmax_fully_masked_row_is_zero(ch, rng):
    x = scores(rng, (3, 4))
    x[2, [0, 2]] = -np.inf
    mask = np.array([[True, True, False, True], [False] * 4, [True, False, True, False]])
    out = ch.masked_softmax(x, mask)
    if isinstance(out, np.ndarray) and np.isnan(out).any():
        raise AssertionError(
            "masked_softmax: a fully masked row gave NaN; it must give zeros. Row 1 masks every entry, "
            "and row 2 keeps only -inf scores: both have maximum -inf, and -inf - (-inf) is NaN.")
    check_close(out, reference_softmax(x, mask=mask),
                what="masked_softmax with a fully masked row (row 1) and a row whose kept entries are "
                "all -inf (row 2): both must be all zeros")


@pytest.mark.exercise("1.2")
def test_masked_softmax_ignores_what_is_under_the_mask(ch, rng):
    x = scores(rng, (3, 5))
    mask = np.ones((3, 5), dtype=bool)
    mask[:, 2] = False
    mask[1, 4] = False
    x[:, 2] = [np.nan, np.inf, 1e4]
    x[1, 4] = np.nan
    check_close(ch.masked_softmax(x, mask), reference_softmax(x, mask=mask),
                what="masked_softmax with NaN, +inf and 1e4 under the mask: what is under the mask must "
                "not change anything (take the maximum over the kept entries, np.where(mask, x, -inf), "
                "and never multiply by the mask)")


@pytest.mark.exercise("1.2")
def test_masked_softmax_broadcasts_the_mask_and_survives_large_inputs(ch, rng):
    x = scores(rng, (3, 5)) + np.array([[1000.0], [-1000.0], [0.0]])
    mask = np.array([[True, True, False, True, False]])  # (1, 5): one mask for every row
    check_close(ch.masked_softmax(x, mask), reference_softmax(x, mask=mask),
                what="masked_softmax(x, mask) for x of shape (3, 5) with rows near +1000, -1000 and 0 and "
                "a mask of shape (1, 5) shared by every row")
    x3 = scores(rng, (2, 3, 5))
    mask3 = rng.random((2, 1, 5)) < 0.6  # (2, 1, 5): one mask per leading index, shared over axis 1
    mask3[:, :, 1] = True
    check_close(ch.masked_softmax(x3, mask3), reference_softmax(x3, mask=mask3),
                what="masked_softmax(x, mask) for x of shape (2, 3, 5) and a mask of shape (2, 1, 5)")
    mask1 = np.array([False, True, True, False, True])  # (5,)
    check_close(ch.masked_softmax(x3, mask1), reference_softmax(x3, mask=mask1),
                what="masked_softmax(x, mask) for x of shape (2, 3, 5) and a mask of shape (5,)")


@pytest.mark.exercise("1.2")
def test_masked_softmax_along_other_axes(ch, rng):
    x = scores(rng, (2, 4, 3))
    mask = np.array([True, False, True, True])[None, :, None] & (rng.random((2, 1, 3)) < 0.7)  # (2, 4, 3)
    check_close(ch.masked_softmax(x, mask, axis=1), reference_softmax(x, axis=1, mask=mask),
                what="masked_softmax(x, mask, axis=1) for x of shape (2, 4, 3) (normalise along axis 1)")
    x0 = scores(rng, (3, 2, 4))
    mask0 = rng.random((3, 1, 4)) < 0.6  # (3, 1, 4): broadcasts over axis 1
    mask0[0] = True
    check_close(ch.masked_softmax(x0, mask0, axis=0), reference_softmax(x0, axis=0, mask=mask0),
                what="masked_softmax(x, mask, axis=0) for x of shape (3, 2, 4), mask (3, 1, 4)")


@pytest.mark.exercise("1.2")
def test_masked_softmax_keeps_float32(ch, rng):
    x = (scores(rng, (3, 6)) + 100.0).astype(np.float32)
    mask = rng.random((3, 6)) < 0.6
    mask[:, 0] = True
    mask[2] = False
    check_close(ch.masked_softmax(x, mask), reference_softmax(x, mask=mask).astype(np.float32),
                what="masked_softmax(x, mask) for float32 x near 100 (the result stays float32)")


@pytest.mark.exercise("1.2")
def test_masked_softmax_lets_nan_and_inf_in_kept_entries_make_their_row_nan(ch, rng):
    x = scores(rng, (4, 5))
    mask = np.ones((4, 5), dtype=bool)
    mask[:, 4] = False
    x[:, 4] = np.nan  # under the mask in every row: must not matter
    x[1, 1] = np.nan  # kept: row 1 is NaN
    x[2, 3] = np.inf  # kept: row 2 is NaN
    out = expect_array(ch.masked_softmax(x, mask), shape=x.shape, dtype=x.dtype, what="masked_softmax(x, mask)")
    # A kept NaN makes every kept entry of its row NaN (a masked one may say 0 or NaN); a kept +inf gives NaN
    # at least where it stands.
    for row, bad, held in ((1, out[1][mask[1]], "NaN"), (2, out[2, 3:4], "+inf")):
        if not np.isnan(bad).all():
            raise AssertionError(
                f"masked_softmax(x, mask): row {row} keeps an entry holding {held}, so it must come out NaN "
                f"(every kept entry for NaN, at least the entry itself for +inf); got {out[row]}. Only masked "
                "entries are hidden: NaN or inf in an "
                "entry the row may attend to must show (do not replace it with np.nan_to_num, nanmax or "
                "nansum, and do not test `total > 0`, which is False for a NaN total: test `total == 0` for the "
                "empty row).")
    keep = [0, 3]
    check_close(out[keep], reference_softmax(x[keep], mask=mask[keep]),
                what="masked_softmax(x, mask): rows 0 and 3 keep no NaN (they hold NaN only under the mask) "
                "and must not change")


# Exercise 1.3: logsumexp ------------------------------------------------------------------


@pytest.mark.exercise("1.3")
def test_logsumexp_matches_the_formula_on_small_inputs(ch, rng):
    x = scores(rng, (4, 6))
    check_close(ch.stable_logsumexp(x), np.log(np.exp(x).sum(axis=-1)),
                what="stable_logsumexp(x) for x of shape (4, 6) (the last axis is removed)")


@pytest.mark.exercise("1.3")
def test_logsumexp_does_not_overflow(ch):
    x = np.array([[1000.0, 1000.0], [-1000.0, -1000.0], [1000.0, -1000.0]])
    expected = np.array([1000 + np.log(2), -1000 + np.log(2), 1000.0])
    out = ch.stable_logsumexp(x)
    if isinstance(out, np.ndarray) and not np.isfinite(out).all():
        raise AssertionError(
            "stable_logsumexp on rows [1000, 1000], [-1000, -1000] and [1000, -1000] is not finite: "
            "exp(1000) overflowed, or exp(-2000) underflowed to 0. Compute m + log(sum(exp(x - m))) "
            "with m the maximum of each row (keepdims=True), not of the whole array.")
    check_close(out, expected, what="stable_logsumexp on rows near ±1000")


@pytest.mark.exercise("1.3")
def test_logsumexp_of_an_empty_row_is_minus_inf(ch):
    x = np.array([[-np.inf, -np.inf, -np.inf], [0.0, -np.inf, 0.0], [1.0, np.inf, 2.0]])
    out = ch.stable_logsumexp(x)
    if isinstance(out, np.ndarray) and np.isnan(out).any():
        raise AssertionError(
            "stable_logsumexp gave NaN on a row of only -inf or a row holding +inf: there m = ±inf and "
            "x - m is NaN. The log of an empty sum is -inf, a row holding +inf gives +inf; replace an "
            "infinite m by 0 before subtracting it.")
    check_close(out, np.array([-np.inf, np.log(2), np.inf]),
                what="stable_logsumexp on rows [-inf, -inf, -inf], [0, -inf, 0] and [1, +inf, 2]")


@pytest.mark.exercise("1.3")
def test_logsumexp_of_a_row_holding_nan_is_nan(ch):
    x = np.array([[0.0, np.nan, 1.0], [0.0, 1.0, 2.0]])
    check_close(ch.stable_logsumexp(x), np.array([np.nan, reference_logsumexp(x[1:])[0]]),
                what="stable_logsumexp on rows [0, NaN, 1] and [0, 1, 2]: a row holding NaN gives NaN (never "
                "hide it), the other row its log-sum-exp")


@pytest.mark.exercise("1.3")
def test_logsumexp_of_a_1d_input_keeps_its_dtype(ch, rng):
    x = scores(rng, 5).astype(np.float32)
    out = ch.stable_logsumexp(x)
    if isinstance(out, np.generic):
        out = np.asarray(out)  # a NumPy scalar of the right dtype is as good as a 0-d array
    if isinstance(out, (float, int)):
        raise AssertionError(
            f"stable_logsumexp(x) for a 1-D float32 x returned a Python {type(out).__name__}: it has no "
            "dtype, and float32 must stay float32. Return the 0-d array (or the NumPy scalar) NumPy gives "
            "you; do not convert it with float(...) or .item().")
    check_close(out, np.asarray(reference_logsumexp(x[None])[0], dtype=np.float32),
                what="stable_logsumexp(x) for a 1-D float32 x of 5 entries: a 0-d float32 result")


@pytest.mark.exercise("1.3")
def test_logsumexp_along_other_axes(ch, rng):
    x = scores(rng, (2, 3, 4)) + 500.0
    for axis in (0, 1, -2):
        check_close(ch.stable_logsumexp(x, axis=axis), reference_logsumexp(x, axis=axis),
                    what=f"stable_logsumexp(x, axis={axis}) for x of shape (2, 3, 4) near 500 "
                    "(only `axis` is removed)")
    x1 = scores(rng, (1, 3, 5))
    check_close(ch.stable_logsumexp(x1), reference_logsumexp(x1),
                what="stable_logsumexp(x) for x of shape (1, 3, 5): the result has shape (1, 3) "
                "(remove only `axis`: squeeze(axis), not squeeze())")


@pytest.mark.exercise("1.3")
def test_logsumexp_keeps_float32(ch, rng):
    x = (scores(rng, (3, 5)) + np.array([[100.0], [-100.0], [0.0]])).astype(np.float32)
    check_close(ch.stable_logsumexp(x), reference_logsumexp(x).astype(np.float32),
                what="stable_logsumexp(x) for float32 x with rows near +100, -100 and 0 "
                "(the result stays float32)")


# Exercise 1.4: the softmax VJP ------------------------------------------------------------


def explicit_jacobian_vjp(grad_out, probs, axis=-1):
    """g J with J = diag(p) - p pᵀ built explicitly, one row at a time, in float64."""
    g = np.moveaxis(np.asarray(grad_out, dtype=np.float64), axis, -1)  # (..., n)
    p = np.moveaxis(np.asarray(probs, dtype=np.float64), axis, -1)  # (..., n)
    out = np.empty(p.shape)
    for idx in np.ndindex(p.shape[:-1]):
        jacobian = np.diag(p[idx]) - np.outer(p[idx], p[idx])  # (n, n), symmetric
        out[idx] = g[idx] @ jacobian
    return np.moveaxis(out, -1, axis)


@pytest.mark.exercise("1.4")
def test_softmax_vjp_matches_the_explicit_jacobian(ch, rng):
    x = scores(rng, (2, 3, 5))
    x[0, 1, [1, 3]] = -np.inf  # masked entries: probability 0, gradient 0
    probs = reference_softmax(x)
    grad_out = rng.standard_normal((2, 3, 5))
    check_close(ch.softmax_vjp(grad_out, probs), explicit_jacobian_vjp(grad_out, probs),
                what="softmax_vjp(g, p) against g @ (diag(p) - p pᵀ) for rows on the last axis, shape (2, 3, 5)")


@pytest.mark.exercise("1.4")
def test_softmax_vjp_of_a_fully_masked_row_is_zero(ch, rng):
    probs = reference_softmax(scores(rng, (3, 4)))
    probs[1] = 0.0  # a fully masked row: every probability 0
    grad_out = rng.standard_normal((3, 4))
    out = ch.softmax_vjp(grad_out, probs)
    if isinstance(out, np.ndarray) and out.shape == probs.shape and np.isnan(out[1]).any():
        raise AssertionError(
            "softmax_vjp: a fully masked row (probs all 0) gave NaN; its gradient is 0. The formula "
            "p * (g - sum(g * p)) needs no division: do not divide by sum(p), which is 0 there.")
    check_close(out, explicit_jacobian_vjp(grad_out, probs),
                what="softmax_vjp(g, p) with a fully masked row (row 1: every probability 0, gradient 0)")


@pytest.mark.exercise("1.4")
def test_softmax_vjp_along_other_axes(ch, rng):
    for axis in (0, 1):
        probs = reference_softmax(scores(rng, (4, 3, 5)), axis=axis)
        grad_out = rng.standard_normal((4, 3, 5))
        check_close(ch.softmax_vjp(grad_out, probs, axis=axis), explicit_jacobian_vjp(grad_out, probs, axis),
                    what=f"softmax_vjp(g, p, axis={axis}) for shape (4, 3, 5): the sum of g·p must run "
                    f"along axis {axis}, kept as an axis of size 1 (keepdims=True)")


@pytest.mark.exercise("1.4")
def test_softmax_vjp_matches_finite_differences(ch, rng):
    x = scores(rng, (3, 4))
    grad_out = rng.standard_normal((3, 4))
    eps = 1e-6
    numeric = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[idx] = eps
        numeric[idx] = ((reference_softmax(x + step) - reference_softmax(x - step)) * grad_out).sum() / (2 * eps)
    check_close(ch.softmax_vjp(grad_out, reference_softmax(x)), numeric, rtol=1e-6, atol=1e-8,
                what="softmax_vjp against central differences of sum(softmax(x) * g)")


@pytest.mark.exercise("1.4")
def test_softmax_vjp_keeps_float32(ch, rng):
    probs = reference_softmax(scores(rng, (3, 6))).astype(np.float32)
    grad_out = rng.standard_normal((3, 6)).astype(np.float32)
    check_close(ch.softmax_vjp(grad_out, probs), explicit_jacobian_vjp(grad_out, probs).astype(np.float32),
                what="softmax_vjp(g, p) for float32 g and p (the result stays float32)")


# Exercise 1.5: numerical gradient ---------------------------------------------------------


def wiggly(x):
    return float(np.sum(np.sin(x) * x**2))


def wiggly_grad(x):
    return np.cos(x) * x**2 + 2 * x * np.sin(x)


def cubes(shape, x0=None):
    """sum(x³), which refuses to be called with an array of any shape but ``shape``.

    What went wrong is kept in ``f.problems`` (see :func:`gradient_of`), so that the
    student reads it directly rather than as an error raised inside their code. Each
    call's step from ``x0`` (when given) is kept in ``f.steps``.
    """
    problems, steps = [], []

    def f(v):
        if np.shape(v) != tuple(shape):
            problems.append(f"numerical_gradient called f with an array of shape {np.shape(v)}; f must be "
                            f"called with arrays of x's own shape {tuple(shape)} (perturb a copy of x, "
                            "do not flatten or reshape what you pass to f)")
            raise ValueError(problems[-1])
        v = np.asarray(v, dtype=np.float64)
        if x0 is not None:
            steps.append(np.abs(v - x0).max())
        return float(np.sum(v ** 3))

    f.problems, f.steps = problems, steps
    return f


def gradient_of(ch, f, x, **kwargs):
    """``ch.numerical_gradient(f, x, **kwargs)``; a problem ``f`` saw fails the test in its own words."""
    try:
        out = ch.numerical_gradient(f, x, **kwargs)
    except Exception:
        if f.problems:
            raise AssertionError(f.problems[0]) from None
        raise
    if f.problems:
        raise AssertionError(f.problems[0])
    return out


def cubes_central(x, eps):
    """The central difference of sum(x³), exactly: ((x+ε)³ - (x-ε)³) / 2ε = 3x² + ε²."""
    return 3 * np.asarray(x, dtype=np.float64) ** 2 + eps**2


@pytest.mark.exercise("1.5")
def test_numerical_gradient_is_accurate_to_second_order(ch, rng):
    x = rng.standard_normal((2, 3))
    out = ch.numerical_gradient(wiggly, x, eps=1e-3)
    # Central differences err by about eps² = 1e-6 here; a one-sided difference by about eps = 1e-3.
    check_close(out, wiggly_grad(x), rtol=0, atol=2e-5,
                what="numerical_gradient with eps=1e-3 (central differences are O(eps²) accurate)")


@pytest.mark.exercise("1.5")
def test_numerical_gradient_uses_eps(ch, rng):
    x = rng.standard_normal((3, 2)) * 2
    for eps in (0.1, 0.02):
        check_close(gradient_of(ch, cubes(x.shape), x, eps=eps), cubes_central(x, eps),
                    rtol=1e-9, atol=1e-9,
                    what=f"numerical_gradient(f, x, eps={eps}) for f(x) = sum(x³): the central difference "
                    f"(f(x + eps·e_i) - f(x - eps·e_i)) / (2·eps) is exactly 3x² + eps²; use the eps given")


@pytest.mark.exercise("1.5")
def test_numerical_gradient_calls_f_with_the_shape_of_x(ch, rng):
    x = rng.standard_normal((2, 1, 3))
    check_close(gradient_of(ch, cubes(x.shape), x, eps=0.01), cubes_central(x, 0.01),
                rtol=1e-9, atol=1e-9, what="numerical_gradient(f, x) for x of shape (2, 1, 3)")
    a = rng.standard_normal((3, 3))
    v = rng.standard_normal(3)
    check_close(ch.numerical_gradient(lambda u: float(u @ a @ u), v), (a + a.T) @ v, rtol=1e-6, atol=1e-7,
                what="numerical_gradient of xᵀAx, which is (A + Aᵀ)x")


@pytest.mark.exercise("1.5")
def test_numerical_gradient_works_on_a_float64_copy(ch, rng):
    ints = np.array([[1, -2, 3], [0, 2, -1]])
    check_close(gradient_of(ch, cubes(ints.shape), ints, eps=0.1), cubes_central(ints, 0.1),
                rtol=1e-9, atol=1e-9,
                what="numerical_gradient(f, x) for an integer x: perturb a float64 copy "
                "(np.array(x, dtype=np.float64)); an integer array cannot hold x + eps")
    x32 = (rng.standard_normal(5) * 2).astype(np.float32)
    check_close(gradient_of(ch, cubes(x32.shape), x32, eps=1e-3), cubes_central(x32, 1e-3),
                rtol=1e-9, atol=1e-9,
                what="numerical_gradient(f, x) for a float32 x: the result is float64, computed on a "
                "float64 copy (float32 cannot hold x + eps accurately)")
    before = x32.copy()
    gradient_of(ch, cubes(x32.shape), x32)
    if not np.array_equal(x32, before):
        raise AssertionError("numerical_gradient changed the caller's x; perturb a copy")


@pytest.mark.exercise("1.5")
def test_numerical_gradient_steps_by_the_default_eps(ch):
    x = np.array([[0.5, -0.25, 0.75], [1.0, -0.5, 0.125]])
    f = cubes(x.shape, x0=x)
    out = gradient_of(ch, f, x)
    steps = np.array([s for s in f.steps if s > 0])
    if steps.size and not np.allclose(steps, 1e-6, rtol=1e-6, atol=0):
        raise AssertionError(
            f"numerical_gradient(f, x) without eps stepped x by {float(np.median(steps)):.3g}; the default "
            "eps is 1e-6 (keep the signature numerical_gradient(f, x, eps=1e-6))")
    check_close(out, cubes_central(x, 1e-6), rtol=0, atol=1e-8,
                what="numerical_gradient(f, x) for f(x) = sum(x³) with the default eps = 1e-6: 3x² + 1e-12")
