"""Masks: causal in both alignments, padding, sliding windows, combination, fully masked rows."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import attention_scratch as at
from attention_scratch.masks import combine_masks, key_padding_to_keep
from attention_scratch.testing import assert_close, attention_oracle, reference_mask


@pytest.mark.parametrize("L,S", [(1, 1), (3, 5), (5, 5), (6, 2), (1, 7), (0, 3)])
@pytest.mark.parametrize("align", ["top_left", "bottom_right"])
def test_causal_mask_matches_the_oracle_rule(L, S, align):
    mask = at.causal_mask(L, S, align)
    assert mask.dtype == bool and mask.shape == (L, S)
    np.testing.assert_array_equal(mask, reference_mask(L, S, is_causal=True, causal_align=align))


def test_causal_alignments_differ_only_when_lengths_differ():
    np.testing.assert_array_equal(at.causal_mask(4, 4), at.causal_mask(4, 4, "bottom_right"))
    # two new queries over six keys: top-left lets query 0 see key 0 only; bottom-right sees 0..4
    assert at.causal_mask(2, 6)[0].sum() == 1 and at.causal_mask(2, 6, "bottom_right")[0].sum() == 5
    # more queries than keys, bottom-right: the first L - S rows see nothing
    assert not at.causal_mask(5, 3, "bottom_right")[:2].any()


def test_padding_mask():
    mask = at.padding_mask([3, 0, 5], 5)
    assert mask.shape == (3, 1, 1, 5) and mask.dtype == bool
    np.testing.assert_array_equal(mask[:, 0, 0], [[1, 1, 1, 0, 0], [0] * 5, [1] * 5])


@pytest.mark.parametrize("L,S,left,right", [(4, 9, 2, 0), (6, 6, 1, 1), (5, 3, None, 0),
                                            (3, 8, 2, None)])
def test_sliding_window_matches_the_oracle_rule(L, S, left, right):
    np.testing.assert_array_equal(at.sliding_window_mask(L, S, left, right),
                                  reference_mask(L, S, window=(left, right)))
    top_left = at.sliding_window_mask(L, S, left, right, align="top_left")
    i, j = np.arange(L)[:, None], np.arange(S)[None]
    expected = np.ones((L, S), bool)
    if left is not None:
        expected &= j >= i - left
    if right is not None:
        expected &= j <= i + right
    np.testing.assert_array_equal(top_left, expected)


def test_combine_masks():
    a = at.causal_mask(3, 3)
    b = np.array([True, False, True])
    np.testing.assert_array_equal(combine_masks(a, None, b), a & b)
    bias = np.arange(9.0).reshape(3, 3)
    out = combine_masks(bias, a)
    assert out.dtype == np.float64
    assert_close(np.where(a, out, 0), np.where(a, bias, 0))
    assert np.all(np.isneginf(out[~a]))
    assert combine_masks(None, None) is None
    np.testing.assert_array_equal(key_padding_to_keep(np.array([[False, True]])),
                                  [[[[True, False]]]])


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="align"):
        at.causal_mask(2, 3, "middle")
    with pytest.raises(ValueError, match="L must be"):
        at.causal_mask(-1, 3)
    with pytest.raises(ValueError, match="lengths"):
        at.padding_mask([1, 7], 5)
    with pytest.raises(ValueError, match="lengths"):
        at.padding_mask([[1]], 5)
    with pytest.raises(ValueError, match="left"):
        at.sliding_window_mask(2, 2, -1)
    with pytest.raises(ValueError, match="do not broadcast"):
        combine_masks(np.ones((2, 3), bool), np.ones((4,), bool))
    with pytest.raises(TypeError, match="boolean"):
        combine_masks(np.ones(3, int))
    with pytest.raises(TypeError, match="key_padding_mask must be a boolean"):
        key_padding_to_keep(np.zeros((2, 3), int))
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(B, S\).*\(2, 1, 3\)"):
        key_padding_to_keep(np.zeros((2, 1, 3), bool))


@given(lengths=st.lists(st.integers(0, 6), min_size=1, max_size=4), L=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_masking_a_key_equals_deleting_it(lengths, L, seed):
    rng = np.random.default_rng(seed)
    B, S, E = len(lengths), 6, 3
    q, k, v = (rng.standard_normal((B, 2, n, E)) for n in (L, S, S))
    out = at.scaled_dot_product_attention(q, k, v, at.padding_mask(lengths, S))
    for b, n in enumerate(lengths):
        if n == 0:
            assert_close(out[b], np.zeros_like(out[b]), what="a sequence with no keys")
        else:
            short = at.scaled_dot_product_attention(q[b], k[b, :, :n], v[b, :, :n])
            assert_close(out[b], short, what=f"sequence {b} of length {n}: masked vs deleted keys")


@given(L=st.integers(1, 6), S=st.integers(1, 6),
       align=st.sampled_from(["top_left", "bottom_right"]), seed=st.integers(0, 2**16))
def test_fully_masked_rows_give_zero_and_zero_gradient(L, S, align, seed):
    rng = np.random.default_rng(seed)
    q, k, v = rng.standard_normal((2, L, 3)), rng.standard_normal((2, S,
                                                                   3)), rng.standard_normal((2, S,
                                                                                             4))
    mask = at.causal_mask(L, S, align) & (rng.random((L, S)) < 0.6)
    empty = ~mask.any(axis=-1)  # (L,)
    out = at.scaled_dot_product_attention(q, k, v, mask)
    grads = at.scaled_dot_product_attention_backward(rng.standard_normal(out.shape), q, k, v, mask)
    assert not any(np.isnan(a).any() for a in (out, *grads)), "NaN with a fully masked row"
    assert np.all(out[:, empty] == 0) and np.all(grads[0][:, empty] == 0)
    assert_close(out, attention_oracle(q, k, v, mask)[0])
