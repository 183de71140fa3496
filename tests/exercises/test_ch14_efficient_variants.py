"""Graded tests for chapter 14: the elu + 1 feature map, one recurrent linear-attention step,
positive random features.

Every returned array is checked whole against a float64 reference written here, with the
reference's shape, dtype and tolerance (:mod:`attention_scratch.course.checks`).
"""
import numpy as np
import pytest

from attention_scratch.course.checks import check_close, expect_array, expect_tuple
from attention_scratch.testing import warnings_as_failures


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch14_efficient_variants")


# Exercise 14.1 ------------------------------------------------------------------------------------


def _elu_plus_one(x):
    """The reference, piece by piece in float64: x + 1 where x > 0, exp(x) elsewhere."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    positive = x > 0
    out[positive] = x[positive] + 1.0
    out[~positive] = np.exp(x[~positive])  # only x <= 0: no overflow
    return out


@pytest.mark.exercise("14.1")
def test_elu_feature_map_of_an_array_with_leading_axes(ch, rng):
    x = rng.standard_normal((2, 3, 4)) * 2
    x[0, 0, :3] = [0.0, 1e-3, -1e-3]  # both sides of the kink, and the kink itself
    check_close(ch.elu_feature_map(x), _elu_plus_one(x),
                what="elu(x) + 1 of a (2, 3, 4) array (x + 1 where x > 0, exp(x) where x <= 0; "
                     "elu(x) = exp(x) - 1 there, and the + 1 cancels the - 1)")


@pytest.mark.exercise("14.1")
def test_elu_feature_map_keeps_float32(ch, rng):
    x = (rng.standard_normal((5, 7)) * 3).astype(np.float32)
    check_close(ch.elu_feature_map(x), _elu_plus_one(x).astype(np.float32),
                what="elu(x) + 1 of a float32 (5, 7) array (float32 in, float32 out)")


@pytest.mark.exercise("14.1")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_elu_feature_map_of_large_inputs_does_not_overflow(ch, dtype):
    x = np.array([[-1000.0, -60.0, 0.0], [60.0, 200.0, 1000.0]], dtype=dtype)
    with warnings_as_failures("elu_feature_map overflowed for large positive x: np.where evaluates both "
                              "branches everywhere, so exp must only ever see numbers <= 0"):
        got = ch.elu_feature_map(x)
    check_close(got, _elu_plus_one(x).astype(dtype),
                what=f"elu(x) + 1 at x = ±1000, ±60, 0, 200 in {np.dtype(dtype).name}")


# Exercise 14.2 ------------------------------------------------------------------------------------


def _linear_attention_steps(fq, fk, v, state0, z0, eps):
    """Outputs, states and normalisers after each token, from the sums written out (float64).

    Shapes: ``fq``, ``fk`` (..., T, F), ``v`` (..., T, Ev), ``state0`` (..., F, Ev), ``z0`` (..., F)
    -> (..., T, Ev), (..., T, F, Ev), (..., T, F).
    """
    fq, fk, v = (np.asarray(a, dtype=np.float64) for a in (fq, fk, v))
    outer = np.einsum("...tf,...tv->...tfv", fk, v)  # (..., T, F, Ev): φ(k_t) v_tᵀ
    states = np.asarray(state0, np.float64)[..., None, :, :] + np.cumsum(outer, axis=-3)  # (..., T, F, Ev)
    zs = np.asarray(z0, np.float64)[..., None, :] + np.cumsum(fk, axis=-2)  # (..., T, F)
    numerator = np.einsum("...tf,...tfv->...tv", fq, states)  # (..., T, Ev)
    denominator = np.einsum("...tf,...tf->...t", fq, zs)  # (..., T)
    return numerator / (denominator[..., None] + eps), states, zs


def _check_step(got, expected, t, dtype, eps_said):
    out, state, z = expect_tuple(got, 3, what=f"linear_attention_step at step {t}")
    out_ref, state_ref, z_ref = expected
    check_close(state, state_ref[..., t, :, :].astype(dtype),
                what=f"the state returned at step {t}: the state passed in plus φ(k_t) v_tᵀ, "
                     "an (F, Ev) outer product per sequence and head")
    check_close(z, z_ref[..., t, :].astype(dtype),
                what=f"the normalizer returned at step {t}: the normalizer passed in plus φ(k_t)")
    check_close(out, out_ref[..., t, :].astype(dtype),
                what=f"the output of step {t}: φ(q_t)ᵀS / (φ(q_t)ᵀz + eps) with S and z already holding "
                     f"token t, {eps_said}, one dot product per sequence and head")
    return state, z


@pytest.mark.exercise("14.2")
def test_linear_attention_step_from_an_empty_state(ch, rng):
    B, H, F, Ev = 2, 3, 4, 3
    fq, fk, v = rng.uniform(0.1, 1, (B, H, F)), rng.uniform(0.1, 1, (B, H, F)), rng.standard_normal((B, H, Ev))
    got = ch.linear_attention_step(fq, fk, v, np.zeros((B, H, F, Ev)), np.zeros((B, H, F)), eps=0.0)
    expected = _linear_attention_steps(fq[..., None, :], fk[..., None, :], v[..., None, :],
                                       np.zeros((B, H, F, Ev)), np.zeros((B, H, F)), 0.0)
    _check_step(got, expected, 0, np.float64, "eps = 0: the first token attends only to itself, output v")


@pytest.mark.exercise("14.2")
@pytest.mark.parametrize("eps", [None, 0.25])
def test_linear_attention_steps_carry_the_state(ch, rng, eps):
    B, H, T, F, Ev = 2, 3, 6, 5, 2
    fq, fk = rng.uniform(0.05, 2, (B, H, T, F)), rng.uniform(0.05, 2, (B, H, T, F))
    v = rng.standard_normal((B, H, T, Ev))
    # a state that already holds four earlier tokens
    state = np.einsum("bhtf,bhtv->bhfv", rng.uniform(0.05, 2, (B, H, 4, F)), rng.standard_normal((B, H, 4, Ev)))
    z = rng.uniform(0.2, 8, (B, H, F))
    expected = _linear_attention_steps(fq, fk, v, state, z, 1e-6 if eps is None else eps)
    said = f"eps = {1e-6 if eps is None else eps}{' (the default)' if eps is None else ''} added to the denominator only"
    for t in range(T):
        kwargs = {} if eps is None else {"eps": eps}
        got = ch.linear_attention_step(fq[:, :, t], fk[:, :, t], v[:, :, t], state, z, **kwargs)
        state, z = _check_step(got, expected, t, np.float64, said)


@pytest.mark.exercise("14.2")
def test_linear_attention_steps_keep_float32(ch, rng):
    N, T, F, Ev = 3, 4, 6, 5
    fq, fk = (rng.uniform(0.05, 2, (N, T, F)).astype(np.float32) for _ in range(2))
    v = rng.standard_normal((N, T, Ev)).astype(np.float32)
    state, z = np.zeros((N, F, Ev), np.float32), np.zeros((N, F), np.float32)
    expected = _linear_attention_steps(fq, fk, v, state, z, 1e-3)
    for t in range(T):
        got = ch.linear_attention_step(fq[:, t], fk[:, t], v[:, t], state, z, 1e-3)
        state, z = _check_step(got, expected, t, np.float32, "eps = 1e-3, float32 in and float32 out")


# Exercise 14.3 ------------------------------------------------------------------------------------


def _features(x, omega, stabilize=None):
    """The reference positive random features in float64. Shapes: (..., N, E), (m, E) -> (..., N, m)."""
    x, omega = np.asarray(x, np.float64), np.asarray(omega, np.float64)
    exponent = np.einsum("...ne,me->...nm", x, omega) - 0.5 * np.einsum("...ne,...ne->...n", x, x)[..., None]
    if stabilize == "row":
        exponent = exponent - exponent.max(axis=-1, keepdims=True)  # (..., N, m)
    elif stabilize == "all":
        exponent = exponent - exponent.max(axis=(-2, -1), keepdims=True)  # (..., N, m)
    return np.exp(exponent) / np.sqrt(omega.shape[0])  # (..., N, m)


@pytest.mark.exercise("14.3")
def test_positive_random_features_formula(ch, rng):
    x, omega = rng.standard_normal((2, 3, 5, 4)) * 0.5, rng.standard_normal((7, 4))
    check_close(ch.positive_random_features(x, omega), _features(x, omega),
                what="φ(x) = exp(x·ω_r - |x|²/2) / sqrt(m) for x (2, 3, 5, 4) and omega (7, 4), "
                     "stabilize=None (minus half the squared norm of each row; did you divide by sqrt(m), "
                     "not m?)")


@pytest.mark.exercise("14.3")
def test_positive_random_features_estimate_the_softmax_kernel(ch, rng):
    q, k = rng.standard_normal((2, 4)) * 0.3, rng.standard_normal((3, 4)) * 0.3
    omega = rng.standard_normal((50_000, 4))
    phi_q = expect_array(ch.positive_random_features(q, omega), shape=(2, 50_000), what="φ(q) for q (2, 4)")
    phi_k = expect_array(ch.positive_random_features(k, omega), shape=(3, 50_000), what="φ(k) for k (3, 4)")
    check_close(phi_q @ phi_k.T, np.exp(q @ k.T), rtol=3e-2, atol=0,
                what="φ(q)·φ(k) with 50 000 features against exp(q·k) (an unbiased estimate: the "
                     "average of exp(ω·q - |q|²/2) exp(ω·k - |k|²/2) over ω ~ N(0, I))")


@pytest.mark.exercise("14.3")
def test_positive_random_features_row_stabilizer(ch, rng):
    x, omega = rng.standard_normal((2, 6, 4)) * 6, rng.standard_normal((16, 4))  # |x|²/2 around 70
    check_close(ch.positive_random_features(x, omega, "row"), _features(x, omega, "row"),
                what="stabilize='row': exp(exponent - c) / sqrt(m) with c the largest exponent of the "
                     "same row, over its m features (axis -1)")


@pytest.mark.exercise("14.3")
def test_positive_random_features_all_stabilizer(ch, rng):
    x = rng.standard_normal((3, 6, 4)) * np.array([1.0, 4.0, 12.0])[:, None, None]  # maxima differ by matrix
    omega = rng.standard_normal((9, 4))
    check_close(ch.positive_random_features(x, omega, "all"), _features(x, omega, "all"),
                what="stabilize='all': exp(exponent - c) / sqrt(m) with one c per (N, m) matrix, the "
                     "largest exponent over its rows and features (axes -2 and -1; not over the "
                     "leading axis, not per row, not per feature)")
    x4 = rng.standard_normal((2, 3, 5, 4)) * np.array([1.0, 4.0, 12.0])[:, None, None]  # (B, H, N, E)
    x4[1] *= 2.0  # the maxima differ along both leading axes
    check_close(ch.positive_random_features(x4, omega, "all"), _features(x4, omega, "all"),
                what="stabilize='all' for a 4-d x (2, 3, 5, 4): one c per (N, m) matrix, the largest exponent "
                     "over axes -2 and -1 (count the axes from the end: axis=(1, 2) is right only for 3-d x), "
                     "one constant per index (b, h) of the two leading axes")


@pytest.mark.exercise("14.3")
@pytest.mark.parametrize("stabilize", ["row", "all"])
def test_positive_random_features_stabilizers_survive_large_norms(ch, rng, stabilize):
    x, omega = rng.standard_normal((2, 6, 4)) * 40, rng.standard_normal((16, 4))  # |x|²/2 around 3000
    with warnings_as_failures(f"stabilize={stabilize!r} met inf or NaN on the way (exp of an exponent "
                              "near -3000 is 0 in floating point): subtract the largest exponent before "
                              "calling exp, not after"):
        got = ch.positive_random_features(x, omega, stabilize)
    check_close(got, _features(x, omega, stabilize),
                what=f"stabilize={stabilize!r} for x (2, 6, 4) of norm about 80, where exp(exponent) alone "
                     "is 0")


@pytest.mark.exercise("14.3")
@pytest.mark.parametrize("stabilize", [None, "row", "all"])
def test_positive_random_features_keep_float32(ch, rng, stabilize):
    x = (rng.standard_normal((2, 5, 8)) * 0.7).astype(np.float32)
    omega = rng.standard_normal((12, 8)).astype(np.float32)
    got = ch.positive_random_features(x, omega, stabilize)
    if isinstance(got, np.ndarray) and got.dtype != np.float32:
        raise AssertionError(
            f"stabilize={stabilize!r}: float32 x and omega gave a {got.dtype} result, expected float32. "
            "A NumPy float64 scalar promotes float32 arrays: np.sqrt(m) is one; divide by m ** 0.5 "
            "(a Python float) or cast the scalar to x.dtype")
    check_close(got, _features(x, omega, stabilize).astype(np.float32),
                what=f"float32 features with stabilize={stabilize!r}")
