"""Split-KV decoding and simulated ring attention equal dense attention."""
import numpy as np
import pytest

from attention_scratch.decoding import combine_splits, ring_attention, split_kv_attention
from attention_scratch.testing import assert_close, attention_oracle

MASKS = [(False, "top_left", None), (True, "top_left", None), (True, "bottom_right", None),
         (False, "top_left", (5, 2)), (True, "bottom_right", (3, None))]


def inputs(rng, L, S, hq=4, hkv=2, E=8, Ev=5, dtype=np.float64):
    return (rng.standard_normal((2, hq, L, E)).astype(dtype),
            rng.standard_normal((2, hkv, S, E)).astype(dtype),
            rng.standard_normal((2, hkv, S, Ev)).astype(dtype))


def check(got_out, got_lse, q, k, v, mask, what):
    causal, align, window = mask
    ref_out, ref_lse, _ = attention_oracle(q, k, v, is_causal=causal, causal_align=align,
                                           window=window)
    assert_close(got_out, ref_out, what=f"output of {what}")
    assert_close(got_lse, ref_lse, what=f"lse of {what}")


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("L,S", [(1, 50), (1, 1), (6, 50), (50, 50), (50, 21)])
@pytest.mark.parametrize("num_splits", [1, 3, 64])
def test_split_kv_equals_dense(rng, mask, L, S, num_splits):
    q, k, v = inputs(rng, L, S)
    causal, align, window = mask
    out, lse = split_kv_attention(q, k, v, num_splits, causal, enable_gqa=True, causal_align=align,
                                  window=window, block_q=4, block_k=3, return_lse=True)
    check(out, lse, q, k, v, mask, f"split_kv_attention with {num_splits} splits")


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("L,S", [(1, 40), (40, 40), (23, 37), (37, 23)])
@pytest.mark.parametrize("world", [1, 4, 50])
def test_ring_attention_equals_dense(rng, mask, L, S, world):
    q, k, v = inputs(rng, L, S)
    causal, align, window = mask
    out, lse = ring_attention(q, k, v, world, causal, enable_gqa=True, causal_align=align,
                              window=window, block_q=4, block_k=5, return_lse=True)
    check(out, lse, q, k, v, mask, f"ring_attention on {world} devices")


def test_split_kv_decoding_agrees_with_pytorch(torch, rng):
    q, k, v = inputs(rng, 1, 300, hq=8, hkv=2)
    out = split_kv_attention(q, k, v, 8, enable_gqa=True)
    ref = torch.nn.functional.scaled_dot_product_attention(*(torch.from_numpy(a)
                                                             for a in (q, k, v)),
                                                           enable_gqa=True).numpy()
    assert_close(out, ref, rtol=1e-10, atol=1e-10, what="split-KV decoding vs torch SDPA")


def test_causal_ring_computes_only_the_lower_triangle_of_shard_pairs(rng):
    q, k, v = inputs(rng, 32, 32)
    world = 4
    (_, _), log = ring_attention(q, k, v, world, True, enable_gqa=True, return_lse=True,
                                 return_log=True)
    computed = [(r, s) for step in log for r, (s, status) in enumerate(step)
                if status == "computed"]
    assert sorted(computed) == [(r, s) for r in range(world) for s in range(r + 1)]
    # At step t device r holds the shard that started on device r - t.
    assert all(s == (r - t) % world for t, step in enumerate(log) for r, (s, _) in enumerate(step))


def test_ring_and_split_keep_dtype(rng):
    q, k, v = inputs(rng, 9, 12, dtype=np.float16)
    out = ring_attention(q, k, v, 3, True, enable_gqa=True)
    out2 = split_kv_attention(q, k, v, 3, True, enable_gqa=True)
    ref, _, _ = attention_oracle(q, k, v, is_causal=True)
    for got in (out, out2):
        assert got.dtype == np.float16
        assert_close(got, ref, what="float16 ring/split-KV against the float64 oracle")


def test_combine_splits_ignores_empty_chunks_and_survives_large_lse():
    outs = np.array([[[1.0, 0.0]], [[0.0, 0.0]], [[3.0, 2.0]]])  # (P=3, L=1, Ev=2)
    lses = np.array([[900.0], [np.inf], [900.0]])  # chunk 1 is empty
    out, lse = combine_splits(outs, lses)
    assert_close(out, np.array([[2.0, 1.0]]), what="combine of two equal-mass chunks and one empty")
    assert_close(lse, np.array([900.0 + np.log(2)]), what="combined lse")
    out, lse = combine_splits(np.zeros((2, 1, 2)), np.full((2, 1), np.inf))
    assert np.all(out == 0) and np.isposinf(lse).all()


@pytest.mark.parametrize("fn", [split_kv_attention, ring_attention])
def test_bad_counts_raise(rng, fn):
    q, k, v = inputs(rng, 3, 3, hq=2, hkv=2)
    with pytest.raises(ValueError, match="must be a positive integer"):
        fn(q, k, v, 0)


def test_combine_splits_names_the_arguments_and_the_shapes():
    with pytest.raises(ValueError, match=r"outs \(\.\.\., Ev\) and lses \(\.\.\.\) "
                                         r".* \(2, 4, 3\) and \(3, 4\)"):
        combine_splits(np.zeros((2, 4, 3)), np.zeros((3, 4)))


@pytest.mark.parametrize("trial", range(6))
def test_split_kv_and_ring_follow_masked_means_absent(rng, trial):
    """NaN and ±inf (docs/design.md §3): the partial results of chunks and shards merge to the
    oracle's."""

    q, k, v = (rng.standard_normal((1, 2, 9, 3)), rng.standard_normal((1, 1, 11, 3)),
               rng.standard_normal((1, 1, 11, 4)))
    for _ in range(1 + trial % 3):
        a = (q, k, v)[rng.integers(3)]
        a.flat[rng.integers(a.size)] = [np.nan, np.inf, -np.inf][rng.integers(3)]
    for kw in (dict(is_causal=True), dict(window=(3, 1)), dict()):
        ref, ref_lse, _ = attention_oracle(q, k, v, **kw)
        for name, (out, lse) in (("split", split_kv_attention(q, k, v, 3, enable_gqa=True,
                                                              return_lse=True, **kw)),
                                 ("ring", ring_attention(q, k, v, 3, enable_gqa=True,
                                                         return_lse=True, **kw))):
            assert_close(out, ref, what=f"{name} output {kw}")
            assert_close(lse, ref_lse, what=f"{name} lse {kw}")
