"""The capstone on the library's own kernels (issue 18 item 6): MultiHeadAttention and the tiny
transformer with attention="flash", forward and backward through the tiled kernels, equal to
the dense layer, and training on packed sequences with a document mask."""
import numpy as np
import pytest

import attention_scratch as at
from attention_scratch import flex_mods
from attention_scratch.backends import unavailable_reason
from attention_scratch.testing import assert_close
from attention_scratch.training.transformer import train

BACKENDS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(
    unavailable_reason("numba") is not None, reason=str(unavailable_reason("numba"))))]


def dense_and_flash(backend, seed=3, **kw):
    return (at.MultiHeadAttention(24, 4, num_kv_heads=2, rng=np.random.default_rng(seed), **kw),
            at.MultiHeadAttention(24, 4, num_kv_heads=2, rng=np.random.default_rng(seed),
                                  attention="flash", backend=backend, **kw))


@pytest.mark.parametrize("backend", BACKENDS)
def test_flash_layer_equals_the_dense_layer(rng, backend):
    """Causal (flash_attention) and a document block mask (flex_attention) against the dense
    layer with the same mask: outputs, input gradients and parameter gradients."""
    x, g = rng.standard_normal((2, 13, 24)), rng.standard_normal((2, 13, 24))
    doc = np.array([0] * 5 + [1] * 4 + [2] * 4)
    keep = (doc[:, None] == doc[None, :]) & np.tri(13, dtype=bool)  # (L, L)
    bm = at.create_block_mask(flex_mods.document(doc), None, None, 13, 13, BLOCK_SIZE=4)
    for dense_kw, flash_kw in (({"is_causal": True}, {"is_causal": True}),
                               ({"attn_mask": keep}, {"block_mask": bm})):
        dense, flash = dense_and_flash(backend)
        ref, out = dense.forward(x, **dense_kw), flash.forward(x, **flash_kw)
        assert_close(out, ref, rtol=1e-12, atol=1e-12, what=f"output {flash_kw.keys()}")
        assert_close(flash.backward(g)[0], dense.backward(g)[0], rtol=1e-12, atol=1e-12,
                     what="grad of the input")
        for name in dense.grads:
            assert_close(flash.grads[name], dense.grads[name], rtol=1e-11, atol=1e-12,
                         what=f"grad {name} ({backend})")


def test_flash_layer_refuses_what_it_cannot_do(rng):
    flash = at.MultiHeadAttention(8, 2, attention="flash")
    x = rng.standard_normal((1, 4, 8))
    with pytest.raises(ValueError, match="need_weights"):
        flash.forward(x, need_weights=True)
    with pytest.raises(ValueError, match="block_mask="):
        flash.forward(x, attn_mask=np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="needs attention='flash'"):
        at.MultiHeadAttention(8, 2).forward(x, block_mask=object())
    with pytest.raises(ValueError, match="attention must be"):
        at.MultiHeadAttention(8, 2, attention="fast")


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_training_on_flash_follows_dense_training(backend):
    """A few steps on packed sequences: the flash model (document block mask) and the dense one
    (same-document boolean mask) see the same batches and give the same losses."""
    kw = {"steps": 4, "batch": 16, "pack": 4, "log_every": 0, "d_model": 32, "hidden": 64}
    _, dense = train("sort", 0, **kw)
    _, flash = train("sort", 0, attention="flash", backend=backend, **kw)
    np.testing.assert_allclose(flash["loss"], dense["loss"], rtol=1e-9, atol=1e-12)
    _, unpacked = train("sort", 0, **{**kw, "pack": 1})
    np.testing.assert_allclose(dense["loss"], unpacked["loss"], rtol=1e-9, atol=1e-12)
