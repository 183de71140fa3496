"""The NumPy reference takes its array module from its inputs, so CuPy arrays work unchanged.

Without a GPU this is checked with a strict stand-in for CuPy (tests/fake_cupy.py): a NumPy
array type that claims to be CuPy's and, like CuPy, refuses to be mixed with host arrays.
A function that created a host array on the way (``np.zeros`` instead of ``xp.zeros``)
raises ``TypeError`` or returns a plain NumPy array, and these tests fail.
"""
import sys

import fake_cupy
import numpy as np
import pytest

from attention_scratch import (
    flash_attention,
    flash_attention_backward,
    logsumexp,
    online_logsumexp,
    online_softmax,
    ring_attention,
    softmax,
    softmax_backward,
    split_kv_attention,
)
from attention_scratch.testing import assert_close, attention_oracle


@pytest.fixture
def xp(monkeypatch):
    module = fake_cupy.make_module()
    monkeypatch.setitem(sys.modules, "cupy", module)
    return module


def test_the_stand_in_refuses_host_arrays(xp):
    a = xp.asarray(np.ones(3))
    with pytest.raises(TypeError, match="cannot be mixed"):
        np.where(np.array([True, False, True]), a, 0.0)
    with pytest.raises(TypeError, match="cannot be mixed"):
        a + np.ones(3)
    assert type(a + 1.0) is xp.ndarray and type(np.exp(a)) is xp.ndarray


def test_softmax_logsumexp_and_backward_stay_on_the_device(xp, rng):
    x = rng.standard_normal((3, 5, 7))
    keep = rng.random((5, 7)) < 0.7
    keep[0] = False  # an empty row
    dx = xp.asarray(x)
    for got, ref in ((softmax(dx), softmax(x)), (softmax(dx, where=xp.asarray(keep)),
                                                 softmax(x, where=keep)),
                     (logsumexp(dx, axis=1), logsumexp(x, axis=1)),
                     (softmax_backward(dx, softmax(dx)), softmax_backward(x, softmax(x)))):
        assert type(got) is xp.ndarray, f"got a {type(got)}: the result left the device"
        assert_close(got.get(), ref, what="device result vs NumPy result")


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_numpy_flash_attention_runs_on_device_arrays(xp, rng, dtype):
    q = rng.standard_normal((2, 4, 9, 5)).astype(dtype)
    k = rng.standard_normal((2, 2, 11, 5)).astype(dtype)
    v = rng.standard_normal((2, 2, 11, 3)).astype(dtype)
    g = rng.standard_normal((2, 4, 9, 3)).astype(dtype)
    # window (1, 1), bottom-right: key 0 is out of every row's reach and is zeroed on the device
    kw = dict(enable_gqa=True, causal_align="bottom_right", window=(1, 1), block_q=4, block_k=3)
    dq_, dk_, dv_, dg_ = (xp.asarray(a) for a in (q, k, v, g))
    out, lse = flash_attention(dq_, dk_, dv_, True, return_lse=True, **kw)
    grads = flash_attention_backward(dg_, dq_, dk_, dv_, out, lse, True, **kw)
    ref_out, ref_lse = flash_attention(q, k, v, True, return_lse=True, **kw)
    ref_grads = flash_attention_backward(g, q, k, v, ref_out, ref_lse, True, **kw)
    for got, ref, name in zip((out, lse, *grads), (ref_out, ref_lse, *ref_grads),
                              ("out", "lse", "dq", "dk", "dv"), strict=True):
        assert type(got) is xp.ndarray, f"{name} left the device"
        assert got.dtype == ref.dtype
        assert_close(got.get(), ref, rtol=0, atol=0,
                     what=f"{name}: device vs host (same operations)")


def test_the_oracle_accepts_device_arrays_and_answers_on_the_host(xp, rng):
    q, k, v = (rng.standard_normal((2, 6, 4)) for _ in range(3))
    out, lse, _ = attention_oracle(*(xp.asarray(a) for a in (q, k, v)), is_causal=True)
    ref, ref_lse, _ = attention_oracle(q, k, v, is_causal=True)
    assert type(out) is np.ndarray
    assert_close(out, ref, rtol=0, atol=0)
    assert_close(lse, ref_lse, rtol=0, atol=0)


def test_online_softmax_split_kv_and_ring_attention_stay_on_the_device(xp, rng):
    x = rng.standard_normal((3, 11))
    q = rng.standard_normal((2, 4, 9, 5))
    k, v = rng.standard_normal((2, 2, 13, 5)), rng.standard_normal((2, 2, 13, 3))
    dx, dq_, dk_, dv_ = (xp.asarray(a) for a in (x, q, k, v))
    kw = dict(is_causal=True, enable_gqa=True)
    for name, got, ref in (("online_softmax", online_softmax(dx, block=4),
                            online_softmax(x, block=4)),
                           ("online_logsumexp", online_logsumexp(dx, block=4),
                            online_logsumexp(x, block=4)),
                           ("split_kv_attention",
                            split_kv_attention(dq_, dk_, dv_, num_splits=3, **kw),
                            split_kv_attention(q, k, v, num_splits=3, **kw)),
                           ("ring_attention", ring_attention(dq_, dk_, dv_, 3, **kw),
                            ring_attention(q, k, v, 3, **kw))):
        assert type(got) is xp.ndarray, f"{name}: the result left the device"
        assert_close(got.get(), ref, rtol=0, atol=0, what=f"{name}: device vs host")


def _same_on_device(xp, name, got, ref):
    for g, r in zip(got if isinstance(got, tuple) else (got,),
                    ref if isinstance(ref, tuple) else (ref,), strict=True):
        if r is None:  # e.g. the key and value gradients of self-attention
            assert g is None, f"{name}: {type(g).__name__} where the host result is None"
            continue
        assert type(g) is xp.ndarray, f"{name}: the result left the device"
        assert_close(g.get(), r, rtol=0, atol=0, what=f"{name}: device vs host (same operations)")


def test_dense_attention_masks_and_its_backward_stay_on_the_device(xp, rng):
    """Chapters 4 and 5: SDPA with every kind of mask, its weights,
    dropout and the backward pass."""
    import copy

    from attention_scratch import causal_mask, combine_masks, padding_mask
    from attention_scratch import scaled_dot_product_attention as sdpa
    from attention_scratch import scaled_dot_product_attention_backward as sdpa_backward

    q, k, v = rng.standard_normal((2, 4, 9, 5)), rng.standard_normal((2, 2, 11,
                                                                      5)), rng.standard_normal((2,
                                                                                                2,
                                                                                                11,
                                                                                                3))
    g = rng.standard_normal((2, 4, 9, 3))
    keep = combine_masks(causal_mask(9, 11, "bottom_right"),
                         padding_mask([11, 7], 11))  # (2, 1, 9, 11)
    bias = np.where(keep, rng.standard_normal(keep.shape), -np.inf)
    dev = [xp.asarray(a) for a in (q, k, v)]
    for name, kw in (("causal", dict(is_causal=True)),
                     ("device bool mask", dict(attn_mask=xp.asarray(keep))),
                     ("host bool mask", dict(attn_mask=keep)),
                     ("float mask", dict(attn_mask=xp.asarray(bias)))):
        host_kw = {key: (val.get() if type(val) is xp.ndarray else val) for key, val in kw.items()}
        _same_on_device(xp, f"sdpa, {name}", sdpa(*dev, enable_gqa=True, return_weights=True, **kw),
                        sdpa(q, k, v, enable_gqa=True, return_weights=True, **host_kw))
        _same_on_device(xp, f"sdpa backward, {name}",
                        sdpa_backward(xp.asarray(g), *dev, enable_gqa=True, **kw),
                        sdpa_backward(g, q, k, v, enable_gqa=True, **host_kw))
    gen = np.random.default_rng(5)
    drop = dict(dropout_p=0.3, enable_gqa=True, is_causal=True)
    _same_on_device(xp, "sdpa with dropout", sdpa(*dev, rng=copy.deepcopy(gen), **drop),
                    sdpa(q, k, v, rng=copy.deepcopy(gen), **drop))
    _same_on_device(xp, "sdpa backward with dropout",
                    sdpa_backward(xp.asarray(g), *dev, rng=copy.deepcopy(gen), **drop),
                    sdpa_backward(g, q, k, v, rng=copy.deepcopy(gen), **drop))
    _same_on_device(xp, "combine_masks", combine_masks(xp.asarray(keep), causal_mask(9, 11)),
                    combine_masks(keep, causal_mask(9, 11)))


def test_kv_cache_and_rope_stay_on_the_device(xp, rng):
    """Chapters 6 and 7: the KV cache grows on the device; RoPE rotates device arrays."""
    from attention_scratch import KVCache, apply_rope, apply_rope_backward

    k, v = rng.standard_normal((1, 2, 5, 4)), rng.standard_normal((1, 2, 5, 3))
    on_device, on_host = KVCache(capacity=2), KVCache(capacity=2)
    for t in range(5):  # grows past its capacity twice
        got = on_device.append(xp.asarray(k[..., t:t + 1, :]), xp.asarray(v[..., t:t + 1, :]))
        ref = on_host.append(k[..., t:t + 1, :], v[..., t:t + 1, :])
        _same_on_device(xp, f"KVCache after {t + 1} appends", got, ref)
    x = rng.standard_normal((2, 7, 6))
    positions = np.arange(3, 10)
    _same_on_device(xp, "apply_rope", apply_rope(xp.asarray(x), xp.asarray(positions)),
                    apply_rope(x, positions))
    _same_on_device(xp, "apply_rope_backward", apply_rope_backward(xp.asarray(x)),
                    apply_rope_backward(x))


def test_efficient_attention_variants_stay_on_the_device(xp, rng):
    """Chapter 14: sliding-window, linear (three forms) and Performer attention."""
    from attention_scratch import (
        linear_attention,
        linear_attention_chunked,
        linear_attention_recurrent,
        performer_attention,
        sliding_window_attention,
    )

    q, k, v = (rng.standard_normal((2, 2, 12, 4)) for _ in range(3))
    dq_, dk_, dv_ = (xp.asarray(a) for a in (q, k, v))
    for name, fn in (("sliding_window_attention",
                      lambda *a: sliding_window_attention(*a, window=(3, 0), block=4)),
                     ("linear_attention", lambda *a: linear_attention(*a, is_causal=True)),
                     ("linear_attention_recurrent", linear_attention_recurrent),
                     ("linear_attention_chunked", lambda *a: linear_attention_chunked(*a, chunk=5)),
                     ("performer_attention", lambda *a: performer_attention(*a, num_features=8,
                                                                            rng=np.random.default_rng(1)))):
        _same_on_device(xp, name, fn(dq_, dk_, dv_), fn(q, k, v))


def test_multi_head_attention_runs_on_the_device_once_its_parameters_are_there(xp, rng):
    """Chapter 6: the layer keeps no host arrays of its own besides ``params``;
    moved, it computes on the device."""
    from attention_scratch import MultiHeadAttention

    on_host = MultiHeadAttention(8, 4, num_kv_heads=2, rng=np.random.default_rng(3), rope=True)
    on_device = MultiHeadAttention(8, 4, num_kv_heads=2, rng=np.random.default_rng(3), rope=True)
    on_device.params = {name: xp.asarray(p) for name, p in on_host.params.items()}
    x, g = rng.standard_normal((2, 7, 8)), rng.standard_normal((2, 7, 8))
    _same_on_device(xp, "MultiHeadAttention.forward",
                    on_device.forward(xp.asarray(x), is_causal=True),
                    on_host.forward(x, is_causal=True))
    _same_on_device(xp, "MultiHeadAttention.backward", on_device.backward(xp.asarray(g)),
                    on_host.backward(g))
    for name in on_host.grads:
        _same_on_device(xp, f"MultiHeadAttention.grads[{name!r}]", on_device.grads[name],
                        on_host.grads[name])
