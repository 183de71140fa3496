"""Multi-head attention: PyTorch's nn.MultiheadAttention, GQA against PyTorch SDPA,
finite differences, KV cache."""
import numpy as np
import pytest

import attention_scratch as at
from attention_scratch.multihead import fold_kv_grad, merge_heads, repeat_kv, split_heads
from attention_scratch.testing import assert_close, grad_check

B, L, S, E, H = 2, 5, 7, 12, 3


def copy_into_torch(torch, ours, theirs):
    """Copy our (in, out) weights into an nn.MultiheadAttention ((out, in) weights)."""
    weights = {k: torch.tensor(v) for k, v in ours.params.items()}
    with torch.no_grad():
        if theirs._qkv_same_embed_dim:
            theirs.in_proj_weight.copy_(torch.cat([weights[f"W_{x}"].T for x in "qkv"]))
        else:
            theirs.q_proj_weight.copy_(weights["W_q"].T)
            theirs.k_proj_weight.copy_(weights["W_k"].T)
            theirs.v_proj_weight.copy_(weights["W_v"].T)
        theirs.out_proj.weight.copy_(weights["W_o"].T)
        if "b_q" in weights:
            theirs.in_proj_bias.copy_(torch.cat([weights["b_q"], weights["b_k"], weights["b_v"]]))
            theirs.out_proj.bias.copy_(weights["b_o"])


def torch_param_grads(theirs, E):
    if theirs._qkv_same_embed_dim:
        w = theirs.in_proj_weight.grad.numpy()
        grads = {"W_q": w[:E].T, "W_k": w[E:2 * E].T, "W_v": w[2 * E:].T}
    else:
        grads = {"W_q": theirs.q_proj_weight.grad.numpy().T,
                 "W_k": theirs.k_proj_weight.grad.numpy().T,
                 "W_v": theirs.v_proj_weight.grad.numpy().T}
    grads["W_o"] = theirs.out_proj.weight.grad.numpy().T
    if theirs.in_proj_bias is not None:
        b = theirs.in_proj_bias.grad.numpy()
        grads.update(b_q=b[:E], b_k=b[E:2 * E], b_v=b[2 * E:],
                     b_o=theirs.out_proj.bias.grad.numpy())
    return grads


CASES = {
    "self": dict(self_attention=True),
    "self_causal": dict(self_attention=True, is_causal=True),
    "cross_padding": dict(key_padding=True),
    "cross_kdim_vdim": dict(kdim=5, vdim=9, key_padding=True),
    "bool_mask_no_bias": dict(bias=False, bool_mask=True),
    "float_mask_and_padding": dict(float_mask=True, key_padding=True),
}


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
@pytest.mark.parametrize("case", sorted(CASES))
def test_agrees_with_torch_multihead_attention(torch, rng, case):
    c = CASES[case]
    kdim, vdim = c.get("kdim", E), c.get("vdim", E)
    ours = at.MultiHeadAttention(E, H, bias=c.get("bias", True), kdim=kdim, vdim=vdim, rng=rng)
    if c.get("bias", True):  # non-zero biases so their gradients are tested
        for name in ("b_q", "b_k", "b_v", "b_o"):
            ours.params[name][:] = rng.standard_normal(ours.params[name].shape)
    theirs = torch.nn.MultiheadAttention(E, H, bias=c.get("bias", True), kdim=kdim, vdim=vdim,
                                         batch_first=True, dtype=torch.float64)
    copy_into_torch(torch, ours, theirs)
    s = L if c.get("self_attention") else S
    x = rng.standard_normal((B, L, E))
    key, value = (x, x) if c.get("self_attention") else (rng.standard_normal((B, s, kdim)),
                                                          rng.standard_normal((B, s, vdim)))
    kw, tkw = {}, {}
    if c.get("is_causal"):
        kw["is_causal"] = True
        # torch: True = blocked
        tkw.update(is_causal=True, attn_mask=torch.tensor(~at.causal_mask(L, s)))
    if c.get("bool_mask"):
        keep = rng.random((L, s)) < 0.6
        keep[:, 0] = True
        kw["attn_mask"], tkw["attn_mask"] = keep, torch.tensor(~keep)
    if c.get("float_mask"):
        bias = rng.standard_normal((L, s))
        kw["attn_mask"], tkw["attn_mask"] = bias, torch.tensor(bias)
    if c.get("key_padding"):
        kpm = np.zeros((B, s), bool)
        kpm[0, -2:] = True  # True marks padding in both libraries
        kw["key_padding_mask"], tkw["key_padding_mask"] = kpm, torch.tensor(kpm)
    g = rng.standard_normal((B, L, E))

    if c.get("self_attention"):
        out, w = ours.forward(x, need_weights=True, **kw)
    else:
        out, w = ours.forward(x, key, value, need_weights=True, **kw)
    d_inputs = ours.backward(g)

    tx = torch.tensor(x, requires_grad=True)
    tk, tv = (tx, tx) if c.get("self_attention") else (torch.tensor(key, requires_grad=True),
                                                        torch.tensor(value, requires_grad=True))
    t_out, t_w = theirs(tx, tk, tv, need_weights=True, average_attn_weights=False, **tkw)
    t_out.backward(torch.tensor(g))
    assert_close(out, t_out.detach().numpy(), rtol=1e-10, atol=1e-10, what="MHA output vs PyTorch")
    assert_close(w, t_w.detach().numpy(), rtol=1e-10, atol=1e-10,
                 what="per-head weights vs PyTorch")
    # PyTorch's default: head-averaged weights
    _, t_avg = theirs(tx, tk, tv, need_weights=True, **tkw)
    assert_close(w.mean(axis=1), t_avg.detach().numpy(), rtol=1e-10, atol=1e-10,
                 what="averaged weights")
    assert_close(d_inputs[0], tx.grad.numpy(), rtol=1e-10, atol=1e-10, what="grad of query")
    if not c.get("self_attention"):
        assert_close(d_inputs[1], tk.grad.numpy(), rtol=1e-10, atol=1e-10, what="grad of key")
        assert_close(d_inputs[2], tv.grad.numpy(), rtol=1e-10, atol=1e-10, what="grad of value")
    else:
        assert d_inputs[1] is None and d_inputs[2] is None
    expected = torch_param_grads(theirs, E)
    assert sorted(ours.grads) == sorted(expected)
    for name, want in expected.items():
        assert_close(ours.grads[name], want, rtol=1e-10, atol=1e-10, what=f"grad of {name}")


@pytest.mark.parametrize("num_kv_heads", [1, 2])
def test_grouped_query_attention_agrees_with_torch_sdpa(torch, rng, num_kv_heads):
    hq, d = 4, 3
    ours = at.MultiHeadAttention(hq * d, hq, num_kv_heads=num_kv_heads, rng=rng)
    assert ours.W_k.shape == (hq * d, num_kv_heads * d)
    for name in ("b_q", "b_k", "b_v", "b_o"):
        ours.params[name][:] = rng.standard_normal(ours.params[name].shape)
    x, mem = rng.standard_normal((B, L, hq * d)), rng.standard_normal((B, S, hq * d))
    kpm = np.zeros((B, S), bool)
    kpm[1, 4:] = True
    out = ours.forward(x, mem, key_padding_mask=kpm)
    g = rng.standard_normal(out.shape)
    dx, dmem, _ = ours.backward(g)

    t = {k: torch.tensor(v, requires_grad=True) for k, v in ours.params.items()}
    tx, tm = torch.tensor(x, requires_grad=True), torch.tensor(mem, requires_grad=True)
    q = (tx @ t["W_q"] + t["b_q"]).reshape(B, L, hq, d).transpose(1, 2)
    k = (tm @ t["W_k"] + t["b_k"]).reshape(B, S, num_kv_heads, d).transpose(1, 2)
    v = (tm @ t["W_v"] + t["b_v"]).reshape(B, S, num_kv_heads, d).transpose(1, 2)
    o = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=torch.tensor(~kpm[:, None, None, :]), enable_gqa=True)
    t_out = o.transpose(1, 2).reshape(B, L, hq * d) @ t["W_o"] + t["b_o"]
    t_out.backward(torch.tensor(g))
    assert_close(out, t_out.detach().numpy(), rtol=1e-10, atol=1e-10)
    assert_close(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-10, what="grad of query")
    assert_close(dmem, tm.grad.numpy(), rtol=1e-10, atol=1e-10, what="grad of key=value memory")
    for name, tensor in t.items():
        assert_close(ours.grads[name], tensor.grad.numpy(), rtol=1e-10, atol=1e-10,
                     what=f"grad of {name}")


def test_backward_matches_finite_differences(rng):
    ours = at.MultiHeadAttention(6, 3, num_kv_heads=1, kdim=4, vdim=5, rng=rng)
    x, key, value = (rng.standard_normal(shape) for shape in ((1, 3, 6), (1, 4, 4), (1, 4, 5)))
    mask = np.array([True, True, False, True])

    def forward(x, key, value):
        return ours.forward(x, key, value, attn_mask=mask, is_causal=True)

    grad_check(forward, lambda g, *a: (forward(*a), ours.backward(g))[1], [x, key, value], rng=rng)
    # parameter gradients: perturb W_v through a wrapper
    w0 = ours.params["W_v"].copy()

    def f_w(w):
        ours.params["W_v"] = w
        return forward(x, key, value)

    def b_w(g, w):
        f_w(w)
        ours.backward(g)
        return (ours.grads["W_v"],)

    grad_check(f_w, b_w, [w0], rng=rng)


@pytest.mark.parametrize("num_kv_heads,prefill", [(4, 1), (2, 3), (1, 2)])
def test_kv_cache_decoding_equals_the_full_causal_computation(rng, num_kv_heads, prefill):
    mha = at.MultiHeadAttention(16, 4, num_kv_heads=num_kv_heads, rng=rng)
    x = rng.standard_normal((2, 9, 16))
    full = mha.forward(x, is_causal=True)
    cache = mha.new_cache(capacity=2)  # small, so the buffer has to grow
    steps = [mha.forward(x[:, :prefill], is_causal=True, cache=cache)]  # a prompt at once
    steps += [mha.forward(x[:, t:t + 1], is_causal=True, cache=cache) for t in range(prefill, 9)]
    assert_close(np.concatenate(steps, axis=1), full,
                 what="token-by-token decoding vs full recompute")
    assert cache.length == 9 and cache.keys.shape == (2, num_kv_heads, 9, 4)
    assert cache.nbytes == 2 * 2 * num_kv_heads * 9 * 4 * 8  # keys + values, Hkv heads only
    with pytest.raises(ValueError, match="backward"):
        mha.backward(np.ones_like(steps[-1]))


def test_head_helpers(rng):
    x = rng.standard_normal((2, 5, 12))
    h = split_heads(x, 3)
    assert h.shape == (2, 3, 5, 4)
    assert_close(h[:, 1], x[..., 4:8])
    assert_close(merge_heads(h), x)
    kv = rng.standard_normal((2, 2, 5, 4))
    rep = repeat_kv(kv, 6)
    assert_close(rep[:, 2], kv[:, 0]) and assert_close(rep[:, 3], kv[:, 1])
    g = rng.standard_normal(rep.shape)
    assert_close(fold_kv_grad(g, 2)[:, 1], g[:, 3:].sum(axis=1))


def test_errors(rng):
    with pytest.raises(ValueError, match="divisible"):
        at.MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="num_kv_heads"):
        at.MultiHeadAttention(12, 4, num_kv_heads=3)
    with pytest.raises(ValueError, match="embed_dim"):
        at.MultiHeadAttention(0, 1)
    mha = at.MultiHeadAttention(8, 2, rng=rng)
    with pytest.raises(ValueError, match=r"query must have shape \(B, length, 8\)"):
        mha.forward(np.ones((1, 3, 7)))
    with pytest.raises(ValueError, match="agree on B and S"):
        mha.forward(np.ones((1, 3, 8)), np.ones((1, 4, 8)), np.ones((1, 5, 8)))
    with pytest.raises(ValueError, match="attn_mask"):
        mha.forward(np.ones((1, 3, 8)), attn_mask=np.ones((4, 3), bool))
    with pytest.raises(TypeError, match="attn_mask must be boolean"):
        mha.forward(np.ones((1, 3, 8)), attn_mask=np.ones((3, 3), int))
    with pytest.raises(ValueError,
                       match=r"key_padding_mask \(B, S\) of shape \(1, 4\) "
                             r"does not broadcast to \(1, 3\)"):
        mha.forward(np.ones((1, 3, 8)), key_padding_mask=np.zeros((1, 4), bool))
    with pytest.raises(TypeError, match="key_padding_mask must be a boolean"):
        mha.forward(np.ones((1, 3, 8)), key_padding_mask=np.zeros((1, 3), int))
    with pytest.raises(ValueError, match="backward needs"):
        at.MultiHeadAttention(8, 2, rng=rng).backward(np.ones((1, 3, 8)))
    assert at.MultiHeadAttention(8, 2, bias=False, rng=rng).b_q is None


def test_float32_input_keeps_its_dtype(rng):
    mha = at.MultiHeadAttention(8, 4, num_kv_heads=2, rng=rng)
    x = rng.standard_normal((2, 5, 8))
    out64 = mha.forward(x, is_causal=True)
    out32 = mha.forward(x.astype(np.float32), is_causal=True)
    assert out32.dtype == np.float32
    assert_close(out32, out64, dtype=np.float32, rtol=1e-4, atol=1e-5)
    dx, _, _ = mha.backward(np.ones_like(out32))
    assert dx.dtype == np.float32


def test_rope_inside_the_layer_backward_and_cache(rng):
    mha = at.MultiHeadAttention(8, 2, num_kv_heads=1, rng=rng, rope=True)
    x = rng.standard_normal((1, 6, 8))
    grad_check(lambda x: mha.forward(x, is_causal=True),
               lambda g, x: ((mha.forward(x, is_causal=True), mha.backward(g))[1][0],), [x],
               rng=rng)
    full = mha.forward(x, is_causal=True)
    cache = mha.new_cache()
    steps = [mha.forward(x[:, :2], is_causal=True, cache=cache)]
    steps += [mha.forward(x[:, t:t + 1], is_causal=True, cache=cache) for t in range(2, 6)]
    assert_close(np.concatenate(steps, axis=1), full,
                 what="RoPE decoding with the cache vs full pass")
    plain = at.MultiHeadAttention(8, 2, num_kv_heads=1, rng=np.random.default_rng(0))
    plain.params = dict(mha.params)
    assert not np.allclose(plain.forward(x, is_causal=True),
                           full), "rope=True must change the output"
    with pytest.raises(ValueError, match="even head dim"):
        at.MultiHeadAttention(6, 2, rope=True)


# NaN and infinities: "masked means absent" (docs/design.md §3) through the layer.

def test_nan_in_a_padded_key_token_changes_nothing(rng):
    """A padding token full of NaN (key_padding_mask hides it): outputs, input gradients and
    parameter gradients equal those with a finite token there (PyTorch gives NaN everywhere)."""
    mha = at.MultiHeadAttention(8, 2, num_kv_heads=1, rng=rng)
    for name in ("b_q", "b_k", "b_v", "b_o"):
        mha.params[name][:] = rng.standard_normal(mha.params[name].shape)
    x, mem = rng.standard_normal((2, 3, 8)), rng.standard_normal((2, 5, 8))
    kpm = np.zeros((2, 5), bool)
    kpm[1, 3:] = True  # the last two tokens of batch 1 are padding
    g = rng.standard_normal((2, 3, 8))
    clean_out = mha.forward(x, mem, mem, key_padding_mask=kpm)
    clean_in = mha.backward(g)
    clean_grads = dict(mha.grads)
    dirty = mem.copy()
    dirty[1, 3] = np.nan
    dirty[1, 4, 2] = np.inf
    out = mha.forward(x, dirty, dirty, key_padding_mask=kpm)
    d_in = mha.backward(g)
    assert_close(out, clean_out, what="output with NaN padding")
    assert_close(d_in[0], clean_in[0], what="grad of query")
    assert_close(d_in[1], clean_in[1], what="grad of key")
    for name, want in clean_grads.items():
        assert_close(mha.grads[name], want, what=f"grad of {name} with NaN padding")


def test_nan_token_under_a_causal_mask_reaches_only_later_rows(rng):
    mha = at.MultiHeadAttention(8, 2, rng=rng)
    x = rng.standard_normal((1, 6, 8))
    clean = mha.forward(x, is_causal=True)
    x[0, 3, 1] = np.nan
    out = mha.forward(x, is_causal=True)
    assert_close(out[:, :3], clean[:, :3], what="rows before the NaN token")
    assert np.isnan(out[:, 3:]).all(), "rows that see the NaN token are NaN"


# An omitted key, and inputs edited between forward and backward (issue #14).

def test_omitted_key_means_the_query_gradient_includes_the_key_path(rng):
    """forward(x, None, v): the key defaults to the query, so grad_query is d/dx of f(x, x, v)."""
    mha = at.MultiHeadAttention(6, 2, vdim=5, rng=rng)
    x, v = rng.standard_normal((2, 4, 6)), rng.standard_normal((2, 4, 5))
    g = rng.standard_normal((2, 4, 6))
    mha.forward(x, x, v, is_causal=True)
    dq, dk, dv = mha.backward(g)
    mha.forward(x, None, v, is_causal=True)
    got = mha.backward(g)
    assert got[1] is None, "no separate key was given, so no separate key gradient"
    assert_close(got[0], dq + dk, what="grad of query = query path + key path")
    assert_close(got[2], dv, what="grad of value")
    def backward(g, x, v):
        mha.forward(x, None, v, is_causal=True)
        d_query, _, d_value = mha.backward(g)
        return d_query, d_value

    grad_check(lambda x, v: mha.forward(x, None, v, is_causal=True), backward, [x, v], rng=rng)


@pytest.mark.parametrize("edited", ["query", "key", "value", "attn_mask", "key_padding_mask"])
def test_backward_does_not_depend_on_inputs_edited_in_place(rng, edited):
    mha = at.MultiHeadAttention(8, 2, rng=rng)
    x, mem = rng.standard_normal((2, 3, 8)), rng.standard_normal((2, 5, 8))
    inputs = dict(query=x, key=mem.copy(), value=mem.copy(), attn_mask=rng.standard_normal((3, 5)),
                  key_padding_mask=np.array([[False] * 5, [False, False, False, True, True]]))
    g = rng.standard_normal((2, 3, 8))
    mha.forward(**{k: a.copy() for k, a in inputs.items()})
    expected, expected_grads = mha.backward(g), dict(mha.grads)
    mha.forward(**inputs)
    if inputs[edited].dtype == bool:
        inputs[edited][...] = ~inputs[edited]
    else:
        inputs[edited] += rng.standard_normal(inputs[edited].shape)  # in place, after forward
    got = mha.backward(g)
    for name, a, b in zip(("query", "key", "value"), got, expected, strict=True):
        assert_close(a, b, what=f"grad of {name} after editing {edited} in place")
    for name, want in expected_grads.items():
        assert_close(mha.grads[name], want, what=f"grad of {name} after editing {edited} in place")
