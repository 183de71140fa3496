"""Tests of the test tools themselves: the oracle against PyTorch, assert_close, grad_check."""
import numpy as np
import pytest

from attention_scratch.testing import (
    assert_close,
    assert_shape,
    attention_oracle,
    attention_oracle_backward,
    dense_reference,
    grad_check,
    numerical_gradient,
    reference_mask,
)


def torch_sdpa(torch, q, k, v, mask=None, scale=None, is_causal=False, enable_gqa=False):
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    tm = None if mask is None else torch.tensor(mask)
    out = torch.nn.functional.scaled_dot_product_attention(
        tq, tk, tv, attn_mask=tm, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
    return out, (tq, tk, tv)


@pytest.mark.parametrize("L,S,E,Ev", [(97, 131, 59, 23), (5, 5, 8, 8), (1, 7, 4, 3), (9, 4, 6, 5)])
def test_oracle_matches_torch_with_a_boolean_mask(torch, rng, L, S, E, Ev):
    q = rng.standard_normal((2, 3, L, E))
    k = rng.standard_normal((2, 3, S, E))
    v = rng.standard_normal((2, 3, S, Ev))
    mask = rng.random((2, 1, L, S)) > 0.2
    mask[..., 0] = True  # torch gives NaN on fully masked rows; keep one key per row here
    out, _, _ = attention_oracle(q, k, v, mask)
    t_out, (tq, tk, tv) = torch_sdpa(torch, q, k, v, mask)
    assert_close(out, t_out.detach().numpy(), what="oracle vs torch SDPA")
    g = rng.standard_normal(out.shape)
    t_out.backward(torch.tensor(g))
    grads = attention_oracle_backward(g, q, k, v, mask)
    for name, ours, theirs in zip("qkv", grads, (tq, tk, tv), strict=True):
        assert_close(ours, theirs.grad.numpy(), what=f"oracle d{name} vs torch autograd")


def test_oracle_matches_torch_with_a_float_mask_scale_and_gqa(torch, rng):
    q = rng.standard_normal((2, 6, 11, 16))
    k = rng.standard_normal((2, 2, 13, 16))
    v = rng.standard_normal((2, 2, 13, 5))
    bias = rng.standard_normal((11, 13))
    out, _, _ = attention_oracle(q, k, v, bias, scale=0.3)
    t_out, _ = torch_sdpa(torch, q, k, v, bias, scale=0.3, enable_gqa=True)
    assert_close(out, t_out.detach().numpy(), what="oracle vs torch: float mask, scale, GQA")


def test_oracle_causal_top_left_matches_torch(torch, rng):
    q, k, v = (rng.standard_normal((1, 2, n, 8)) for n in (6, 9, 9))
    out, _, _ = attention_oracle(q, k, v, is_causal=True)
    t_out, _ = torch_sdpa(torch, q, k, v, is_causal=True)
    assert_close(out, t_out.detach().numpy(), what="oracle vs torch, is_causal (top-left)")


def test_reference_mask_alignments_drawn_by_hand():
    top_left = np.array([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=bool)
    bottom_right = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=bool)
    assert (reference_mask(3, 5, is_causal=True) == top_left).all()
    assert (reference_mask(3, 5, is_causal=True, causal_align="bottom_right") == bottom_right).all()
    window = np.array([[0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 1]], dtype=bool)
    assert (reference_mask(3, 5, window=(1, 0)) == window).all()


def test_oracle_empty_rows_give_zero_output_and_infinite_lse(rng):
    q, k, v = (rng.standard_normal((1, 1, 4, 3)) for _ in range(3))
    k[..., 2, :] = np.nan  # a NaN key hidden by the mask must change nothing
    mask = np.array([[1, 1, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 1]], dtype=bool)
    out, lse, p = attention_oracle(q, k, v, mask)
    assert not np.isnan(out).any() and not np.isnan(p).any()
    assert (out[0, 0, 1] == 0).all() and lse[0, 0, 1] == np.inf
    assert np.isfinite(np.delete(lse[0, 0], 1)).all()
    grads = attention_oracle_backward(np.ones_like(out), q, np.nan_to_num(k), v, mask)
    assert (grads[0][0, 0, 1] == 0).all()


def test_oracle_backward_passes_grad_check(rng):
    q = rng.standard_normal((1, 2, 3, 4))
    k = rng.standard_normal((1, 1, 5, 4))
    v = rng.standard_normal((1, 1, 5, 2))

    def forward(q, k, v):
        return attention_oracle(q, k, v, is_causal=True, causal_align="bottom_right")[0]

    def backward(g, q, k, v):
        return attention_oracle_backward(g, q, k, v, is_causal=True, causal_align="bottom_right")

    grad_check(forward, backward, [q, k, v])


def test_assert_close_reports_shape_and_first_differences():
    with pytest.raises(AssertionError, match=r"wrong shape: got \(2, 3\), expected \(3, 2\)"):
        assert_close(np.zeros((2, 3)), np.zeros((3, 2)))
    got = np.array([1.0, 2.0, np.nan, 4.0])
    with pytest.raises(AssertionError) as info:
        assert_close(got, np.array([1.0, 2.5, 3.0, 4.0]), what="my thing")
    message = str(info.value)
    assert "my thing: 2 of 4 entries differ" in message
    assert "(1,): 2.0 vs 2.5" in message and "NaN where none was expected" in message


def test_assert_close_tolerances_follow_the_dtype():
    assert_close(np.float32(1.0 + 1e-6), np.float64(1.0))  # within float32 tolerance
    with pytest.raises(AssertionError):
        assert_close(np.float64(1.0 + 1e-6), np.float64(1.0))  # not within float64 tolerance
    assert_close(np.array([np.inf, -np.inf, np.nan]), np.array([np.inf, -np.inf, np.nan]))
    with pytest.raises(AssertionError):
        assert_close(np.array([np.inf]), np.array([-np.inf]))


def test_assert_shape():
    assert_shape(np.zeros((2, 3)), (2, 3))
    with pytest.raises(AssertionError, match=r"got \(2, 3\), expected \(2, 4\)"):
        assert_shape(np.zeros((2, 3)), (2, 4))


def test_numerical_gradient_of_a_known_function(rng):
    x = rng.standard_normal((2, 3))
    before = x.copy()
    g = numerical_gradient(lambda v: float(np.sum(v**3)), x)
    assert_close(g, 3 * x**2, rtol=1e-7, atol=1e-8, what="d/dx sum(x³)")
    assert np.array_equal(x, before)


def test_grad_check_catches_a_wrong_backward(rng):
    x = rng.standard_normal(4)
    grad_check(np.sin, lambda g, x: (g * np.cos(x),), [x])
    with pytest.raises(AssertionError, match="gradient of input 0"):
        grad_check(np.sin, lambda g, x: (g * np.cos(x) * 1.001,), [x])


@pytest.mark.parametrize("shapes,words", [
    (((1, 2, 3, 4), (1, 2, 5, 3), (1, 2, 5, 2)),
     "same E; got shapes (1, 2, 3, 4) and (1, 2, 5, 3)"),
    (((1, 3, 3, 4), (1, 2, 5, 4), (1, 2, 5, 2)),
     "query heads (3) must be a multiple of the key/value heads (2)"),
    (((1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 6, 2)), "got shapes (1, 2, 5, 4) and (1, 2, 6, 2)"),
    (((3, 4), (5, 4), (5, 2)), "query must have at least 3 dimensions"),
    (((2, 1, 3, 4), (3, 1, 5, 4), (3, 1, 5, 2)), "leading (batch) axes do not broadcast"),
])
def test_oracle_names_the_argument_and_the_shapes(shapes, words):
    q, k, v = (np.zeros(s) for s in shapes)
    with pytest.raises(ValueError) as err:
        attention_oracle(q, k, v)
    assert words in str(err.value)


def test_oracle_rejects_a_mask_that_does_not_broadcast_and_a_wrong_grad_out():
    q, k, v = np.zeros((1, 2, 3, 4)), np.zeros((1, 2, 5, 4)), np.zeros((1, 2, 5, 2))
    with pytest.raises(ValueError,
                       match=r"attn_mask of shape \(5, 3\) does not broadcast to \(1, 2, 3, 5\)"):
        attention_oracle(q, k, v, attn_mask=np.ones((5, 3), dtype=bool))
    with pytest.raises(ValueError, match=r"grad_out must have the output's shape \(1, 2, 3, 2\); "
                                         r"got \(1, 2, 3, 3\)"):
        attention_oracle_backward(np.zeros((1, 2, 3, 3)), q, k, v)


def test_grad_check_wants_one_gradient_per_input():
    with pytest.raises(ValueError, match="one gradient per input"):
        grad_check(lambda a, b: a + b, lambda g, a, b: (g,), [np.zeros(2), np.zeros(2)])


def test_warnings_as_failures_turns_a_numpy_warning_into_the_hint():
    from attention_scratch.testing import warnings_as_failures

    with (pytest.raises(AssertionError, match=r"subtract the max \(NumPy warned: overflow"),
          warnings_as_failures("subtract the max")):
        np.exp(np.array([1000.0]))
    with warnings_as_failures("never raised"):
        assert np.exp(np.array([1.0]))[0] > 2


@pytest.mark.parametrize("causal", [False, True])
def test_dense_reference_in_the_input_dtype_matches_the_oracle(rng, causal):
    q, k, v, g = (rng.standard_normal((1, 2, 9, 4)) for _ in range(4))
    out, probs, grads = dense_reference(q, k, v, g, is_causal=causal, upcast=False)
    ref_out, _, ref_probs = attention_oracle(q, k, v, is_causal=causal)
    assert_close(out, ref_out, what="dense forward")
    assert_close(probs, ref_probs, what="dense weights")
    for got, ref in zip(grads, attention_oracle_backward(g, q, k, v, is_causal=causal),
                        strict=True):
        assert_close(got, ref, what="dense backward")


def test_dense_reference_keeps_the_dtype_handles_gqa_and_masks_and_upcasts_to_the_oracle(rng):
    q, g = rng.standard_normal((2, 4, 6, 3)), rng.standard_normal((2, 4, 6, 5))
    k, v = rng.standard_normal((2, 2, 8, 3)), rng.standard_normal((2, 2, 8, 5))
    mask = dict(is_causal=True, causal_align="bottom_right", window=(3, None))
    f32 = [a.astype(np.float32) for a in (q, k, v, g)]
    out, probs, grads = dense_reference(*f32, **mask, upcast=False)
    assert out.dtype == probs.dtype == np.float32 and all(a.dtype == np.float32 for a in grads)
    ref_out, _, _ = attention_oracle(q, k, v, **mask)
    assert_close(out, ref_out, what="float32 dense forward, GQA")
    for got, ref, x in zip(grads, attention_oracle_backward(g, q, k, v, **mask), (q, k, v),
                           strict=True):
        assert got.shape == x.shape
        assert_close(got, ref, what="float32 dense backward, GQA")
    up_out, up_probs, up_grads = dense_reference(*f32, **mask)  # upcast=True: the oracle itself
    np.testing.assert_array_equal(up_out, attention_oracle(*f32[:3], **mask)[0])
    assert up_out.dtype == np.float64 and up_probs.dtype == np.float64
    np.testing.assert_array_equal(up_grads[1], attention_oracle_backward(f32[3], *f32[:3],
                                                                         **mask)[1])
