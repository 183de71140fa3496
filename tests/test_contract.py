"""The argument contract: AttentionArgs, the integer band, TilePlan,
and what each backend reports."""
import dataclasses

import numpy as np
import pytest

import attention_scratch as at
from attention_scratch import bands
from attention_scratch.backends import tile_plan
from attention_scratch.backends.cuda import emulator as cuda_emulation
from attention_scratch.contract import DEFAULT_BLOCK, AttentionArgs, TilePlan, attention_args
from attention_scratch.testing import reference_mask


def test_attention_args_holds_the_kernel_layout_and_is_frozen(rng):
    q = rng.standard_normal((2, 3, 6, 5, 4))  # (B1, B2, Hq, L, E)
    k, v = rng.standard_normal((2, 3, 2, 7, 4)), rng.standard_normal((2, 3, 2, 7, 3))
    args = attention_args(q.astype(np.float16), k, v, True, enable_gqa=True, block_q=8)
    assert isinstance(args, AttentionArgs)
    assert args.q.shape == (6, 2, 3, 5, 4) and args.k.shape == (6, 2, 1, 7, 4)  # (N, Hkv, G, L, E)
    assert (args.L, args.S, args.E, args.Ev, args.heads, args.kv_heads, args.group) == (5, 7, 4, 3,
                                                                                        6, 2, 3)
    assert args.lead == (2, 3) and args.output_shape == (2, 3, 6, 5, 3) and args.lse_shape == (2, 3,
                                                                                               6, 5)
    assert args.dtype == np.float64 and args.acc_dtype == np.float64
    assert args.scale == pytest.approx(0.5) and args.nonfinite is None
    assert args.plan == TilePlan((8, DEFAULT_BLOCK), (8, DEFAULT_BLOCK))
    with pytest.raises(dataclasses.FrozenInstanceError):
        args.scale = 1.0
    half = attention_args(*(a.astype(np.float16) for a in (q, k, v)), enable_gqa=True)
    assert half.dtype == np.float16 and half.acc_dtype == np.float32


def test_folded_heads_keep_the_kv_head_of_each_query_head(rng):
    q, k, v = rng.standard_normal((2, 4, 3, 5)), rng.standard_normal((2, 2, 6,
                                                                      5)), rng.standard_normal((2,
                                                                                                2,
                                                                                                6,
                                                                                                1))
    args = attention_args(q, k, v, enable_gqa=True)
    q3, k3 = args.folded(args.q, np.float32), args.folded(args.k)
    assert q3.shape == (8, 3, 5) and q3.dtype == np.float32 and q3.flags.c_contiguous
    assert k3.shape == (4, 6, 5)
    for h in range(8):  # folded query head h = (batch h // 4, head h % 4) reads kv head h // G
        b, head = divmod(h, 4)
        np.testing.assert_array_equal(q3[h], q[b, head].astype(np.float32))
        np.testing.assert_array_equal(k3[h // args.group], k[b, head // 2])


@pytest.mark.parametrize("causal,align,window",
                         [(False, "top_left", None), (True, "top_left", None),
                          (True, "bottom_right", (2, None)), (False, "top_left", (0, 1)),
                          (False, "top_left", (9, 9))])
@pytest.mark.parametrize("L,S", [(5, 8), (8, 5), (1, 1), (0, 3), (3, 0)])
def test_the_integer_band_is_the_reference_mask(L, S, causal, align, window):
    lo, hi = attention_args(np.zeros((1, L, 2)), np.zeros((1, S, 2)), np.zeros((1, S, 2)), causal,
                            causal_align=align, window=window).band
    assert isinstance(lo, int) and isinstance(hi, int) and -L <= lo <= S and -L <= hi <= S
    offsets = np.arange(S)[None, :] - np.arange(L)[:, None]  # (L, S): j - i
    keep = reference_mask(L, S, is_causal=causal, causal_align=align, window=window)
    np.testing.assert_array_equal((offsets >= lo) & (offsets <= hi), keep)


def test_a_shifted_integer_band_is_the_mask_of_the_sub_problem():
    L, S = 9, 11
    band = bands.integer_band(bands.mask_band(L, S, True, "bottom_right", (3, None)), L, S)
    keep = reference_mask(L, S, is_causal=True, causal_align="bottom_right", window=(3, None))
    offsets = np.arange(S)[None, :] - np.arange(L)[:, None]
    for i0, j0 in ((0, 4), (3, 0), (5, 7)):
        lo, hi = bands.shift_band(band, i0, j0)
        local = offsets[: L - i0, : S - j0]  # j' - i' of the sub-problem
        np.testing.assert_array_equal((local >= lo) & (local <= hi), keep[i0:, j0:])


def test_backward_inputs_name_the_argument_of_the_wrong_shape(rng):
    q, k, v = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 5,
                                                                   3)), rng.standard_normal((2, 5,
                                                                                             2))
    args = attention_args(q, k, v)
    good = (np.zeros((2, 4, 2)), np.zeros((2, 4, 2)), np.zeros((2, 4)))
    rows, g, _, lse = args.backward_inputs(*good)
    assert rows is None and g.shape == (1, 2, 1, 4, 2) and lse.shape == (1, 2, 1, 4)
    for i, name in enumerate(("grad_out", "out", "lse")):
        bad = list(good)
        bad[i] = np.zeros((2, 3, 2))
        with pytest.raises(ValueError,
                           match=rf"{name} must have shape \({', '.join(map(str, good[i].shape))}"):
            args.backward_inputs(*bad)


def test_the_numpy_and_numba_paths_run_the_tiles_requested(rng):
    q, k, v = rng.standard_normal((1, 2, 30, 8)), rng.standard_normal((1, 2, 40,
                                                                       8)), rng.standard_normal((1,
                                                                                                 2,
                                                                                                 40,
                                                                                                 8))
    assert tile_plan(q, k, v, block_q=7, block_k=13) == TilePlan((7, 13), (7, 13))
    if at.backends.unavailable_reason("numba") is None:
        assert tile_plan(q, k, v, block_q=7, block_k=13, backend="numba").used == (7, 13)


@pytest.mark.skipif(cuda_emulation.unavailable_reason() is not None,
                    reason="no C++ compiler for the emulation")
def test_the_cuda_path_reports_the_tiles_it_runs(rng):
    q, k, v = (rng.standard_normal((1, 2, 300, 64)).astype(np.float16) for _ in range(3))
    plan = cuda_emulation.tile_plan(q, k, v, tensor_cores="mma", smem_limit=99 * 1024)
    assert plan.requested == (64, 64) and plan.used == (128, 64) and plan.kernel == "flash_fwd_mma"
    assert "fixed 128x64 tiles" in plan.note
    scalar = cuda_emulation.tile_plan(q, k, v, block_q=1024, block_k=512)  # more than a block holds
    assert scalar.kernel == "flash_fwd_scalar" and scalar.used[0] < 1024 and scalar.used[1] < 512
    assert scalar.note.startswith("reduced")
    small = cuda_emulation.tile_plan(q, k, v, block_q=16, block_k=16, backward=True)
    assert small == TilePlan((16, 16), (16, 16), kernel="flash_bwd_dkdv")
