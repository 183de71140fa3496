"""Empty dimensions on every entry point beside the flash kernels (those run the shared bodies
case_empty_dimensions and case_head_dim_zero in tests/flash_backend_cases.py).

docs/design.md §3: B, H or L = 0 give empty results, as PyTorch does; S = 0 means every row has
nothing to attend to (output 0, lse +inf, gradients 0); E = 0 makes every score an empty
dot product, 0, so each row averages the values it may see (PyTorch gives the same).
"""
import copy

import numpy as np
import pytest

import attention_scratch as at
from attention_scratch.decoding import ring_attention, split_kv_attention
from attention_scratch.testing import assert_close
from attention_scratch.variants import sliding_window_attention

# (q shape, k shape, v shape): PyTorch-style 3-D and 4-D inputs with one empty axis.
EMPTY = [((0, 2, 3, 4), (0, 2, 5, 4), (0, 2, 5, 6)),  # B = 0
         ((2, 0, 3, 4), (2, 0, 5, 4), (2, 0, 5, 6)),  # H = 0
         ((0, 3, 4), (0, 5, 4), (0, 5, 6)),  # 3-D input, empty batch
         ((2, 2, 0, 4), (2, 2, 5, 4), (2, 2, 5, 6)),  # L = 0
         ((2, 2, 3, 4), (2, 2, 0, 4), (2, 2, 0, 6)),  # S = 0
         ((2, 2, 3, 0), (2, 2, 5, 0), (2, 2, 5, 6)),  # E = 0
         ((2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 0)),  # Ev = 0
         ((2, 4, 3, 4), (2, 2, 0, 4), (2, 2, 0, 6))]  # GQA, S = 0
IDS = ["B=0", "H=0", "3d-empty-batch", "L=0", "S=0", "E=0", "Ev=0", "gqa-S=0"]


def arrays(rng, shapes):
    return [rng.standard_normal(s) for s in shapes]


def torch_sdpa(torch, q, k, v, g, **kw):
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, **kw)
    out.backward(torch.tensor(g))
    return [out.detach().numpy()] + [t.grad.numpy() if t.grad is not None else np.zeros(t.shape)
                                     for t in (tq, tk, tv)]


@pytest.mark.parametrize("shapes", EMPTY, ids=IDS)
@pytest.mark.parametrize("kw", [{}, dict(is_causal=True), dict(attn_mask="bool"),
                                dict(attn_mask="float")],
                         ids=["plain", "causal", "bool-mask", "float-mask"])
def test_sdpa_empty_dimensions_agree_with_pytorch(torch, rng, shapes, kw):
    q, k, v = arrays(rng, shapes)
    L, S = q.shape[-2], k.shape[-2]
    kw = dict(kw)
    if kw.get("attn_mask") == "bool":
        kw["attn_mask"] = rng.random((L, S)) < 0.7
        kw["attn_mask"][:, :1] = True  # no fully masked row (PyTorch differs there before 2.5)
    elif kw.get("attn_mask") == "float":
        kw["attn_mask"] = rng.standard_normal((L, S))
    enable_gqa = q.shape[-3] != k.shape[-3]
    g = rng.standard_normal(q.shape[:-1] + v.shape[-1:])
    out, w = at.scaled_dot_product_attention(q, k, v, enable_gqa=enable_gqa, return_weights=True,
                                             **kw)
    grads = at.scaled_dot_product_attention_backward(g, q, k, v, enable_gqa=enable_gqa, **kw)
    assert w.shape == q.shape[:-1] + (S,)
    tkw = {n: (torch.tensor(a) if n == "attn_mask" else a) for n, a in kw.items()}
    expected = torch_sdpa(torch, q, k, v, g, enable_gqa=enable_gqa, **tkw)
    for name, got, want in zip(("out", "dq", "dk", "dv"), (out, *grads), expected, strict=True):
        assert got.shape == want.shape, f"{name}: {got.shape} vs PyTorch {want.shape}"
        assert_close(got, want, rtol=1e-10, atol=1e-12, what=f"{name} vs PyTorch, {shapes}")


@pytest.mark.parametrize("shapes", EMPTY, ids=IDS)
def test_decoding_and_variants_take_empty_dimensions(rng, shapes):
    q, k, v = arrays(rng, shapes)
    enable_gqa = q.shape[-3] != k.shape[-3]
    kw = dict(enable_gqa=enable_gqa, window=(2, 0), return_lse=True)
    ref, ref_lse = at.flash_attention(q, k, v, **kw)
    for name, (out, lse) in (("split_kv", split_kv_attention(q, k, v, 3, **kw)),
                             ("ring", ring_attention(q, k, v, 2, **kw)),
                             ("sliding_window", sliding_window_attention(q, k, v, block=2, **kw))):
        assert out.shape == ref.shape and lse.shape == ref_lse.shape, name
        assert_close(out, ref, what=f"{name} output, {shapes}")
        assert_close(lse, ref_lse, what=f"{name} lse, {shapes}")


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(0, 3, 4), (2, 0, 4), (2, 3, 0)], ids=["B=0", "N=0", "F=0"])
def test_linear_attention_and_performer_take_empty_dimensions(rng, shape, causal):
    q = rng.standard_normal(shape)
    v = rng.standard_normal(shape[:-1] + (5,))
    for out in (at.linear_attention(q, q, v, is_causal=causal),
                at.linear_attention_recurrent(q, q, v), at.linear_attention_chunked(q, q, v, 2)):
        assert out.shape == v.shape
    out = at.performer_attention(q, q, v, 8, causal, rng=rng)
    assert out.shape == v.shape
    # E = 0: all scores 0, so each row averages the values it sees (dense attention)
    if shape[-1] == 0:
        assert_close(out, at.scaled_dot_product_attention(q[:, None], q[:, None], v[:, None],
                                                          is_causal=causal)[:, 0], rtol=1e-6,
                     atol=1e-6)


def mha_and_torch(torch, rng, E=4, H=2):
    from test_multihead import copy_into_torch

    ours = at.MultiHeadAttention(E, H, rng=rng)
    theirs = torch.nn.MultiheadAttention(E, H, batch_first=True, dtype=torch.float64)
    copy_into_torch(torch, ours, theirs)
    return ours, theirs


@pytest.mark.parametrize("B,L,S", [(0, 3, 3), (2, 0, 3), (2, 3, 0), (2, 0, 0)])
def test_multihead_attention_empty_dimensions_agree_with_pytorch(torch, rng, B, L, S):
    ours, theirs = mha_and_torch(torch, rng)
    x, y = rng.standard_normal((B, L, 4)), rng.standard_normal((B, S, 4))
    g = rng.standard_normal((B, L, 4))
    out, w = ours.forward(x, y, y, need_weights=True)
    dx, dy, dv = ours.backward(g)
    tx, ty = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
    t_out, t_w = theirs(tx, ty, ty, need_weights=True, average_attn_weights=False)
    t_out.backward(torch.tensor(g))
    assert out.shape == t_out.shape and w.shape == t_w.shape
    assert_close(out, t_out.detach().numpy(), what="MHA output vs PyTorch")
    assert_close(w, t_w.detach().numpy(), what="weights vs PyTorch")
    assert_close(dx, tx.grad.numpy(), what="grad of query vs PyTorch")
    assert_close(dy + dv, ty.grad.numpy(), what="grad of key and value vs PyTorch")
    for name, p in theirs.named_parameters():
        if p.grad is not None and name == "out_proj.weight":
            assert_close(ours.grads["W_o"], p.grad.numpy().T, what="grad of W_o")
    if B and L:  # self-attention on an empty sequence / batch as well
        assert ours.forward(x, is_causal=True).shape == x.shape


def test_dropout_on_an_empty_batch(rng):
    q = np.zeros((0, 2, 3, 4))
    gen = np.random.default_rng(0)
    state = copy.deepcopy(gen)
    out = at.scaled_dot_product_attention(q, q, q, dropout_p=0.5, rng=gen)
    grads = at.scaled_dot_product_attention_backward(np.zeros(out.shape), q, q, q, dropout_p=0.5,
                                                     rng=state)
    assert out.shape == q.shape and all(g.shape == q.shape for g in grads)


def test_sinusoidal_encoding_of_no_position():
    assert at.sinusoidal_encoding(0, 8).shape == (0, 8)
    with pytest.raises(ValueError, match="length"):
        at.sinusoidal_encoding(-1, 8)


@pytest.mark.parametrize("L,S", [(3, 5), (0, 5), (3, 0)])
def test_sdpa_takes_two_dimensional_input_as_pytorch_does(torch, rng, L, S):
    """PyTorch's SDPA takes (L, E) inputs (no batch, no heads); so does ours, backward included."""
    q, k, v = rng.standard_normal((L, 4)), rng.standard_normal((S, 4)), rng.standard_normal((S, 2))
    g = rng.standard_normal((L, 2))
    out = at.scaled_dot_product_attention(q, k, v, is_causal=True)
    grads = at.scaled_dot_product_attention_backward(g, q, k, v, is_causal=True)
    expected = torch_sdpa(torch, q, k, v, g, is_causal=True)
    for name, got, want in zip(("out", "dq", "dk", "dv"), (out, *grads), expected, strict=True):
        assert got.shape == want.shape
        assert_close(got, want, rtol=1e-10, atol=1e-12, what=f"2-D {name} vs PyTorch")
