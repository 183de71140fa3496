"""Programmable attention (chapter 16), NumPy backend: the shared flex test bodies, and the block
mask's own tests against PyTorch's create_block_mask.

The bodies every flex backend runs live in tests/flex_backend_cases.py (class TestNumPy).
"""
import functools
import warnings

import flex_backend_cases as cases
import numpy as np
import pytest

import attention_scratch as at
from attention_scratch import flex_mods, flex_patterns
from attention_scratch.backends import unavailable_reason
from attention_scratch.block_mask import FULL, PARTIAL, SKIP
from attention_scratch.testing import assert_close, attention_oracle

NUMPY = cases.Backend("NumPy", functools.partial(at.flex_attention, backend="numpy"),
                      functools.partial(at.flex_attention_backward, backend="numpy"))


class TestNumPy(cases.SharedFlexTests):
    """The shared flex bodies on the NumPy reference."""

    backend = NUMPY


def torch_block_mask(torch, mask_mod, B, H, L, S, block):
    from torch.nn.attention.flex_attention import create_block_mask

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_block_mask(mask_mod, B, H, L, S, device="cpu", BLOCK_SIZE=block)


def test_causal_sparsity_is_pytorchs(torch):
    """The issue's number, checked against PyTorch's own create_block_mask."""
    ours = at.create_block_mask(lambda b, h, q, kv: q >= kv, None, None, 1024, 1024,
                                BLOCK_SIZE=64)
    theirs = torch_block_mask(torch, lambda b, h, q, kv: q >= kv, None, None, 1024, 1024, 64)
    assert ours.sparsity() == theirs.sparsity()
    assert ours.counts() == {"skip": 120, "partial": 16, "full": 120}


@pytest.mark.parametrize("L,S,block", [(100, 130, 16), (64, 64, 8), (33, 70, (8, 16)),
                                       (5, 200, 32)])
def test_tiles_and_sparsity_match_pytorch(torch, rng, L, S, block):
    """Random documents, windows and prefixes, with B and H: PyTorch's to_dense (visited tiles),
    full tiles and sparsity."""
    cuts = np.sort(rng.choice(np.arange(1, max(L, S)), size=4, replace=False))
    doc = np.searchsorted(cuts, np.arange(max(L, S)), side="right")
    tdoc = torch.from_numpy(doc)
    reach = rng.integers(0, 40, size=3)
    treach = torch.from_numpy(reach)

    def ours(b, h, q, kv):
        return (doc[q] == doc[kv]) & (kv <= q + reach[h] * (b + 1))

    def theirs(b, h, q, kv):
        return (tdoc[q] == tdoc[kv]) & (kv <= q + treach[h] * (b + 1))

    bm = at.create_block_mask(ours, 2, 3, L, S, BLOCK_SIZE=block)
    tbm = torch_block_mask(torch, theirs, 2, 3, L, S, block)
    np.testing.assert_array_equal(bm.to_dense(), tbm.to_dense().numpy())
    full = np.zeros_like(bm.to_dense())
    for b in range(2):
        for h in range(3):
            for r in range(full.shape[2]):
                n = tbm.full_kv_num_blocks[b, h, r]
                full[b, h, r, tbm.full_kv_indices[b, h, r, :n].numpy()] = 1
    np.testing.assert_array_equal(bm.kinds == FULL, full == 1)
    assert bm.sparsity() == pytest.approx(tbm.sparsity(), abs=1e-12)
    assert bm.shape == tuple(tbm.shape)


def test_mask_is_what_the_mask_mod_says(rng):
    """BlockMask.mask(): the element mask equals mask_mod on the whole grid."""
    doc = np.repeat(np.arange(4), 9)
    bm = at.create_block_mask(flex_mods.document(doc), None, None, 36, 36, BLOCK_SIZE=8)
    i, j = np.arange(36)[:, None], np.arange(36)[None, :]
    np.testing.assert_array_equal(bm.mask()[0, 0], (doc[i] == doc[j]) & (j <= i))


def test_mods_are_called_only_where_the_block_mask_says(rng):
    """score_mod once per visited tile, mask_mod once per partial tile; skipped tiles never."""
    q, k, v, _ = cases.make_inputs(rng, B=1, hq=2, hkv=2, L=32, S=32)
    bm = at.create_block_mask(flex_mods.causal(), None, None, 32, 32, BLOCK_SIZE=8)
    calls = {"score": [], "mask": []}

    def score_mod(s, b, h, qi, kv):
        calls["score"].append((int(qi.min()) // 8, int(kv.min()) // 8))
        return s

    def mask_mod(b, h, qi, kv):
        calls["mask"].append((int(qi.min()) // 8, int(kv.min()) // 8))
        return kv <= qi

    bm = at.BlockMask(bm.kinds, mask_mod, bm.seq_lengths, bm.block_size)
    at.flex_attention(q, k, v, score_mod=score_mod, block_mask=bm)
    kinds = bm.kinds[0, 0]
    visited = {(r, c) for r, c in zip(*np.nonzero(kinds != SKIP), strict=True)}
    assert sorted(calls["score"]) == sorted(visited)
    assert sorted(calls["mask"]) == sorted(zip(*np.nonzero(kinds == PARTIAL), strict=True))
    assert len(visited) == 10  # 4 diagonal + 6 below it, of 16


def test_block_mask_errors():
    with pytest.raises(TypeError, match="mask_mod must be a function"):
        at.create_block_mask(None, None, None, 4, 4)
    with pytest.raises(TypeError, match="mask_mod must return booleans"):
        at.create_block_mask(lambda b, h, q, kv: kv - q, None, None, 4, 4)
    with pytest.raises(ValueError, match="mask_mod failed on index arrays"):
        at.create_block_mask(lambda b, h, q, kv: [1, 2][kv], None, None, 4, 4)
    with pytest.raises(ValueError, match="BLOCK_SIZE must be a positive integer"):
        at.create_block_mask(flex_mods.causal(), None, None, 4, 4, BLOCK_SIZE=0)
    with pytest.raises(ValueError, match="Q_LEN must be a non-negative integer"):
        at.create_block_mask(flex_mods.causal(), None, None, -1, 4)
    with pytest.raises(ValueError, match="backend must be one of"):
        at.flex_attention(np.ones((1, 2, 3)), np.ones((1, 2, 3)), np.ones((1, 2, 3)),
                          backend="cupy")


def test_public_names():
    for name in ("flex_attention", "flex_attention_backward", "create_block_mask", "BlockMask",
                 "ScoreMod"):
        assert name in at.__all__ and hasattr(at, name)


def test_linformer_with_the_identity_projection_is_softmax_attention(rng):
    q, k, v, _ = cases.make_inputs(rng, hq=2, hkv=2, L=9, S=11)
    eye = np.eye(11)
    ref, _, _ = attention_oracle(q, k, v)
    assert_close(flex_patterns.linformer_attention(q, k, v, eye, eye), ref, rtol=1e-12,
                 atol=1e-12, what="Linformer with P = I")
    proj = rng.standard_normal((4, 11)) / 2
    low = flex_patterns.linformer_attention(q, k, v, proj, proj)
    ref_low, _, _ = attention_oracle(q, proj @ k, proj @ v)  # attention over 4 mixed keys
    assert_close(low, ref_low, rtol=1e-12, atol=1e-12, what="Linformer, k = 4")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_lsh_attention_is_attention_within_buckets(rng, backend):
    """Against the dense oracle with the same-bucket mask in the original order."""
    if backend == "numba" and unavailable_reason("numba") is not None:
        pytest.skip(unavailable_reason("numba"))
    q, k, v, _ = cases.make_inputs(rng, B=2, hq=3, hkv=3, L=40, S=40)
    out, bm = flex_patterns.lsh_attention(q, k, v, 4, np.random.default_rng(5), block_size=8,
                                          backend=backend, return_block_mask=True)
    rotations = np.random.default_rng(5).standard_normal((q.shape[-1], 2))
    bq, bk = flex_patterns.lsh_buckets(q, rotations), flex_patterns.lsh_buckets(k, rotations)
    keep = bq[..., :, None] == bk[..., None, :]  # (B, H, L, S)
    ref, _, _ = attention_oracle(q, k, v, attn_mask=keep)
    assert_close(out, ref, rtol=1e-10, atol=1e-10, what=f"LSH attention ({backend})")
    assert bm.sparsity() > 0 and len(np.unique(bq)) > 1


def test_library_mods_match_the_exercise_functions(rng):
    """document() and soft_cap() repeat the expressions of document_keep and soft_cap_scores."""
    doc = rng.integers(0, 4, size=30)
    q, kv = np.arange(30)[:, None], np.arange(30)[None, :]
    for causal in (True, False):
        np.testing.assert_array_equal(flex_mods.document(doc, causal)(0, 0, q, kv),
                                      flex_mods.document_keep(doc, q, kv, causal))
    s = rng.standard_normal((4, 5)) * 4
    capped, derivative = flex_mods.soft_cap_scores(s, 1.5)
    mod = flex_mods.soft_cap(1.5)
    np.testing.assert_array_equal(mod(s, 0, 0, q[:4], kv[:, :5]), capped)
    np.testing.assert_array_equal(mod.derivative(s, 0, 0, q[:4], kv[:, :5]), derivative)
