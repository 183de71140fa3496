"""Scaled dot-product attention: the oracle, PyTorch, finite differences, properties,
dropout, errors."""
import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import attention_scratch as at
from attention_scratch.testing import (
    assert_close,
    attention_oracle,
    attention_oracle_backward,
    grad_check,
)

sdpa = at.scaled_dot_product_attention
sdpa_backward = at.scaled_dot_product_attention_backward

SHAPES = [  # (lead, Hq, Hkv, L, S, E, Ev)
    ((), 1, 1, 1, 1, 2, 2),
    ((2,), 4, 2, 5, 7, 3, 6),
    ((2, 3), 2, 2, 6, 6, 4, 4),
    ((1,), 6, 3, 9, 4, 5, 3),
    ((1,), 2, 1, 97, 131, 59, 59),  # ragged
]


def qkv(rng, lead, hq, hkv, L, S, E, Ev, dtype=np.float64):
    return (rng.standard_normal(lead + (hq, L, E)).astype(dtype),
            rng.standard_normal(lead + (hkv, S, E)).astype(dtype),
            rng.standard_normal(lead + (hkv, S, Ev)).astype(dtype))


def diagonal_keep(rng, shape, L, S):
    """A random boolean mask that keeps at least key 0, so no row is empty
    (PyTorch gives NaN there)."""
    keep = rng.random(shape + (L, S)) < 0.6
    keep[..., 0] = True
    return keep


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("case", ["plain", "bool", "float", "causal", "bottom_right", "scale"])
def test_forward_and_backward_match_the_oracle(rng, shape, case):
    _lead, hq, _hkv, L, S, _E, _Ev = shape
    q, k, v = qkv(rng, *shape)
    kw = {"bool": dict(attn_mask=diagonal_keep(rng, (hq,), L, S)),
          "float": dict(attn_mask=rng.standard_normal((L, S))),
          "causal": dict(is_causal=True),
          "bottom_right": dict(is_causal=True, causal_align="bottom_right"),
          "scale": dict(scale=0.3)}.get(case, {})
    out = sdpa(q, k, v, enable_gqa=True, **kw)
    ref, _, _ = attention_oracle(q, k, v, **kw)
    assert_close(out, ref, what=f"sdpa output, {case}")
    g = rng.standard_normal(out.shape)
    for got, want, name in zip(sdpa_backward(g, q, k, v, enable_gqa=True, **kw),
                               attention_oracle_backward(g, q, k, v, **kw), ("dq", "dk", "dv"),
                               strict=True):
        assert_close(got, want, what=f"{name}, {case}")


def torch_reference(torch, q, k, v, g, **kw):
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    if "attn_mask" in kw:
        kw["attn_mask"] = torch.tensor(kw["attn_mask"])
    out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, **kw)
    out.backward(torch.tensor(g))
    return out.detach().numpy(), tq.grad.numpy(), tk.grad.numpy(), tv.grad.numpy()


@pytest.mark.parametrize("case", ["bool", "float", "causal", "gqa", "scale", "gqa_causal_bool"])
@pytest.mark.parametrize("L,S,E,Ev", [(97, 131, 59, 59), (7, 5, 3, 4), (1, 9, 8, 8)])
def test_agrees_with_pytorch_to_1e_10(torch, rng, case, L, S, E, Ev):
    hq, hkv = (4, 2) if "gqa" in case else (3, 3)
    q, k, v = qkv(rng, (2,), hq, hkv, L, S, E, Ev)
    kw = {"bool": dict(attn_mask=diagonal_keep(rng, (2, hq), L, S)),
          "float": dict(attn_mask=rng.standard_normal((2, 1, L, S))),
          "causal": dict(is_causal=True),
          "gqa": dict(enable_gqa=True),
          "scale": dict(scale=1.7),
          "gqa_causal_bool": dict(enable_gqa=True, attn_mask=diagonal_keep(rng, (1, 1), L, S)
                                  & at.causal_mask(L, S))}[case]
    g = rng.standard_normal((2, hq, L, Ev))
    expected = torch_reference(torch, q, k, v, g, **kw)
    out = sdpa(q, k, v, **kw)
    grads = sdpa_backward(g, q, k, v, **kw)
    for got, want, name in zip((out, *grads), expected, ("out", "dq", "dk", "dv"), strict=True):
        assert_close(got, want, rtol=1e-10, atol=1e-10, what=f"{name} vs PyTorch ({case})")


@pytest.mark.parametrize("kw", [dict(), dict(is_causal=True, causal_align="bottom_right"),
                                dict(attn_mask=np.array([[True, False, True, True]] * 3)),
                                dict(attn_mask=np.linspace(-1, 1, 12).reshape(3, 4), scale=0.8)],
                         ids=str)
def test_backward_matches_finite_differences(rng, kw):
    q, k, v = qkv(rng, (), 4, 2, 3, 4, 3, 2)
    grad_check(lambda q, k, v: sdpa(q, k, v, enable_gqa=True, **kw),
               lambda g, q, k, v: sdpa_backward(g, q, k, v, enable_gqa=True, **kw), [q, k, v],
               rng=rng)


def test_dropout_backward_matches_finite_differences_with_the_same_generator(rng):
    q, k, v = qkv(rng, (), 2, 2, 3, 5, 3, 2)
    seed = 7
    grad_check(lambda q, k, v: sdpa(q, k, v, dropout_p=0.3, rng=np.random.default_rng(seed)),
               lambda g, q, k, v: sdpa_backward(g, q, k, v, dropout_p=0.3,
                                                rng=np.random.default_rng(seed)), [q, k, v],
               rng=rng)


def test_dropout_statistics(rng):
    q, k, v = qkv(rng, (), 1, 1, 40, 50, 4, 3)
    _, clean = sdpa(q, k, v, return_weights=True)
    p = 0.25
    state = copy.deepcopy(rng)
    out, dropped = sdpa(q, k, v, dropout_p=p, rng=rng, return_weights=True)
    kept = dropped != 0
    n = kept.size
    # the fraction kept is Binomial(n, 1 - p): within 5 standard deviations
    assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    assert_close(dropped[kept], clean[kept] / (1 - p), what="survivors scaled by 1/(1-p)")
    assert_close(out, dropped @ v, what="output = dropped weights @ value")
    # expectation: averaged over many draws, the dropped weights approach the clean ones
    mean = np.mean([sdpa(q, k, v, dropout_p=p, rng=rng, return_weights=True)[1]
                    for _ in range(400)], axis=0)
    assert np.abs(mean - clean).max() < 5 * np.sqrt(p / (1 - p) / 400) * clean.max()
    # the same generator state draws the same mask
    again = sdpa(q, k, v, dropout_p=p, rng=state)
    assert_close(again, out)


def test_dropout_one_and_errors(rng):
    q, k, v = qkv(rng, (), 1, 1, 3, 4, 2, 2)
    assert np.all(sdpa(q, k, v, dropout_p=1.0, rng=rng) == 0)
    with pytest.raises(TypeError, match="rng"):
        sdpa(q, k, v, dropout_p=0.1)
    with pytest.raises(ValueError, match="dropout_p"):
        sdpa(q, k, v, dropout_p=1.5, rng=rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_low_precision_keeps_the_dtype_and_is_accurate(rng, dtype):
    q, k, v = qkv(rng, (2,), 4, 2, 17, 23, 8, 8, dtype)
    mask = diagonal_keep(rng, (), 17, 23)
    out = sdpa(q, k, v, mask, enable_gqa=True)
    g = rng.standard_normal(out.shape).astype(dtype)
    grads = sdpa_backward(g, q, k, v, mask, enable_gqa=True)
    assert out.dtype == dtype and all(d.dtype == dtype for d in grads)
    ref = attention_oracle(q, k, v, mask)[0]
    # the plain computation run entirely in the low dtype (docs/design.md §5: ours may be at most
    # 2x worse)
    kk, vv = np.repeat(k, 2, axis=1), np.repeat(v, 2, axis=1)
    s = np.where(mask, q @ np.swapaxes(kk, -1, -2) * dtype(1 / np.sqrt(8)), -np.inf)
    e = np.exp(s - s.max(-1, keepdims=True))
    naive = (e / e.sum(-1, keepdims=True)) @ vv
    err, naive_err = np.abs(out - ref).max(), np.abs(naive.astype(np.float64) - ref).max()
    assert err <= 2 * naive_err + 1e-7, (err, naive_err)
    for got, want in zip(grads, attention_oracle_backward(g, q, k, v, mask), strict=True):
        assert_close(got, want, dtype=dtype, rtol=5e-2 if dtype == np.float16 else 1e-4,
                     atol=5e-2 if dtype == np.float16 else 1e-5)


def test_nan_key_hidden_by_the_mask_changes_nothing(rng):
    q, k, v = qkv(rng, (2,), 2, 2, 4, 6, 3, 3)
    mask = np.ones((4, 6), bool)
    mask[:, 4] = False  # key 4 hidden from everyone (padding)
    causal = at.causal_mask(4, 6)  # key 5 hidden from queries 0..3 only in top-left alignment
    k_nan, v_nan = k.copy(), v.copy()
    k_nan[..., 4, :] = np.nan
    k_nan[..., 5, 0] = np.nan
    v_nan[..., 4, :] = np.nan
    for kw in (dict(attn_mask=mask & causal), dict(attn_mask=mask, is_causal=True)):
        g = rng.standard_normal((2, 2, 4, 3))
        clean = (sdpa(q, k, v, **kw), *sdpa_backward(g, q, k, v, **kw))
        dirty = (sdpa(q, k_nan, v_nan, **kw), *sdpa_backward(g, q, k_nan, v_nan, **kw))
        for a, b, name in zip(clean, dirty, ("out", "dq", "dk", "dv"), strict=True):
            assert_close(b, a, what=f"{name} with NaN in masked keys")


@given(seed=st.integers(0, 2**16), L=st.integers(1, 5), S=st.integers(1, 6),
       shift=st.floats(-50, 50))
def test_properties_rows_sum_to_one_and_shift_invariance(seed, L, S, shift):
    rng = np.random.default_rng(seed)
    q, k, v = qkv(rng, (), 2, 2, L, S, 3, 2)
    bias = rng.standard_normal((L, S))
    out, w = sdpa(q, k, v, bias, return_weights=True)
    assert_close(w.sum(-1), np.ones((2, L)), what="rows of the weights sum to 1")
    # adding a constant per query row to the scores changes nothing
    row_shift = shift * rng.random((L, 1))
    assert_close(sdpa(q, k, v, bias + row_shift), out, rtol=1e-9, atol=1e-9)


@given(seed=st.integers(0, 2**16), L=st.integers(1, 6))
def test_property_self_attention_is_permutation_equivariant(seed, L):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, L, 4))
    perm = rng.permutation(L)
    out = sdpa(x, x, x)
    assert_close(sdpa(x[:, perm], x[:, perm], x[:, perm]), out[:, perm])


@given(seed=st.integers(0, 2**16), L=st.integers(1, 6), extra=st.integers(0, 3),
       align=st.sampled_from(["top_left", "bottom_right"]), data=st.data())
def test_property_causal_outputs_ignore_the_future(seed, L, extra, align, data):
    rng = np.random.default_rng(seed)
    S = L + extra
    offset = S - L if align == "bottom_right" else 0  # query i sees keys j <= i + offset
    t = data.draw(st.integers(0, S - 1), label="first changed key")
    q, k, v = qkv(rng, (), 2, 2, L, S, 3, 2)
    out = sdpa(q, k, v, is_causal=True, causal_align=align)
    k2, v2 = k.copy(), v.copy()
    k2[..., t:, :] += 10 * rng.standard_normal(k2[..., t:, :].shape)  # change keys t..S-1
    v2[..., t:, :] += 10 * rng.standard_normal(v2[..., t:, :].shape)
    out2 = sdpa(q, k2, v2, is_causal=True, causal_align=align)
    blind = max(0, t - offset)  # queries 0..blind-1 see only keys < t
    assert_close(out2[..., :blind, :], out[..., :blind, :],
                 what="outputs of queries before the change")
    if blind < L:
        assert not np.allclose(out2[..., blind:, :],
                               out[..., blind:, :]), "later queries must see the change"


@pytest.mark.parametrize("L,S", [(0, 3), (3, 0), (0, 0)])
def test_empty_sequences(rng, L, S):
    q, k, v = qkv(rng, (2,), 2, 1, L, S, 3, 4)
    out = sdpa(q, k, v, enable_gqa=True, is_causal=True)
    grads = sdpa_backward(np.ones(out.shape), q, k, v, enable_gqa=True, is_causal=True)
    assert out.shape == (2, 2, L, 4) and np.all(out == 0)
    assert [g.shape for g in grads] == [q.shape, k.shape,
                                        v.shape] and all(np.all(g == 0) for g in grads)


def test_return_weights_and_leading_axes(rng):
    q, k, v = qkv(rng, (2, 3, 1), 2, 1, 4, 5, 3, 2)
    out, w = sdpa(q, k, v, enable_gqa=True, return_weights=True)
    assert out.shape == (2, 3, 1, 2, 4, 2) and w.shape == (2, 3, 1, 2, 4, 5)
    assert_close(w, attention_oracle(q, k, v)[2])


def test_errors_name_arguments_and_shapes(rng):
    q, k, v = qkv(rng, (2,), 4, 2, 3, 5, 4, 4)
    with pytest.raises(ValueError, match="enable_gqa"):
        sdpa(q, k, v)
    with pytest.raises(ValueError, match="multiple"):
        sdpa(q[:, :3], k, v, enable_gqa=True)
    with pytest.raises(ValueError, match="head dim"):
        sdpa(q[..., :3], k, v, enable_gqa=True)
    with pytest.raises(ValueError, match=r"attn_mask of shape \(4, 5\)"):
        sdpa(q, k, v, np.ones((4, 5), bool), enable_gqa=True)
    with pytest.raises(TypeError, match="attn_mask"):
        sdpa(q, k, v, np.ones((3, 5), int), enable_gqa=True)
    with pytest.raises(ValueError, match="causal_align"):
        sdpa(q, k, v, is_causal=True, causal_align="left", enable_gqa=True)
    with pytest.raises(ValueError, match="grad_out"):
        sdpa_backward(np.ones((2, 4, 3, 5)), q, k, v, enable_gqa=True)
    for bad in ("0.5", True, 1j):
        with pytest.raises(TypeError, match="scale must be a real number or None"):
            sdpa(q, k, v, scale=bad, enable_gqa=True)


# NaN and infinities: "masked means absent" (docs/design.md §3), against the oracle that
# implements it.

def plant(rng, arrays, count, values=(np.nan, np.inf, -np.inf)):
    arrays = [a.copy() for a in arrays]
    for _ in range(count):
        a = arrays[rng.integers(len(arrays))]
        a.flat[rng.integers(a.size)] = values[rng.integers(len(values))]
    return arrays


def sdpa_masks(rng, L, S):
    keep = rng.random((2, 1, L, S)) < 0.6
    bias = rng.standard_normal((L, S))
    bias[rng.random((L, S)) < 0.3] = -np.inf  # a -inf float mask hides, like False
    weird = bias.copy()
    # a NaN/+inf bias poisons its row
    weird[rng.integers(L), rng.integers(S)] = [np.nan, np.inf][rng.integers(2)]
    return [dict(), dict(is_causal=True), dict(attn_mask=keep), dict(attn_mask=bias),
            dict(attn_mask=weird), dict(attn_mask=keep, is_causal=True,
                                        causal_align="bottom_right")]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_the_finiteness_scan_finds_bad_rows_and_takes_an_overflowing_sum_for_a_false_alarm(dtype):
    from attention_scratch._nonfinite import scan

    big = np.finfo(dtype).max  # the sum of these overflows in the scan's own dtype
    q = np.full((2, 3, 4), big, dtype=dtype)  # (H, L, E): finite, however large
    k = np.full((2, 5, 4), big, dtype=dtype)  # (H, S, E)
    assert scan(q, k, k) is None
    q[1, 2, 0], k[0, 4, 3] = np.nan, -np.inf
    bad_q, bad_kv = scan(q, k, k)
    np.testing.assert_array_equal(bad_q, [[False] * 3, [False, False, True]])
    np.testing.assert_array_equal(bad_kv, [[False] * 4 + [True], [False] * 5])


@pytest.mark.parametrize("trial", range(8))
def test_nonfinite_inputs_follow_masked_means_absent(rng, trial):
    L, S = [(5, 7), (7, 5), (6, 6)][trial % 3]
    q, k, v = qkv(rng, (2,), 4, 2, L, S, 3, 4)
    g = rng.standard_normal((2, 4, L, 4))
    q, k, v = plant(rng, (q, k, v), 1 + trial % 3)
    if trial % 4 == 3:
        g[rng.integers(2), rng.integers(4), rng.integers(L), 1] = np.inf
    for kw in sdpa_masks(rng, L, S):
        what = f"trial {trial}, {sorted(kw)}"
        out, w = sdpa(q, k, v, enable_gqa=True, return_weights=True, **kw)
        ref, _, ref_w = attention_oracle(q, k, v, **kw)
        assert_close(out, ref, what=f"output, {what}")
        assert_close(w, ref_w, what=f"weights, {what}")
        for name, got, want in zip(("dq", "dk", "dv"),
                                   sdpa_backward(g, q, k, v, enable_gqa=True, **kw),
                                   attention_oracle_backward(g, q, k, v, **kw), strict=True):
            assert_close(got, want, what=f"{name}, {what}")


def test_nan_in_a_value_hidden_by_causality_does_not_reach_row_0(rng):
    """The issue's case: NaN in v[2] with is_causal=True made row 0 NaN (0 · NaN in P V)."""
    q, k, v = qkv(rng, (1,), 2, 2, 4, 4, 3, 3)
    v[..., 2, :] = np.nan
    out = sdpa(q, k, v, is_causal=True)
    assert np.isfinite(out[..., :2, :]).all() and np.isnan(out[..., 2:, :]).all()
    grads = sdpa_backward(np.ones(out.shape), q, k, v, is_causal=True)
    assert np.isfinite(grads[0][..., :2, :]).all() and np.isnan(grads[0][..., 2:, :]).all()


def test_visible_nan_rows_agree_with_pytorch(torch, rng):
    q, k, v = qkv(rng, (2,), 2, 2, 5, 6, 3, 3)
    k[0, 1, 3, 2] = np.nan  # seen by every row of batch 0, head 1
    out = sdpa(q, k, v)
    t = torch.nn.functional.scaled_dot_product_attention(*(torch.tensor(a)
                                                           for a in (q, k, v))).numpy()
    assert np.array_equal(np.isnan(out), np.isnan(t))
    assert_close(out[~np.isnan(out)], t[~np.isnan(t)], rtol=1e-12, atol=1e-12)
