"""Sliding-window, linear and random-feature attention (chapter 14)."""
import numpy as np
import pytest

from attention_scratch.random_features import (
    gaussian_random_features,
    performer_attention,
    positive_random_features,
    trig_random_features,
)
from attention_scratch.testing import assert_close, attention_oracle
from attention_scratch.variants import (
    elu_feature_map,
    linear_attention,
    linear_attention_chunked,
    linear_attention_features,
    linear_attention_recurrent,
    linear_attention_step,
    sliding_window_attention,
)

# Sliding window -------------------------------------------------------------------------------


@pytest.mark.parametrize("L,S,window,causal,block", [
    (64, 64, (8, 0), False, 16), (97, 131, (5, 3), False, 16), (131, 97, (7, 2), False, 32),
    (50, 50, (10, None), True, 7), (1, 40, (4, 0), False, 64), (33, 33, (0, 0), False, 5),
    (40, 40, (3, 3), True, 8), (45, 45, (6, 6), True, 11), (20, 20, (25, 0), False, 4),
])
def test_sliding_window_equals_the_oracle_with_the_window_mask(rng, L, S, window, causal, block):
    q, k, v = (rng.standard_normal(shape) for shape in ((2, 2, L, 13), (2, 2, S, 13), (2, 2, S, 6)))
    out, lse = sliding_window_attention(q, k, v, window, is_causal=causal, block=block,
                                        return_lse=True)
    ref, ref_lse, _ = attention_oracle(q, k, v, is_causal=causal, window=window)
    assert_close(out, ref,
                 what=f"sliding window {window}, causal={causal}, L={L}, S={S}, block={block}")
    assert_close(lse, ref_lse, what="log-sum-exp")


def test_sliding_window_rows_without_keys_are_zero_and_gqa(rng):
    # L > S with a window reaching only to the right of the aligned diagonal leaves early rows empty
    q, k, v = rng.standard_normal((4, 30, 8)), rng.standard_normal((2, 10,
                                                                    8)), rng.standard_normal((2, 10,
                                                                                              3))
    out, lse = sliding_window_attention(q, k, v, (2, 0), is_causal=True, causal_align="top_left",
                                        enable_gqa=True, block=8, return_lse=True)
    ref, ref_lse, _ = attention_oracle(q, np.repeat(k, 2, axis=0), np.repeat(v, 2, axis=0),
                                       is_causal=True, window=(2, 0))
    assert np.isinf(ref_lse).any(), "the test must contain rows with nothing to attend to"
    assert_close(out, ref, what="GQA sliding window with empty rows")
    assert_close(lse, ref_lse, what="lse with empty rows")


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_sliding_window_low_precision(rng, dtype):
    q, k, v = (rng.standard_normal((3, 70, 16)).astype(dtype) for _ in range(3))
    out = sliding_window_attention(q, k, v, (9, 0), block=16)
    assert out.dtype == dtype
    ref, _, _ = attention_oracle(q, k, v, window=(9, 0))
    plain_err = np.abs(attention_oracle(q.astype(np.float64), k, v, window=(9, 0))[0] - ref).max()
    err = np.abs(out.astype(np.float64) - ref).max()
    bound = {np.float32: 1e-5, np.float16: 2e-2}[dtype]
    assert err <= max(bound, 2 * plain_err), f"{np.dtype(dtype)} error {err:.3g}"


def test_sliding_window_touches_only_the_band(rng):
    """NaN keys outside every window must not reach the output (the band is the only slice read)."""
    L, w, block = 64, 4, 8
    q, k, v = (rng.standard_normal((L, 8)) for _ in range(3))
    k2, v2 = k.copy(), v.copy()
    # keys 20..39 are seen only by queries 20..43; poison them and check queries far
    # away are unchanged
    k2[20:40], v2[20:40] = np.nan, np.nan
    out = sliding_window_attention(q[None], k2[None], v2[None], (w, 0), block=block)[0]
    ref = sliding_window_attention(q[None], k[None], v[None], (w, 0), block=block)[0]
    assert_close(out[:16], ref[:16], what="queries before the poisoned keys")
    assert_close(out[48:], ref[48:], what="queries after the poisoned keys (w=4, block=8)")


def test_sliding_window_errors(rng):
    q = rng.standard_normal((1, 8, 4))
    with pytest.raises(ValueError, match="unbounded"):
        sliding_window_attention(q, q, q, (None, 2))
    with pytest.raises(ValueError, match="window"):
        sliding_window_attention(q, q, q, None)
    with pytest.raises(ValueError, match="block"):
        sliding_window_attention(q, q, q, (2, 0), block=0)


# Linear attention -----------------------------------------------------------------------------


def test_elu_feature_map_is_elu_plus_one_and_positive():
    x = np.array([-1000.0, -2.0, -1e-3, 0.0, 1e-3, 3.0, 1000.0])
    expected = np.array([np.exp(-1000.0), np.exp(-2.0), np.exp(-1e-3), 1.0, 1.001, 4.0, 1001.0])
    assert_close(elu_feature_map(x), expected, what="elu(x) + 1")
    assert (elu_feature_map(x[1:]) > 0).all()


def linear_attention_loops(q, k, v, causal, phi=elu_feature_map, eps=1e-6):
    """The definition, one query and one key at a time: weights φ(q_i)·φ(k_j), normalised."""
    out = np.zeros((q.shape[0], v.shape[1]))
    for i in range(q.shape[0]):
        w = np.array([phi(q[i]) @ phi(k[j]) if (not causal or j <= i) else 0.0
                      for j in range(k.shape[0])])
        out[i] = w @ v / (w.sum() + eps)
    return out


@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_matches_its_definition(rng, causal):
    q, k, v = rng.standard_normal((9, 5)), rng.standard_normal((9, 5)), rng.standard_normal((9, 3))
    assert_close(linear_attention(q, k, v, is_causal=causal),
                 linear_attention_loops(q, k, v, causal),
                 what=f"linear attention (causal={causal}) against the loop definition")


@pytest.mark.parametrize("N,chunk", [(1, 4), (37, 8), (64, 64), (50, 7)])
def test_recurrent_and_chunked_equal_parallel_causal(rng, N, chunk):
    q, k, v = rng.standard_normal((2, 3, N, 6)), rng.standard_normal((2, 3, N,
                                                                      6)), rng.standard_normal((2,
                                                                                                3,
                                                                                                N,
                                                                                                4))
    parallel = linear_attention(q, k, v, is_causal=True)
    assert_close(linear_attention_recurrent(q, k, v), parallel, what="recurrent = parallel causal")
    assert_close(linear_attention_chunked(q, k, v, chunk=chunk), parallel,
                 what=f"chunked ({chunk}) = parallel")


def test_linear_attention_step_does_not_modify_its_state(rng):
    fq, fk, v = rng.uniform(0.1, 1, 4), rng.uniform(0.1, 1, 4), rng.standard_normal(2)
    state, z = np.ones((4, 2)), np.ones(4)
    out, s2, z2 = linear_attention_step(fq, fk, v, state, z)
    assert (state == 1).all() and (z == 1).all()
    assert_close(s2, 1 + np.outer(fk, v), what="state")
    assert_close(out, fq @ s2 / (fq @ z2 + 1e-6), what="output of one step")


def test_linear_attention_low_precision_and_errors(rng):
    q, k, v = (rng.standard_normal((2, 20, 8)).astype(np.float16) for _ in range(3))
    out = linear_attention(q, k, v, is_causal=True)
    assert out.dtype == np.float16
    ref = linear_attention(*(a.astype(np.float64) for a in (q, k, v)), is_causal=True)
    assert np.abs(out - ref).max() < 1e-2
    with pytest.raises(ValueError, match="head dim"):
        linear_attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match="L == S"):
        linear_attention_recurrent(q, k[:, :5], v[:, :5])
    with pytest.raises(TypeError, match="query"):
        linear_attention(q.astype(complex), k, v)


# Random features ------------------------------------------------------------------------------


def test_orthogonal_features_are_orthogonal_within_blocks(rng):
    omega = gaussian_random_features(20, 8, rng)
    assert omega.shape == (20, 8)
    block = omega[:8] / np.linalg.norm(omega[:8], axis=1, keepdims=True)
    assert_close(block @ block.T, np.eye(8), atol=1e-12, what="one orthogonal block")


@pytest.mark.parametrize("orthogonal", [False, True])
def test_positive_features_are_unbiased_for_the_softmax_kernel(rng, orthogonal):
    q, k = rng.standard_normal((3, 4)) * 0.3, rng.standard_normal((5, 4)) * 0.3
    omega = gaussian_random_features(40_000, 4, rng, orthogonal=orthogonal)
    estimate = positive_random_features(q, omega) @ positive_random_features(k, omega).T  # (3, 5)
    # relative standard deviation per feature <= sqrt(exp(|q + k|^2) - 1) ~ 1 here: 0.5 %
    # for m = 40 000
    assert_close(estimate, np.exp(q @ k.T), rtol=3e-2, atol=0, what="E[φ(q)·φ(k)] = exp(q·k)")
    trig = trig_random_features(q, omega) @ trig_random_features(k, omega).T
    assert_close(trig, np.exp(q @ k.T), rtol=5e-2, atol=0, what="sin/cos features")


def test_stabilizers_cancel_in_attention(rng):
    q, k, v = rng.standard_normal((2, 12, 4)), rng.standard_normal((2, 12,
                                                                    4)), rng.standard_normal((2, 12,
                                                                                              3))
    omega = gaussian_random_features(16, 4, rng)
    plain = linear_attention_features(positive_random_features(q, omega),
                                      positive_random_features(k, omega), v, eps=0.0)
    stable = linear_attention_features(positive_random_features(q, omega, "row"),
                                       positive_random_features(k, omega, "all"), v, eps=0.0)
    assert_close(stable, plain, rtol=1e-9, atol=1e-12,
                 what="stabilised features give the same attention")
    big = positive_random_features(q * 40, omega, "row")
    assert np.isfinite(big).all() and big.max(axis=-1).max() == pytest.approx(1 / 4)


def test_performer_error_shrinks_with_the_number_of_features(rng):
    # queries and keys of small norm (|q|^2 / sqrt(E) ~ 1): the regime where FAVOR+ is accurate
    q, k = rng.standard_normal((4, 128, 16)) * 0.5, rng.standard_normal((4, 128, 16)) * 0.5
    v = rng.standard_normal((4, 128, 16))
    ref, _, _ = attention_oracle(q, k, v)
    errors = []
    for m in (8, 64, 512):
        trials = [np.abs(performer_attention(q, k, v, m, rng=np.random.default_rng(s)) - ref).mean()
                  for s in range(3)]
        errors.append(np.mean(trials))
    assert errors[0] > errors[1] > errors[2], f"mean error for m = 8, 64, 512: {errors}"
    assert errors[2] < 0.5 * errors[0]


@pytest.mark.parametrize("causal", [False, True])
def test_performer_with_fixed_omega_is_linear_attention_with_those_features(rng, causal):
    q, k = rng.standard_normal((10, 8)), rng.standard_normal((10, 8))
    v = rng.standard_normal((10, 2))
    omega = gaussian_random_features(32, 8, rng)
    scale = 0.3

    def phi(x):
        return positive_random_features(x * np.sqrt(scale), omega)

    out = performer_attention(q, k, v, is_causal=causal, scale=scale, omega=omega)
    assert_close(out, linear_attention_loops(q, k, v, causal, phi=phi, eps=0.0), rtol=1e-6,
                 atol=1e-8, what="performer = linear attention with positive random features")


def test_performer_errors(rng):
    q = rng.standard_normal((5, 4))
    with pytest.raises(ValueError, match="rng"):
        performer_attention(q, q, q)
    with pytest.raises(ValueError, match="omega"):
        performer_attention(q, q, q, omega=np.ones((3, 5)))
    with pytest.raises(TypeError, match="rng"):
        gaussian_random_features(4, 4, 0)


# NaN and infinities: "masked means absent" (docs/design.md §3) in every variant.

def expected_nan_rows(q, k, v, keep):
    """Rows that see a key and whose query, or a key or value they see, holds NaN or ±inf."""
    bad_q = ~np.isfinite(q).all(-1)  # (..., L)
    bad_kv = ~(np.isfinite(k).all(-1) & np.isfinite(v).all(-1))  # (..., S)
    return keep.any(-1) & (bad_q | (keep & bad_kv[..., None, :]).any(-1))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("trial", range(4))
def test_linear_family_follows_masked_means_absent(rng, causal, trial):
    N = 7
    q, k, v = rng.standard_normal((2, N, 3)), rng.standard_normal((2, N,
                                                                   3)), rng.standard_normal((2, N,
                                                                                             4))
    clean = [a.copy() for a in (q, k, v)]
    for _ in range(1 + trial % 2):
        a = (q, k, v)[rng.integers(3)]
        a[rng.integers(2), rng.integers(N), rng.integers(3)] = [np.nan, np.inf,
                                                                -np.inf][rng.integers(3)]
    keep = np.tril(np.ones((N, N), bool)) if causal else np.ones((N, N), bool)
    rows = expected_nan_rows(q, k, v, keep)  # (2, N)
    omega = gaussian_random_features(16, 3, rng)
    calls = {"linear": lambda q, k, v: linear_attention(q, k, v, is_causal=causal),
             "performer": lambda q, k, v: performer_attention(q, k, v, is_causal=causal,
                                                              omega=omega)}
    if causal:
        calls["recurrent"] = linear_attention_recurrent
        calls["chunked"] = lambda q, k, v: linear_attention_chunked(q, k, v, 3)
    for name, f in calls.items():
        out = f(q, k, v)
        # finite: rows not marked must equal it
        ref = f(*(np.where(np.isfinite(a), a, 0.0) for a in clean))
        assert np.isnan(out[rows]).all(), f"{name}: rows that see a NaN/inf must be NaN"
        assert_close(out[~rows], ref[~rows], what=f"{name}: rows that do not see it")


@pytest.mark.parametrize("trial", range(4))
def test_sliding_window_follows_masked_means_absent(rng, trial):
    q, k, v = rng.standard_normal((1, 2, 9, 3)), rng.standard_normal((1, 1, 9,
                                                                      3)), rng.standard_normal((1,
                                                                                                1,
                                                                                                9,
                                                                                                4))
    for _ in range(1 + trial % 2):
        a = (q, k, v)[rng.integers(3)]
        a.flat[rng.integers(a.size)] = [np.nan, np.inf, -np.inf][rng.integers(3)]
    out, lse = sliding_window_attention(q, k, v, (2, 0), enable_gqa=True, block=4, return_lse=True)
    ref, ref_lse, _ = attention_oracle(q, k, v, window=(2, 0))
    assert_close(out, ref, what="sliding window output")
    assert_close(lse, ref_lse, what="sliding window lse")
