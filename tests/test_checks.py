"""Scalars and flags are validated in one place (attention_scratch._checks), naming the argument.

Every entry point that takes ``scale``, ``is_causal``, block sizes or ``dropout_p`` rejects a
value of the wrong kind with a ``TypeError`` and an out-of-range value with a ``ValueError``;
either way the message names the argument. Nothing is silently coerced (``scale="2"``,
``scale=True`` and ``is_causal="yes"`` used to be accepted).
"""
import functools

import numpy as np
import pytest

import attention_scratch as at
from attention_scratch import _checks
from attention_scratch.backends import unavailable_reason
from attention_scratch.decoding import ring_attention, split_kv_attention
from attention_scratch.variants import sliding_window_attention

BAD_SCALES = ["2", True, np.bool_(True), 1j, np.complex128(1), np.array([0.5]), np.array(0.5),
              np.nan, np.inf, -np.inf, [0.5], object()]
def stable_id(value):
    """``repr``, except for a bare ``object()``, whose repr holds its address: pytest-xdist's
    workers must collect the same test ids."""
    return "object()" if type(value) is object else repr(value)


BAD_FLAGS = ["yes", "", 1, 0, 1.0, None, np.array([True, False]), np.array(True), [True]]
BAD_BLOCKS = [0, -1, 2.5, True, "64", None, np.array(8)]
BAD_DROPOUT = [-0.1, 1.5, np.nan, "0.1", True, np.array([0.1]), 1j]


def qkv(L=4, S=5, E=3, H=2):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((1, H, L, E)), rng.standard_normal((1, H, S, E)),
            rng.standard_normal((1, H, S, E)))


def flash_entry(backend):
    def call(q, k, v, **kw):
        return at.flash_attention(q, k, v, backend=backend, **kw)
    return call


def flash_backward_entry(backend):
    def call(q, k, v, **kw):
        out, lse = at.flash_attention(q, k, v, return_lse=True)
        return at.flash_attention_backward(np.ones_like(out), q, k, v, out, lse, backend=backend,
                                           **kw)
    return call


def sdpa_backward(q, k, v, **kw):
    return at.scaled_dot_product_attention_backward(np.ones(q.shape[:-1] + v.shape[-1:]), q, k, v,
                                                    **kw)


def emulated(backward=False):
    from attention_scratch.backends.cuda import emulator as cuda_emulation

    if cuda_emulation.unavailable_reason():
        pytest.skip(cuda_emulation.unavailable_reason())
    if not backward:
        return cuda_emulation.flash_attention

    def call(q, k, v, **kw):
        out, lse = at.flash_attention(q, k, v, return_lse=True)
        return cuda_emulation.flash_attention_backward(np.ones_like(out), q, k, v, out, lse, **kw)
    return call


BACKENDS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(
    unavailable_reason("numba") is not None, reason=str(unavailable_reason("numba"))))]
# Entry points taking scale and is_causal (keyword names as in docs/design.md §4).
SCALE_AND_CAUSAL = {
    "sdpa": at.scaled_dot_product_attention,
    "sdpa_backward": sdpa_backward,
    "split_kv": functools.partial(split_kv_attention, num_splits=2),
    "ring": functools.partial(ring_attention, world_size=2),
    "sliding_window": functools.partial(sliding_window_attention, window=(2, 0)),
    "performer": lambda q, k, v, **kw: at.performer_attention(q, k, v,
                                                              rng=np.random.default_rng(0), **kw),
}


def entry(name, backend="numpy"):
    if name == "flash":
        return flash_entry(backend)
    if name == "flash_backward":
        return flash_backward_entry(backend)
    if name == "emulated":
        return emulated()
    if name == "emulated_backward":
        return emulated(backward=True)
    return SCALE_AND_CAUSAL[name]


ALL_ENTRIES = ["flash", "flash_backward", "emulated", "emulated_backward"] + list(SCALE_AND_CAUSAL)
# (entry, backend): the flash entry points on every CPU backend, the others once.
ENTRY_BACKENDS = [(name, "numpy") for name in ALL_ENTRIES] + [
    pytest.param(name, "numba", marks=BACKENDS[1].marks) for name in ("flash", "flash_backward")]
# flash_attention(_backward), emulated
FLASH_ENTRY_BACKENDS = ENTRY_BACKENDS[:4] + ENTRY_BACKENDS[-2:]


@pytest.mark.parametrize("name,backend", ENTRY_BACKENDS)
@pytest.mark.parametrize("scale", BAD_SCALES, ids=stable_id)
def test_scale_must_be_a_finite_real_number(name, backend, scale):
    with pytest.raises((TypeError, ValueError), match="scale"):
        entry(name, backend)(*qkv(), scale=scale)


@pytest.mark.parametrize("name", ALL_ENTRIES)
@pytest.mark.parametrize("flag", BAD_FLAGS, ids=repr)
def test_is_causal_must_be_a_bool(name, flag):
    with pytest.raises(TypeError, match="is_causal"):
        entry(name)(*qkv(), is_causal=flag)


@pytest.mark.parametrize("flag", BAD_FLAGS, ids=repr)
def test_other_flags_must_be_bools(flag):
    q, k, v = qkv()
    with pytest.raises(TypeError, match="enable_gqa"):
        at.flash_attention(q, k, v, enable_gqa=flag)
    with pytest.raises(TypeError, match="return_lse"):
        at.flash_attention(q, k, v, return_lse=flag)
    with pytest.raises(TypeError, match="return_weights"):
        at.scaled_dot_product_attention(q, k, v, return_weights=flag)
    with pytest.raises(TypeError, match="is_causal"):
        at.linear_attention(q, k, v, is_causal=flag)
    mha = at.MultiHeadAttention(4, 2, rng=np.random.default_rng(0))
    x = np.zeros((1, 3, 4))
    with pytest.raises(TypeError, match="is_causal"):
        mha.forward(x, is_causal=flag)
    with pytest.raises(TypeError, match="need_weights"):
        mha.forward(x, need_weights=flag)


@pytest.mark.parametrize("name,backend", FLASH_ENTRY_BACKENDS)
@pytest.mark.parametrize("argument", ["block_q", "block_k"])
@pytest.mark.parametrize("block", BAD_BLOCKS, ids=repr)
def test_block_sizes_must_be_positive_integers(name, backend, argument, block):
    with pytest.raises((TypeError, ValueError), match=argument):
        entry(name, backend)(*qkv(), **{argument: block})


@pytest.mark.parametrize("p", BAD_DROPOUT, ids=repr)
def test_dropout_p_must_be_a_number_in_zero_one(p):
    q, k, v = qkv()
    rng = np.random.default_rng(0)
    with pytest.raises((TypeError, ValueError), match="dropout_p"):
        at.scaled_dot_product_attention(q, k, v, dropout_p=p, rng=rng)
    with pytest.raises((TypeError, ValueError), match="dropout_p"):
        sdpa_backward(q, k, v, dropout_p=p, rng=rng)


@pytest.mark.parametrize("scale", [0.5, 2, np.float32(0.25), np.float16(1), np.int64(3), -1.0, 0.0,
                                   None])
@pytest.mark.parametrize("flag", [True, False, np.True_, np.False_])
def test_good_scalars_are_accepted(scale, flag):
    q, k, v = qkv()
    out = at.flash_attention(q, k, v, is_causal=flag, scale=scale, block_q=np.int32(2), block_k=3)
    ref = at.scaled_dot_product_attention(q, k, v, is_causal=flag, scale=scale,
                                          dropout_p=np.float32(0), rng=np.random.default_rng(0))
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)


def test_the_checks_live_in_one_module():
    assert _checks.check_scale(None) is None
    assert _checks.check_scale(np.float32(0.5)) == 0.5 and type(_checks.check_scale(2)) is float
    assert _checks.check_flag(np.True_, "is_causal") is True
    assert _checks.check_dropout_p(np.float32(0.25)) == 0.25
    assert _checks.check_positive_int(np.int64(4), "block_q") == 4
    with pytest.raises(ValueError, match=r"scale must be a finite real number or None.*got nan"):
        _checks.check_scale(float("nan"))
    with pytest.raises(TypeError, match=r"is_causal must be a bool \(True or False\); got 'yes'"):
        _checks.check_flag("yes", "is_causal")
