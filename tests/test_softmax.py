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
    assert_close(at.logsumexp(x), np.array([1001 + np.log1p(np.exp(-1)), -1000 + np.log1p(np.exp(-1))]),
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
    assert_close(at.softmax(x, where=where), at.softmax(np.where(where, x, -np.inf)), what="broadcast where")


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
    assert_close(at.logsumexp(x), torch.logsumexp(torch.tensor(x), dim=-1).numpy(), what="lse vs torch")
