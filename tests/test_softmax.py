"""Tests of attention_scratch.softmax: softmax, logsumexp, softmax_backward."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import attention_scratch as at
from attention_scratch.testing import assert_close, grad_check

finite_rows = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6),
    elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
)


def textbook_softmax(x, axis=-1):
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


@given(finite_rows)
def test_rows_sum_to_one_and_are_nonnegative(x):
    p = at.softmax(x)
    assert (p >= 0).all()
    assert_close(p.sum(axis=-1), np.ones(x.shape[:-1]), what="row sums")


@given(finite_rows, st.floats(-1e3, 1e3))
def test_shift_invariance(x, shift):
    assert_close(at.softmax(x + shift), at.softmax(x), rtol=1e-9, atol=1e-12, what="softmax(x + c)")


@given(finite_rows, st.data())
def test_masking_an_entry_equals_deleting_it(x, data):
    n = x.shape[-1]
    keep = data.draw(hnp.arrays(bool, (n,)))
    p = at.softmax(x, where=keep)
    if keep.any():
        assert_close(p[..., keep], at.softmax(x[..., keep]), what="masked = deleted")
    assert (p[..., ~keep] == 0).all()


def test_matches_the_formula_on_small_inputs(rng):
    x = rng.standard_normal((3, 4, 5)) * 3
    for axis in (0, 1, -1):
        assert_close(at.softmax(x, axis=axis), textbook_softmax(x, axis=axis), what=f"axis={axis}")


def test_large_inputs_do_not_overflow():
    x = np.array([[1000.0, 1001.0], [-1000.0, -1001.0]])
    expected = textbook_softmax(np.array([[0.0, 1.0], [0.0, -1.0]]))
    assert_close(at.softmax(x), expected, what="softmax near ±1000")
    assert_close(at.logsumexp(x), np.array([1001 + np.log1p(np.exp(-1)),
                                            -1000 + np.log1p(np.exp(-1))]),
                 what="logsumexp near ±1000")


def test_minus_inf_entries_and_empty_rows():
    x = np.array([[0.0, -np.inf, 0.0], [-np.inf, -np.inf, -np.inf]])
    assert_close(at.softmax(x), np.array([[0.5, 0.0, 0.5], [0.0, 0.0, 0.0]]), what="-inf handling")
    assert_close(at.logsumexp(x), np.array([np.log(2), -np.inf]), what="logsumexp with -inf")


def test_where_hides_nan_and_empty_rows_are_zero():
    x = np.array([[1.0, np.nan, 2.0], [np.nan, np.nan, np.nan]])
    where = np.array([[True, False, True], [False, False, False]])
    p = at.softmax(x, where=where)
    assert not np.isnan(p).any()
    assert_close(p, np.array([[textbook_softmax(np.array([1.0, 2.0]))[0], 0.0,
                               textbook_softmax(np.array([1.0, 2.0]))[1]], [0.0, 0.0, 0.0]]),
                 what="where= with NaN under the mask")


def test_where_broadcasts():
    x = np.arange(12.0).reshape(3, 4)
    where = np.array([True, False, True, True])
    assert_close(at.softmax(x, where=where), at.softmax(np.where(where, x, -np.inf)),
                 what="broadcast where")


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dtype_is_kept(dtype, rng):
    x = (rng.standard_normal((4, 8)) * 5).astype(dtype)
    p = at.softmax(x)
    assert p.dtype == dtype
    assert at.logsumexp(x).dtype == dtype
    assert_close(p, textbook_softmax(x.astype(np.float64)), what=f"{np.dtype(dtype).name} softmax")


def test_integer_input_becomes_float64():
    assert at.softmax(np.array([1, 2, 3])).dtype == np.float64


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"where of shape \(5, 4\) does not broadcast to \(4, 5\)"):
        at.softmax(np.zeros((4, 5)), where=np.ones((5, 4), dtype=bool))
    with pytest.raises(TypeError, match="where must be a boolean array"):
        at.softmax(np.zeros(3), where=np.ones(3))
    with pytest.raises(TypeError, match="x must hold real floating-point numbers"):
        at.softmax(np.zeros(3, dtype=complex))
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        at.logsumexp(np.zeros((2, 2)), axis=2)
    with pytest.raises(ValueError, match="grad_out and probs must have the same shape"):
        at.softmax_backward(np.zeros(3), np.zeros(4))


def test_backward_passes_grad_check(rng):
    x = rng.standard_normal((3, 5))
    grad_check(at.softmax, lambda g, x: (at.softmax_backward(g, at.softmax(x)),), [x])
    grad_check(lambda x: at.softmax(x, axis=0),
               lambda g, x: (at.softmax_backward(g, at.softmax(x, axis=0), axis=0),), [x])


def test_backward_gives_zero_gradient_to_masked_entries(rng):
    x = rng.standard_normal((2, 4))
    where = np.array([[True, False, True, True], [False] * 4])
    g = at.softmax_backward(rng.standard_normal((2, 4)), at.softmax(x, where=where))
    assert (g[0, 1] == 0) and (g[1] == 0).all()


def test_against_torch(torch, rng):
    x = rng.standard_normal((3, 7)) * 10
    where = rng.random((3, 7)) > 0.3
    t = torch.tensor(x, requires_grad=True)
    masked = t.masked_fill(~torch.tensor(where), float("-inf"))
    p = torch.softmax(masked, dim=-1)
    g = rng.standard_normal((3, 7))
    p.backward(torch.tensor(g))
    ours = at.softmax(x, where=where)
    assert_close(ours, p.detach().numpy(), what="softmax vs torch")
    assert_close(at.softmax_backward(g, ours), t.grad.numpy(), what="softmax backward vs torch")
    assert_close(at.logsumexp(x), torch.logsumexp(torch.tensor(x), dim=-1).numpy(),
                 what="lse vs torch")


# Non-finite entries, long float16 rows, empty axes and byte order (issue #14).

def test_nan_propagates_to_its_row_only():
    x = np.array([[1.0, np.nan, 2.0], [1.0, 2.0, 3.0], [np.nan, -np.inf, 0.0]])
    p = at.softmax(x)
    assert np.isnan(p[0]).all() and np.isnan(p[2]).all(), ("a NaN score makes its whole row "
                                                           "NaN (as PyTorch)")
    assert_close(p[1], textbook_softmax(x[1]), what="a row without NaN")
    lse = at.logsumexp(x)
    assert np.isnan(lse[0]) and np.isnan(lse[2]) and np.isfinite(lse[1])
    p0 = at.softmax(x, axis=0)  # NaN in columns 0 and 1
    assert np.isnan(p0[:, :2]).all() and not np.isnan(p0[:, 2]).any()


def test_plus_inf_makes_its_row_nan_and_minus_inf_is_absent():
    x = np.array([[1.0, np.inf, 2.0], [1.0, -np.inf, 2.0]])
    p = at.softmax(x)
    assert np.isnan(p[0]).all(), "+inf is not a weight: the row is NaN, as for NaN"
    assert_close(p[1], np.array([textbook_softmax(np.array([1.0, 2.0]))[0], 0.0,
                                 textbook_softmax(np.array([1.0, 2.0]))[1]]), what="-inf = absent")
    assert np.isposinf(at.logsumexp(x)[0])
    where = np.array([True, False, True])  # a hidden +inf or NaN does not matter
    assert_close(at.softmax(x, where=where)[0], at.softmax(np.array([1.0, -np.inf, 2.0])),
                 what="hidden +inf")


def test_nan_and_inf_rows_match_torch(torch):
    x = np.array([[1.0, np.nan, 2.0], [0.5, 1.0, 3.0], [1.0, np.inf, 2.0],
                  [np.inf, np.inf, -np.inf], [1.0, -np.inf, 2.0]])
    assert_close(at.softmax(x), torch.softmax(torch.tensor(x), dim=-1).numpy(),
                 what="NaN/inf rows vs torch")
    assert_close(at.logsumexp(x), torch.logsumexp(torch.tensor(x), dim=-1).numpy(),
                 what="lse vs torch")


@pytest.mark.parametrize("n", [70_000, 1_000_000])
def test_float16_accumulates_in_float32_for_any_length(n):
    x = np.zeros(n, dtype=np.float16)  # the float16 sum of exp(0) overflows at 65504
    x[0] = -3.0
    p = at.softmax(x)
    assert p.dtype == np.float16
    ref = textbook_softmax(x.astype(np.float64))
    assert_close(p, ref, rtol=1e-2, atol=1e-7, what=f"float16 softmax over {n} entries")
    assert abs(p.astype(np.float64).sum() - 1) <= 1e-3 + n * 2.0**-25  # float16 rounds each entry
    lse = at.logsumexp(x)
    assert lse.dtype == np.float16
    assert_close(lse, np.log(np.exp(-3.0) + n - 1), rtol=1e-3, what="float16 logsumexp")


@pytest.mark.parametrize("shape,axis", [((3, 0), -1), ((0, 3), -1), ((0, 3), 0), ((0,), 0),
                                        ((2, 0, 4), 1)])
def test_an_empty_axis_gives_empty_weights_and_minus_inf_logsumexp(shape, axis):
    x = np.zeros(shape, dtype=np.float32)
    p = at.softmax(x, axis=axis)
    assert p.shape == shape and p.dtype == np.float32
    lse = at.logsumexp(x, axis=axis)
    # the shape without the axis
    expected = np.delete(np.zeros(shape), [], axis=axis).sum(axis=axis)
    assert lse.shape == expected.shape and lse.dtype == np.float32
    if x.shape[axis] == 0:
        assert np.all(np.isneginf(lse)), "log of an empty sum is -inf"
    assert at.softmax(x, axis=axis, where=np.ones(shape, bool)).shape == shape


@pytest.mark.parametrize("dtype", [">f8", ">f4", ">f2", "<f8"])
def test_any_byte_order_is_accepted(dtype):
    x = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]], dtype=dtype)
    native = x.astype(np.dtype(dtype).newbyteorder("="))
    p = at.softmax(x)
    assert p.dtype == native.dtype
    assert_close(p, at.softmax(native), what=f"softmax of {dtype}")
    assert_close(at.logsumexp(x), at.logsumexp(native), what=f"logsumexp of {dtype}")
    q = np.arange(12.0).reshape(1, 1, 4, 3).astype(dtype) / 10
    assert_close(at.scaled_dot_product_attention(q, q, q),
                 at.scaled_dot_product_attention(*(q.astype(native.dtype),) * 3),
                 what=f"attention of {dtype}")
