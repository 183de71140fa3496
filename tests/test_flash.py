"""Flash attention (NumPy backend) against the float64 oracle and PyTorch, for every block size."""
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import attention_scratch as at
import attention_scratch.flash as flash_mod
from attention_scratch.flash import block_schedule, flash_attention, flash_attention_backward
from attention_scratch.testing import (assert_close, attention_oracle, attention_oracle_backward,
                                       grad_check, reference_mask)

# (is_causal, causal_align, window): none of these leaves a row empty when L <= S.
MASKS = [
    (False, "top_left", None),
    (True, "top_left", None),
    (True, "bottom_right", None),
    (False, "top_left", (3, 1)),
    (True, "bottom_right", (4, None)),
]
MASK_IDS = ["none", "causal-tl", "causal-br", "window(3,1)", "causal-br+window(4,-)"]


def make_inputs(rng, L, S, E=5, Ev=7, hq=4, hkv=2, lead=(1,), dtype=np.float64):
    q = rng.standard_normal(lead + (hq, L, E)).astype(dtype)
    k = rng.standard_normal(lead + (hkv, S, E)).astype(dtype)
    v = rng.standard_normal(lead + (hkv, S, Ev)).astype(dtype)
    g = rng.standard_normal(lead + (hq, L, Ev)).astype(dtype)
    return q, k, v, g


def run_flash(q, k, v, g, mask, bq, bk):
    causal, align, window = mask
    kw = dict(enable_gqa=q.shape[-3] != k.shape[-3], causal_align=align, window=window,
              block_q=bq, block_k=bk)
    out, lse = flash_attention(q, k, v, causal, return_lse=True, **kw)
    grads = flash_attention_backward(g, q, k, v, out, lse, causal, **kw)
    return out, lse, grads


def check_against_oracle(q, k, v, g, mask, bq, bk, **tol):
    causal, align, window = mask
    out, lse, grads = run_flash(q, k, v, g, mask, bq, bk)
    ref_out, ref_lse, _ = attention_oracle(q, k, v, is_causal=causal, causal_align=align, window=window)
    ref_grads = attention_oracle_backward(g, q, k, v, is_causal=causal, causal_align=align, window=window)
    where = f"block_q={bq}, block_k={bk}, mask={mask}, L={q.shape[-2]}, S={k.shape[-2]}"
    assert_close(out, ref_out, what=f"output ({where})", **tol)
    assert_close(lse, ref_lse, what=f"log-sum-exp ({where})", **tol)
    for name, got, ref in zip(("dQ", "dK", "dV"), grads, ref_grads):
        assert_close(got, ref, what=f"{name} ({where})", **tol)


def torch_reference(torch, q, k, v, g, mask):
    """PyTorch SDPA with the oracle's boolean mask, autograd gradients, and logsumexp of masked scores."""
    causal, align, window = mask
    L, S, E = q.shape[-2], k.shape[-2], q.shape[-1]
    keep = torch.from_numpy(reference_mask(L, S, is_causal=causal, causal_align=align, window=window))
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(
        tq, tk, tv, attn_mask=keep, enable_gqa=q.shape[-3] != k.shape[-3])
    out.backward(torch.from_numpy(g))
    rep = q.shape[-3] // k.shape[-3]
    scores = tq.detach() @ tk.detach().repeat_interleave(rep, dim=-3).transpose(-1, -2) / np.sqrt(E)
    lse = torch.logsumexp(scores.masked_fill(~keep, -float("inf")), dim=-1)
    return out.detach().numpy(), lse.numpy(), (tq.grad.numpy(), tk.grad.numpy(), tv.grad.numpy())


@pytest.mark.parametrize("mask", MASKS, ids=MASK_IDS)
@pytest.mark.parametrize("L,S", [(11, 13), (13, 13), (1, 13)])
def test_every_block_size_agrees_with_pytorch_to_1e_10(torch, rng, mask, L, S):
    q, k, v, g = make_inputs(rng, L, S)
    ref_out, ref_lse, ref_grads = torch_reference(torch, q, k, v, g, mask)
    for block in range(1, max(L, S) + 3):  # every size, up to larger than both sequences
        out, lse, grads = run_flash(q, k, v, g, mask, block, block)
        where = f"block={block}, mask={mask}, L={L}, S={S}"
        assert_close(out, ref_out, rtol=1e-10, atol=1e-10, what=f"output vs torch ({where})")
        assert_close(lse, ref_lse, rtol=1e-10, atol=1e-10, what=f"lse vs torch ({where})")
        for name, got, ref in zip(("dQ", "dK", "dV"), grads, ref_grads):
            assert_close(got, ref, rtol=1e-10, atol=1e-10, what=f"{name} vs torch ({where})")


def test_l_greater_than_s_top_left_agrees_with_pytorch(torch, rng):
    q, k, v, g = make_inputs(rng, 13, 11)
    mask = (True, "top_left", None)
    ref_out, ref_lse, ref_grads = torch_reference(torch, q, k, v, g, mask)
    for block in (1, 2, 5, 12, 14):
        out, lse, grads = run_flash(q, k, v, g, mask, block, block)
        assert_close(out, ref_out, rtol=1e-10, atol=1e-10, what=f"output vs torch, block={block}")
        assert_close(lse, ref_lse, rtol=1e-10, atol=1e-10, what=f"lse vs torch, block={block}")
        for got, ref in zip(grads, ref_grads):
            assert_close(got, ref, rtol=1e-10, atol=1e-10, what=f"gradient vs torch, block={block}")


def test_every_pair_of_block_sizes_matches_the_oracle(rng):
    q, k, v, g = make_inputs(rng, 9, 12, hq=2, hkv=1)
    for bq in range(1, 11):
        for bk in range(1, 14):
            check_against_oracle(q, k, v, g, (True, "bottom_right", (5, 1)), bq, bk)


@pytest.mark.parametrize("mask", MASKS, ids=MASK_IDS)
@pytest.mark.parametrize("bq,bk", [(7, 13), (16, 32), (64, 64), (97, 131), (128, 256)])
def test_ragged_shapes_match_the_oracle(rng, mask, bq, bk):
    q, k, v, g = make_inputs(rng, 97, 131, E=59, Ev=37, hq=2, hkv=1)
    check_against_oracle(q, k, v, g, mask, bq, bk)


def test_ragged_shapes_with_block_size_one(rng):
    q, k, v, g = make_inputs(rng, 97, 131, E=59, Ev=37, hq=1, hkv=1)
    check_against_oracle(q, k, v, g, (True, "bottom_right", None), 1, 1)


ALL_MASKS = MASKS + [(True, "bottom_right", (2, 0)), (False, "top_left", (0, 0)),
                     (False, "top_left", (None, 2)), (True, "top_left", (1, 3))]


@pytest.mark.parametrize("mask", ALL_MASKS)
@pytest.mark.parametrize("L,S", [(5, 17), (17, 17), (17, 5), (1, 17), (1, 1), (17, 1)])
def test_shapes_and_masks_match_the_oracle(rng, mask, L, S):
    # L > S with bottom-right alignment, and narrow windows, leave rows with nothing to attend to.
    q, k, v, g = make_inputs(rng, L, S, hq=3, hkv=3)
    for bq, bk in ((1, 1), (3, 4), (16, 16)):
        check_against_oracle(q, k, v, g, mask, bq, bk)


def test_rows_with_nothing_to_attend_give_zero_output_inf_lse_zero_gradient(rng):
    q, k, v, g = make_inputs(rng, 9, 4, hq=2, hkv=2)
    out, lse, (dq, dk, dv) = run_flash(q, k, v, g, (True, "bottom_right", None), 2, 3)
    empty = np.arange(9) < 9 - 4  # bottom-right causal: rows i < L - S see no key
    assert not any(np.isnan(a).any() for a in (out, lse, dq, dk, dv))
    assert np.all(out[..., empty, :] == 0), "empty rows must have output exactly 0"
    assert np.all(np.isposinf(lse[..., empty])), "empty rows must have log-sum-exp +inf"
    assert np.all(np.isfinite(lse[..., ~empty]))
    assert np.all(dq[..., empty, :] == 0), "empty rows must receive gradient 0"


def test_window_that_sees_no_key_gives_zeros(rng):
    q, k, v, g = make_inputs(rng, 6, 6, hq=1, hkv=1)
    # window (0, 0) keeps only key j = i + S - L; with L = 6 and S = 3 rows 0..2 have no such key.
    out, lse, grads = run_flash(q, k[..., :3, :], v[..., :3, :], g, (False, "top_left", (0, 0)), 2, 2)
    assert np.all(out[..., :3, :] == 0) and np.isposinf(lse[..., :3]).all()
    assert not np.isnan(grads[0]).any()


def test_batch_axes_are_free(rng):
    q, k, v, g = make_inputs(rng, 6, 8, hq=4, hkv=2, lead=(2, 3))
    check_against_oracle(q, k, v, g, (True, "top_left", None), 4, 3)
    q3, k3, v3, g3 = (a[0, 0] for a in (q, k, v, g))  # no batch axis at all: (H, L, E)
    check_against_oracle(q3, k3, v3, g3, (False, "top_left", (2, 2)), 4, 3)


def test_gqa_and_scale(rng):
    q, k, v, g = make_inputs(rng, 10, 12, hq=6, hkv=2)
    out, lse = flash_attention(q, k, v, True, scale=0.3, enable_gqa=True, block_q=3, block_k=5,
                               return_lse=True)
    ref_out, ref_lse, _ = attention_oracle(q, k, v, is_causal=True, scale=0.3)
    assert_close(out, ref_out, what="GQA output, scale=0.3")
    assert_close(lse, ref_lse, what="GQA lse, scale=0.3")
    grads = flash_attention_backward(g, q, k, v, out, lse, True, scale=0.3, enable_gqa=True,
                                     block_q=3, block_k=5)
    for got, ref in zip(grads, attention_oracle_backward(g, q, k, v, is_causal=True, scale=0.3)):
        assert_close(got, ref, what="GQA gradient, scale=0.3")


def test_gradients_match_central_differences(rng):
    q, k, v, _ = make_inputs(rng, 4, 5, E=3, Ev=2, hq=2, hkv=1)
    kw = dict(enable_gqa=True, window=(2, None), block_q=3, block_k=2)

    def backward(g, q, k, v):
        out, lse = flash_attention(q, k, v, True, return_lse=True, causal_align="bottom_right", **kw)
        return flash_attention_backward(g, q, k, v, out, lse, True, causal_align="bottom_right", **kw)

    grad_check(lambda q, k, v: flash_attention(q, k, v, True, causal_align="bottom_right", **kw),
               backward, [q, k, v])


@given(L=st.integers(1, 20), S=st.integers(1, 20), E=st.integers(1, 6), bq=st.integers(1, 24),
       bk=st.integers(1, 24), causal=st.booleans(), align=st.sampled_from(["top_left", "bottom_right"]),
       left=st.one_of(st.none(), st.integers(0, 8)), right=st.one_of(st.none(), st.integers(0, 8)),
       use_window=st.booleans(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=25)
def test_tiled_equals_dense_for_any_block_size(L, S, E, bq, bk, causal, align, left, right,
                                                use_window, seed):
    rng = np.random.default_rng(seed)
    q, k, v, g = make_inputs(rng, L, S, E=E, Ev=3, hq=2, hkv=1)
    check_against_oracle(q, k, v, g, (causal, align, (left, right) if use_window else None), bq, bk)


# Low precision: the error against the oracle is at most 2x that of plain dense NumPy in the same dtype.

def dense_in_dtype(q, k, v, g, causal):
    """Plain dense attention and its backward computed entirely in the input dtype (the baseline)."""
    L, S, E = q.shape[-2], k.shape[-2], q.shape[-1]
    keep = reference_mask(L, S, is_causal=causal)
    scale = q.dtype.type(1 / np.sqrt(E))
    p = at.softmax((q @ np.swapaxes(k, -1, -2)) * scale, where=keep)  # (..., L, S)
    out = p @ v
    dp = g @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    return out, (ds @ k * scale, np.swapaxes(ds, -1, -2) @ q * scale, np.swapaxes(p, -1, -2) @ g)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("causal", [False, True])
def test_low_precision_error_is_at_most_twice_dense_numpy(rng, dtype, causal):
    q, k, v, g = make_inputs(rng, 70, 90, E=16, Ev=16, hq=2, hkv=2, dtype=dtype)
    out, lse, grads = run_flash(q, k, v, g, (causal, "top_left", None), 32, 16)
    assert out.dtype == dtype and all(a.dtype == dtype for a in grads)
    assert lse.dtype == (np.float32 if dtype == np.float16 else dtype)
    ref_out, ref_lse, _ = attention_oracle(q, k, v, is_causal=causal)
    ref_grads = attention_oracle_backward(g, q, k, v, is_causal=causal)
    base_out, base_grads = dense_in_dtype(q, k, v, g, causal)
    eps = np.finfo(dtype).eps
    for name, got, base, ref in zip(("out", "dQ", "dK", "dV"), (out, *grads), (base_out, *base_grads),
                                    (ref_out, *ref_grads)):
        err = np.abs(got.astype(np.float64) - ref).max()
        base_err = np.abs(base.astype(np.float64) - ref).max()
        assert err <= 2 * base_err + eps, f"{name} in {np.dtype(dtype)}: error {err:.3g} > 2 x {base_err:.3g}"
    assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5, what=f"lse from {np.dtype(dtype)} input")


# Block skipping: the schedule is exact, and the kernels follow it.

@pytest.mark.parametrize("mask", ALL_MASKS)
@pytest.mark.parametrize("L,S,bq,bk", [(17, 23, 4, 5), (23, 17, 5, 4), (16, 16, 4, 4), (1, 9, 3, 2)])
def test_block_schedule_lists_exactly_the_nonempty_tiles(mask, L, S, bq, bk):
    causal, align, window = mask
    keep = reference_mask(L, S, is_causal=causal, causal_align=align, window=window)
    expected = []
    for qb in range(-(-L // bq)):
        for kb in range(-(-S // bk)):
            tile = keep[qb * bq:(qb + 1) * bq, kb * bk:(kb + 1) * bk]
            if tile.any():
                expected.append((qb, kb, "full" if tile.all() else "partial"))
    assert block_schedule(L, S, bq, bk, causal, align, window) == expected


def test_causal_skipping_visits_about_half_the_blocks():
    n_blocks = 1024 // 64
    visited = block_schedule(1024, 1024, 64, 64, is_causal=True)
    assert len(visited) == n_blocks * (n_blocks + 1) // 2 == 136  # of 256: 53 %
    assert sum(kind == "partial" for *_, kind in visited) == n_blocks  # only the diagonal is masked
    assert len(block_schedule(1024, 1024, 64, 64)) == 256


def test_kernels_visit_exactly_the_scheduled_tiles(rng, monkeypatch):
    q, k, v, g = make_inputs(rng, 40, 40, hq=1, hkv=1)
    calls = {"forward": 0, "backward": 0}
    forward_tile, recompute_probs = flash_mod.forward_tile, flash_mod.recompute_probs

    def counting_forward(*args, **kwargs):
        calls["forward"] += 1
        return forward_tile(*args, **kwargs)

    def counting_backward(*args, **kwargs):
        calls["backward"] += 1
        return recompute_probs(*args, **kwargs)

    monkeypatch.setattr(flash_mod, "forward_tile", counting_forward)
    monkeypatch.setattr(flash_mod, "recompute_probs", counting_backward)
    out, lse = flash_attention(q, k, v, True, block_q=8, block_k=8, return_lse=True)
    flash_attention_backward(g, q, k, v, out, lse, True, block_q=8, block_k=8)
    assert calls == {"forward": 15, "backward": 15}  # 5 blocks: 5·6/2 tiles of 25
    assert len(block_schedule(40, 40, 8, 8, True)) == 15


# Memory: nothing of size L x S is ever allocated.

def peak_fraction_of_square(N, E=64):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 1, N, E), dtype=np.float32) for _ in range(3))
    tracemalloc.start()
    try:
        out = flash_attention(q, k, v, is_causal=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (1, 1, N, E)
    return peak / (N * N * 4)


def test_peak_memory_is_under_5_percent_of_one_square_matrix():
    fraction = peak_fraction_of_square(3072)
    assert fraction <= 0.05, f"peak traced memory is {fraction:.1%} of one N x N float32 matrix"


@pytest.mark.slow
def test_peak_memory_at_n_8192_is_under_5_percent_of_one_square_matrix():
    fraction = peak_fraction_of_square(8192)
    assert fraction <= 0.05, f"peak traced memory is {fraction:.1%} of one N x N float32 matrix"


# Errors name the argument.

@pytest.mark.parametrize("kwargs,match", [
    (dict(backend="cuda"), "backend"),
    (dict(block_q=0), "block_q"),
    (dict(block_k=2.5), "block_k"),
    (dict(causal_align="middle"), "causal_align"),
    (dict(window=(1,)), "window"),
    (dict(window=(-1, 0)), "window"),
])
def test_bad_arguments_raise_value_error(rng, kwargs, match):
    q, k, v, _ = make_inputs(rng, 4, 4, hq=2, hkv=2)
    with pytest.raises(ValueError, match=match):
        flash_attention(q, k, v, **kwargs)


def test_shape_errors_name_the_shapes(rng):
    q, k, v, g = make_inputs(rng, 4, 5, hq=4, hkv=2)
    with pytest.raises(ValueError, match="enable_gqa"):
        flash_attention(q, k, v)
    with pytest.raises(ValueError, match="multiple"):
        flash_attention(q[..., :3, :, :], k, v, enable_gqa=True)
    with pytest.raises(ValueError, match="head dim"):
        flash_attention(q, k[..., :4], v, enable_gqa=True)
    with pytest.raises(ValueError, match="disagree"):
        flash_attention(q, k, v[..., :4, :], enable_gqa=True)
    out, lse = flash_attention(q, k, v, enable_gqa=True, return_lse=True)
    with pytest.raises(ValueError, match="lse"):
        flash_attention_backward(g, q, k, v, out, lse[..., :3], enable_gqa=True)
    with pytest.raises(ValueError, match="backend"):
        flash_attention_backward(g, q, k, v, out, lse, enable_gqa=True, backend="automatic")
    with pytest.raises(TypeError, match="query"):
        flash_attention(q.astype(complex), k, v, enable_gqa=True)


def test_public_names_are_exported():
    assert at.flash_attention is flash_attention
    assert at.flash_attention_backward is flash_attention_backward


@pytest.mark.parametrize("L,S", [(0, 5), (3, 0)])
def test_empty_sequences(rng, L, S):
    q, k, v, g = make_inputs(rng, L, S, hq=2, hkv=2)
    out, lse, (dq, dk, dv) = run_flash(q, k, v, g, (True, "bottom_right", None), 4, 4)
    assert out.shape == (1, 2, L, 7) and lse.shape == (1, 2, L)
    assert np.all(out == 0) and np.all(np.isposinf(lse)), "with no keys every row is empty"
    assert dq.shape == q.shape and dk.shape == k.shape and np.all(dq == 0)
