"""Flash attention (NumPy backend): the shared backend test bodies,
and the NumPy reference's own tests.

The bodies every backend runs against the float64 oracle live in tests/flash_backend_cases.py
(class TestNumPy below). Here: agreement with PyTorch to 1e-10 for every block size, the
block schedule and the tiles the kernels visit, peak memory, and argument errors.
"""
import tracemalloc

import flash_backend_cases as cases
import numpy as np
import pytest
from flash_backend_cases import make_inputs

import attention_scratch as at
import attention_scratch.flash as flash_mod
from attention_scratch.flash import block_schedule, flash_attention, flash_attention_backward
from attention_scratch.testing import assert_close, reference_mask

NUMPY = cases.Backend("NumPy", flash_attention, flash_attention_backward)


class TestNumPy(cases.SharedFlashTests):
    """The test bodies every backend runs (tests/flash_backend_cases.py), on the NumPy reference."""

    backend = NUMPY
    tiled_examples = 25


def run_flash(q, k, v, g, mask, bq, bk):
    return cases.run(NUMPY, q, k, v, g, mask, bq, bk)


def torch_reference(torch, q, k, v, g, mask):
    """PyTorch SDPA with the oracle's boolean mask, autograd gradients,
    and logsumexp of masked scores."""
    causal, align, window = mask
    L, S, E = q.shape[-2], k.shape[-2], q.shape[-1]
    keep = torch.from_numpy(reference_mask(L, S, is_causal=causal, causal_align=align,
                                           window=window))
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(
        tq, tk, tv, attn_mask=keep, enable_gqa=q.shape[-3] != k.shape[-3])
    out.backward(torch.from_numpy(g))
    rep = q.shape[-3] // k.shape[-3]
    scores = tq.detach() @ tk.detach().repeat_interleave(rep, dim=-3).transpose(-1, -2) / np.sqrt(E)
    lse = torch.logsumexp(scores.masked_fill(~keep, -float("inf")), dim=-1)
    return out.detach().numpy(), lse.numpy(), (tq.grad.numpy(), tk.grad.numpy(), tv.grad.numpy())


@pytest.mark.parametrize("mask", cases.MASKS, ids=cases.MASK_IDS)
@pytest.mark.parametrize("L,S", [(11, 13), (13, 13), (1, 13)])
def test_every_block_size_agrees_with_pytorch_to_1e_10(torch, rng, mask, L, S):
    q, k, v, g = make_inputs(rng, L, S)
    ref_out, ref_lse, ref_grads = torch_reference(torch, q, k, v, g, mask)
    for block in range(1, max(L, S) + 3):  # every size, up to larger than both sequences
        out, lse, grads = run_flash(q, k, v, g, mask, block, block)
        where = f"block={block}, mask={mask}, L={L}, S={S}"
        assert_close(out, ref_out, rtol=1e-10, atol=1e-10, what=f"output vs torch ({where})")
        assert_close(lse, ref_lse, rtol=1e-10, atol=1e-10, what=f"lse vs torch ({where})")
        for name, got, ref in zip(("dQ", "dK", "dV"), grads, ref_grads, strict=True):
            assert_close(got, ref, rtol=1e-10, atol=1e-10, what=f"{name} vs torch ({where})")


def test_l_greater_than_s_top_left_agrees_with_pytorch(torch, rng):
    q, k, v, g = make_inputs(rng, 13, 11)
    mask = (True, "top_left", None)
    ref_out, ref_lse, ref_grads = torch_reference(torch, q, k, v, g, mask)
    for block in (1, 2, 5, 12, 14):
        out, lse, grads = run_flash(q, k, v, g, mask, block, block)
        assert_close(out, ref_out, rtol=1e-10, atol=1e-10, what=f"output vs torch, block={block}")
        assert_close(lse, ref_lse, rtol=1e-10, atol=1e-10, what=f"lse vs torch, block={block}")
        for got, ref in zip(grads, ref_grads, strict=True):
            assert_close(got, ref, rtol=1e-10, atol=1e-10, what=f"gradient vs torch, block={block}")


def test_ragged_shapes_with_block_size_one(rng):
    q, k, v, g = make_inputs(rng, 97, 131, E=59, Ev=37, hq=1, hkv=1)
    cases.check_against_oracle(NUMPY, q, k, v, g, (True, "bottom_right", None), 1, 1)


# Block skipping: the schedule is exact, and the kernels follow it.

@pytest.mark.parametrize("mask", cases.ALL_MASKS, ids=cases.ALL_MASK_IDS)
@pytest.mark.parametrize("L,S,bq,bk", [(17, 23, 4, 5), (23, 17, 5, 4), (16, 16, 4, 4),
                                       (1, 9, 3, 2)])
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


def test_the_hypothesis_profile_sets_the_number_of_tiled_examples():
    """HYPOTHESIS_PROFILE=thorough reaches the tiled-equals-dense property of every backend."""
    import os

    from hypothesis import settings

    def count(profile):
        calls = []
        settings.load_profile(profile)
        try:
            cases.run_hypothesis(lambda **kw: calls.append(kw), examples_by_default=2)
        finally:
            settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
        return len(calls)

    assert count("default") == 2
    assert count("thorough") == 20
