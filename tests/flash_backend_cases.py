"""Test bodies shared by every flash backend: NumPy, Numba, CuPy on a GPU and the CUDA emulation.

Each ``case_*`` function takes a :class:`Backend` and checks it against the float64
oracle. :class:`SharedFlashTests` runs them all on one grid of shapes, masks and block
sizes; each backend's test file subclasses it with its :class:`Backend` (the class name
puts the backend in the test id, e.g. ``test_numba_cpu.py::TestNumba::test_ragged_shapes``)
and keeps its backend's own extra tests beside it. A backend that is not available
skips with its reason (the module-level skip of its test file).
"""
import dataclasses
from collections.abc import Callable
from typing import Optional

import numpy as np
import pytest

from attention_scratch.flash import flash_attention as numpy_flash
from attention_scratch.testing import (
    assert_close,
    attention_oracle,
    attention_oracle_backward,
    dense_reference,
    reference_mask,
)

MASKS = [
    (False, "top_left", None),
    (True, "top_left", None),
    (True, "bottom_right", None),
    (False, "top_left", (3, 1)),
    (True, "bottom_right", (4, None)),
]
MASK_IDS = ["none", "causal-tl", "causal-br", "window(3,1)", "causal-br+window(4,-)"]
ALL_MASKS = MASKS + [(True, "bottom_right", (2, 0)), (False, "top_left", (0, 0)),
                     (False, "top_left", (None, 2)), (True, "top_left", (1, 3))]
ALL_MASK_IDS = MASK_IDS + ["causal-br+window(2,0)", "window(0,0)", "window(-,2)",
                           "causal-tl+window(1,3)"]


@dataclasses.dataclass
class Backend:
    """``forward``/``backward`` have the signatures of flash_attention(_backward) without
    ``backend`` and return NumPy arrays; ``bfloat16(q, k, v, g, causal)`` returns
    ``(out, lse, grads)`` as float32 NumPy arrays computed from bfloat16 inputs
    (None when unsupported). ``same_as`` is a backend that computes the same tiles the same way:
    every :func:`check_against_oracle` then also asserts agreement with it to ``same_tol`` (the
    Numba kernels against the NumPy reference)."""

    name: str
    forward: Callable
    backward: Callable
    bfloat16: Callable | None = None
    same_as: Optional["Backend"] = None
    same_tol: float = 1e-12


def make_inputs(rng, L, S, E=5, Ev=7, hq=4, hkv=2, lead=(1,), dtype=np.float64):
    q = rng.standard_normal(lead + (hq, L, E)).astype(dtype)
    k = rng.standard_normal(lead + (hkv, S, E)).astype(dtype)
    v = rng.standard_normal(lead + (hkv, S, Ev)).astype(dtype)
    g = rng.standard_normal(lead + (hq, L, Ev)).astype(dtype)
    return q, k, v, g


def run(backend, q, k, v, g, mask, bq, bk, **extra):
    causal, align, window = mask
    kw = dict(enable_gqa=q.shape[-3] != k.shape[-3], causal_align=align, window=window,
              block_q=bq, block_k=bk, **extra)
    out, lse = backend.forward(q, k, v, causal, return_lse=True, **kw)
    grads = backend.backward(g, q, k, v, out, lse, causal, **kw)
    return out, lse, grads


def oracle(q, k, v, g, mask):
    """The float64 oracle's (out, lse, (dQ, dK, dV)) for these inputs and mask."""
    causal, align, window = mask
    out, lse, _ = attention_oracle(q, k, v, is_causal=causal, causal_align=align, window=window)
    return out, lse, attention_oracle_backward(g, q, k, v, is_causal=causal, causal_align=align,
                                               window=window)


def check_against_oracle(backend, q, k, v, g, mask, bq, bk, ref=None, **tol):
    """``ref``: :func:`oracle` of the same inputs,
    when a caller checks several block sizes on them."""
    out, lse, grads = run(backend, q, k, v, g, mask, bq, bk)
    ref_out, ref_lse, ref_grads = oracle(q, k, v, g, mask) if ref is None else ref
    where = (f"{backend.name}, block_q={bq}, block_k={bk}, mask={mask}, L={q.shape[-2]}, "
             f"S={k.shape[-2]}")
    assert_close(out, ref_out, what=f"output ({where})", **tol)
    assert_close(lse, ref_lse, what=f"log-sum-exp ({where})", **tol)
    for name, got, ref in zip(("dQ", "dK", "dV"), grads, ref_grads, strict=True):
        assert_close(got, ref, what=f"{name} ({where})", **tol)
    if backend.same_as is not None:
        check_same_as(backend, (out, lse, *grads), run(backend.same_as, q, k, v, g, mask, bq, bk),
                      where)


def check_same_as(backend, got, ref, where):
    """``got`` = (out, lse, dQ, dK, dV) equals ``backend.same_as``'s in dtype,
    shape and to ``same_tol``."""
    ref = (ref[0], ref[1], *ref[2])
    tol = backend.same_tol
    for name, a, b in zip(("out", "lse", "dQ", "dK", "dV"), got, ref, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, (f"{name}: {a.dtype}{a.shape} vs "
                                                           f"{b.dtype}{b.shape}")
        assert_close(a, b, rtol=tol, atol=tol,
                     what=f"{name}, {backend.name} vs {backend.same_as.name} ({where})")


def case_block_sizes(backend, rng, mask, L, S, blocks):
    q, k, v, g = make_inputs(rng, L, S)
    ref = oracle(q, k, v, g, mask)
    for block in blocks:
        check_against_oracle(backend, q, k, v, g, mask, block, block, ref)


def case_every_pair_of_block_sizes(backend, rng):
    q, k, v, g = make_inputs(rng, 9, 12, hq=2, hkv=1)
    mask = (True, "bottom_right", (5, 1))
    ref = oracle(q, k, v, g, mask)
    for bq in range(1, 11):
        for bk in range(1, 14):
            check_against_oracle(backend, q, k, v, g, mask, bq, bk, ref)


def case_ragged(backend, rng, mask, bq, bk, hq=2):
    q, k, v, g = make_inputs(rng, 97, 131, E=59, Ev=37, hq=hq, hkv=1)
    check_against_oracle(backend, q, k, v, g, mask, bq, bk)


def case_shapes_and_masks(backend, rng, mask, L, S, blocks=((1, 1), (3, 4), (16, 16)), hq=3, hkv=3):
    q, k, v, g = make_inputs(rng, L, S, hq=hq, hkv=hkv)
    ref = oracle(q, k, v, g, mask)
    for bq, bk in blocks:
        check_against_oracle(backend, q, k, v, g, mask, bq, bk, ref)


def case_empty_rows(backend, rng):
    q, k, v, g = make_inputs(rng, 9, 4, hq=2, hkv=2)
    out, lse, (dq, dk, dv) = run(backend, q, k, v, g, (True, "bottom_right", None), 2, 3)
    empty = np.arange(9) < 9 - 4
    assert not any(np.isnan(a).any() for a in (out, lse, dq, dk, dv))
    assert np.all(out[..., empty, :] == 0), "empty rows must have output exactly 0"
    assert np.all(np.isposinf(lse[..., empty])), "empty rows must have log-sum-exp +inf"
    assert np.all(np.isfinite(lse[..., ~empty]))
    assert np.all(dq[..., empty, :] == 0), "empty rows must receive gradient 0"


def case_empty_sequences(backend, rng):
    for mask, hkv in (((False, "top_left", None), 1), ((True, "bottom_right", None), 2)):
        for L, S in ((0, 5), (3, 0), (4, 0), (0, 0)):
            q, k, v, g = make_inputs(rng, L, S, hq=2, hkv=hkv)
            out, lse, (dq, dk, dv) = run(backend, q, k, v, g, mask, 4, 4)
            where = f"{backend.name}, L={L}, S={S}, mask={mask}"
            assert out.shape == (1, 2, L, 7) and lse.shape == (1, 2, L), where
            assert np.all(out
                          == 0) and np.all(np.isposinf(lse)), (f"{where}: no key means "
                                                               "output 0, lse +inf")
            assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape, where
            assert np.all(dq == 0) and np.all(dk == 0) and np.all(dv == 0), where


EMPTY_SHAPES = [  # (lead, Hq, Hkv, L, S, E, Ev): one axis 0 at a time, as PyTorch allows
    ((0,), 2, 2, 5, 6, 3, 4), ((2, 0), 2, 1, 5, 6, 3, 4), ((1,), 0, 0, 5, 6, 3, 4),
    ((), 0, 0, 5, 6, 3, 4),  # PyTorch-style 3-D input (H, L, E) with an empty first axis
    ((0,), 0, 0, 0, 0, 3, 4), ((1,), 2, 2, 5, 6, 3, 0)]


def case_empty_dimensions(backend, rng):
    """B, H, L = 0 (and Ev = 0) give empty results of the right shapes and dtypes;
    no kernel crashes."""
    for lead, hq, hkv, L, S, E, Ev in EMPTY_SHAPES:
        for dtype in (np.float64, np.float32):
            q = rng.standard_normal(lead + (hq, L, E)).astype(dtype)
            k = rng.standard_normal(lead + (hkv, S, E)).astype(dtype)
            v = rng.standard_normal(lead + (hkv, S, Ev)).astype(dtype)
            g = rng.standard_normal(lead + (hq, L, Ev)).astype(dtype)
            for mask in ((False, "top_left", None), (True, "bottom_right", (2, None))):
                where = (f"{backend.name}, q {q.shape}, k {k.shape}, v {v.shape}, "
                         f"{np.dtype(dtype)}, mask={mask}")
                out, lse, (dq, dk, dv) = run(backend, q, k, v, g, mask, 4, 4)
                assert out.shape == lead + (hq, L, Ev) and out.dtype == dtype, where
                assert lse.shape == lead + (hq, L), where
                assert (dq.shape, dk.shape, dv.shape) == (q.shape, k.shape, v.shape), where
                assert all(a.dtype == dtype for a in (dq, dk, dv)), where
                ref_out, _, ref_grads = oracle(q, k, v, g, mask)
                assert_close(out, ref_out, rtol=1e-5, atol=1e-6, what=f"output ({where})")
                for name, got, ref in zip(("dQ", "dK", "dV"), (dq, dk, dv), ref_grads, strict=True):
                    assert_close(got, ref, rtol=1e-5, atol=1e-6, what=f"{name} ({where})")


def case_head_dim_zero(backend, rng):
    """E = 0: every score is an empty dot product, 0, so each row averages the values it may see
    (PyTorch gives the same); the default scale is then 1. lse = log(number of visible keys)."""
    for mask in ((False, "top_left", None), (True, "top_left", None),
                 (True, "bottom_right", (1, 0))):
        q, k, v, g = make_inputs(rng, 5, 7, E=0, Ev=3, hq=2, hkv=1)
        out, lse, (dq, dk, dv) = run(backend, q, k, v, g, mask, 2, 3)
        keep = reference_mask(5, 7, is_causal=mask[0], causal_align=mask[1],
                              window=mask[2])  # (L, S)
        count = keep.sum(axis=-1)  # (L,)
        mean = (keep
                / np.maximum(count, 1)[:, None]) @ v  # (..., Hq, L, Ev) by broadcasting the kv head
        where = f"{backend.name}, E = 0, mask={mask}"
        assert not np.isnan(out).any() and not np.isnan(lse).any(), where
        assert_close(out, np.broadcast_to(mean, out.shape), what=f"output ({where})")
        with np.errstate(divide="ignore"):
            assert_close(lse, np.broadcast_to(np.where(count > 0, np.log(count), np.inf),
                                              lse.shape), what=f"lse ({where})")
        assert dq.shape == q.shape and dk.shape == k.shape
        ref = attention_oracle_backward(g, q, k, v, is_causal=mask[0], causal_align=mask[1],
                                        window=mask[2], scale=1.0)
        assert_close(dv, ref[2], what=f"dV ({where})")


def case_window_that_sees_no_key(backend, rng):
    q, k, v, g = make_inputs(rng, 6, 6, hq=1, hkv=1)
    # window (0, 0) keeps only key j = i + S - L; with L = 6 and S = 3 rows 0..2 have no such key.
    out, lse, grads = run(backend, q, k[..., :3, :], v[..., :3, :], g, (False, "top_left", (0, 0)),
                          2, 2)
    assert np.all(out[..., :3, :] == 0) and np.isposinf(lse[..., :3]).all()
    assert not np.isnan(grads[0]).any()


def case_nan_in_a_masked_position_does_not_leak(backend, rng):
    """NaN in the key *and* value of keys that no row may attend to reaches no output
    and no gradient."""
    # hidden keys: key 7 after every row; keys 0 and 2 before the band
    for L, S, mask, hidden in ((7, 8, (True, "top_left", None), [7]),
                               (5, 9, (True, "bottom_right", (1, None)), [0, 2])):
        q, k, v, g = make_inputs(rng, L, S, hq=2, hkv=1)
        clean = [a.copy() for a in (k, v)]
        for a in (k, v):
            a[..., hidden, :] = np.nan
        out, lse, grads = run(backend, q, k, v, g, mask, 4, 4)
        # the hidden keys' values do not matter
        ref_out, ref_lse, ref_grads = oracle(q, *clean, g, mask)
        what = f"{backend.name}, NaN in keys {hidden} hidden by mask {mask}"
        assert_close(out, ref_out, what=f"output, {what}")
        assert_close(lse, ref_lse, what=f"lse, {what}")
        for name, got, ref in zip(("dQ", "dK", "dV"), grads, ref_grads, strict=True):
            assert_close(got, ref, what=f"{name}, {what}")
        assert np.all(grads[1][..., hidden, :] == 0) and np.all(grads[2][..., hidden, :] == 0)


def plant(rng, arrays, count, values=(np.nan, np.inf, -np.inf)):
    """Copies of ``arrays`` with ``count`` entries set to NaN or ±inf at random places."""
    arrays = [a.copy() for a in arrays]
    for _ in range(count):
        a = arrays[rng.integers(len(arrays))]
        if a.size:
            a.flat[rng.integers(a.size)] = values[rng.integers(len(values))]
    return arrays


def check_rule(backend, q, k, v, g, mask, bq, bk, what):
    """``backend`` against the oracle, which implements the rule of CONVENTIONS.md for
    non-finite values."""
    out, lse, grads = run(backend, q, k, v, g, mask, bq, bk)
    ref_out, ref_lse, ref_grads = oracle(q, k, v, g, mask)
    where = f"{backend.name}, {what}, mask={mask}, blocks {bq}x{bk}"
    for name, got, ref in zip(("output", "lse", "dQ", "dK", "dV"), (out, lse, *grads),
                              (ref_out, ref_lse, *ref_grads), strict=True):
        assert_close(got, ref, what=f"{name} ({where})")


def case_nan_hidden_from_a_row_never_reaches_it(backend, rng):
    """The issue's cases: NaN in v[2] (or k[2]) under a causal mask leaves rows 0 and 1 exact,
    forward and backward, while rows 2.. become NaN (they see it), as do the gradients of the keys
    those rows see."""
    for name in ("key", "value"):
        q, k, v, g = make_inputs(rng, 6, 6, hq=2, hkv=1)
        (k if name == "key" else v)[..., 2, 1] = np.nan
        out, lse, (dq, dk, dv) = run(backend, q, k, v, g, (True, "top_left", None), 4, 4)
        ref_out, _, _ = oracle(q, k, v, g, (True, "top_left", None))
        where = f"{backend.name}: NaN in {name} 2, causal"
        assert np.isfinite(out[..., :2, :]).all() and np.isfinite(lse[..., :2]).all(), where
        assert np.isfinite(dq[..., :2, :]).all(), f"{where}: dQ of rows 0, 1 must not see it"
        assert np.isnan(out[..., 2:, :]).all() and np.isnan(lse[..., 2:]).all(), where
        assert np.isnan(dq[..., 2:, :]).all(), where
        assert np.isnan(dk).all() and np.isnan(dv).all(), f"{where}: rows 2..5 see every key"
        assert_close(out[..., :2, :], ref_out[..., :2, :], what=where)


def case_nonfinite_inputs_follow_the_rule(backend, rng, trials=6):
    """NaN, +inf and -inf at random places of Q, K, V (and a row of dO) under every kind of mask:
    every output, lse and gradient equals the oracle's, NaN exactly where the rule puts it."""
    for mask in MASKS:
        for L, S in ((7, 8), (8, 5)):
            for t in range(trials):
                q, k, v, g = make_inputs(rng, L, S, hq=2, hkv=1)
                q, k, v = plant(rng, (q, k, v), 1 + t % 3)
                if t == trials - 1:
                    g[..., rng.integers(2), rng.integers(L), 0] = np.nan  # one non-finite row of dO
                check_rule(backend, q, k, v, g, mask, 3 + t % 2, 4, f"non-finite inputs, trial {t}")


def case_batch_axes_gqa_scale(backend, rng):
    q, k, v, g = make_inputs(rng, 6, 8, hq=4, hkv=2, lead=(2, 3))
    check_against_oracle(backend, q, k, v, g, (True, "top_left", None), 4, 3)
    q3, k3, v3, g3 = (a[0, 0] for a in (q, k, v, g))  # no batch axis: (H, L, E)
    check_against_oracle(backend, q3, k3, v3, g3, (False, "top_left", (2, 2)), 4, 3)
    q, k, v, g = make_inputs(rng, 10, 12, hq=6, hkv=2, lead=(2, 3))
    out, lse = backend.forward(q, k, v, True, scale=0.3, enable_gqa=True, block_q=3, block_k=5,
                               return_lse=True)
    ref_out, ref_lse, _ = attention_oracle(q, k, v, is_causal=True, scale=0.3)
    assert_close(out, ref_out, what=f"{backend.name}: GQA output, scale=0.3")
    assert_close(lse, ref_lse, what=f"{backend.name}: GQA lse, scale=0.3")
    grads = backend.backward(g, q, k, v, out, lse, True, scale=0.3, enable_gqa=True, block_q=3,
                             block_k=5)
    for got, ref in zip(grads, attention_oracle_backward(g, q, k, v, is_causal=True, scale=0.3),
                        strict=True):
        assert_close(got, ref, what=f"{backend.name}: GQA gradient, scale=0.3")


def check_low_precision(name, out, lse, grads, q, k, v, g, causal, base_dtype, eps):
    """Error against the oracle at most 2x that of dense NumPy in ``base_dtype`` (the low-precision
    rule of CONTRIBUTING.md)."""
    ref_out, ref_lse, _ = attention_oracle(q, k, v, is_causal=causal)
    ref_grads = attention_oracle_backward(g, q, k, v, is_causal=causal)
    qb, kb, vb, gb = (a.astype(base_dtype) for a in (q, k, v, g))
    base_out, _, base_grads = dense_reference(qb, kb, vb, gb, is_causal=causal, upcast=False)
    for part, got, base, ref in zip(("out", "dQ", "dK", "dV"), (out, *grads),
                                    (base_out, *base_grads), (ref_out, *ref_grads), strict=True):
        err = np.abs(got.astype(np.float64) - ref).max()
        base_err = np.abs(base.astype(np.float64) - ref).max()
        assert err <= 2 * base_err + eps, f"{name} {part}: error {err:.3g} > 2 x {base_err:.3g}"
    assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5, what=f"{name}: lse")


def case_low_precision(backend, rng, dtype, causal, bq=32, bk=16, L=70, S=90, E=16):
    q, k, v, g = make_inputs(rng, L, S, E=E, Ev=E, hq=2, hkv=2, dtype=dtype)
    out, lse, grads = run(backend, q, k, v, g, (causal, "top_left", None), bq, bk)
    assert out.dtype == dtype and all(a.dtype == dtype for a in grads)
    assert lse.dtype == (np.float32 if dtype == np.float16 else dtype)
    check_low_precision(f"{backend.name} {np.dtype(dtype)} {bq}x{bk}", out, lse, grads, q, k, v, g,
                        causal, dtype, np.finfo(dtype).eps)


# Shapes for the float16 forward kernels on tensor cores: several query and key tiles, ragged
# ends, head dims padded to each bucket (E = 59, 37, 24: element-wise staging; 32, 64, 128:
# 16-byte copies).
TENSOR_CORE_SHAPES = [(97, 131, 59, 37), (300, 70, 128, 128), (5, 260, 32, 24), (129, 129, 64, 64)]


def case_float16_forward(name, forward, rng, mask, L, S, E, Ev):
    """``forward`` (flash_attention's signature, float16 in and out) on a GQA problem with ``mask``:
    error at most twice that of dense attention computed in float16; empty rows exact."""
    q, k, v, _ = make_inputs(rng, L, S, E=E, Ev=Ev, hq=2, hkv=1, dtype=np.float16)
    causal, align, window = mask
    out, lse = forward(q, k, v, causal, enable_gqa=True, causal_align=align, window=window,
                       return_lse=True)
    ref, ref_lse, _ = attention_oracle(q, k, v, is_causal=causal, causal_align=align, window=window)
    dense, _ = dense_reference(q, k, v, is_causal=causal, causal_align=align, window=window,
                               upcast=False)  # float16, GQA: each kv head serves 2 query heads
    err, base = (np.abs(np.asarray(a, dtype=np.float64) - ref).max() for a in (out, dense))
    assert out.dtype == np.float16
    assert err <= 2 * base + np.finfo(np.float16).eps, f"{name}: error {err:.3g} > 2 x {base:.3g}"
    empty = np.isposinf(ref_lse)
    assert np.array_equal(np.isposinf(lse), empty) and np.all(out[empty] == 0)
    assert_close(lse[~empty], ref_lse[~empty], rtol=1e-5, atol=1e-5, what=f"{name}: lse")


def case_float16_nan_no_row_reaches(forward, rng):
    """A float16 forward with NaN in a key and value that no row may attend to
    (whole tiles of 64)."""
    q, k, v, _ = make_inputs(rng, 7, 70, E=64, Ev=64, hq=1, hkv=1, dtype=np.float16)
    k[..., 69, :] = v[..., 69, :] = np.nan  # causal, top-left: no query row reaches key 69
    out = forward(q, k, v, True)
    ref, _, _ = attention_oracle(q, k[..., :69, :], v[..., :69, :], is_causal=True)
    assert not np.isnan(out).any()
    assert np.abs(out.astype(np.float64) - ref).max() < 4e-3


def round_to_bfloat16(x):
    """float32 values rounded to the nearest bfloat16 (ties to even), still stored as float32."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32)
    bits = (bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return bits.view(np.float32)


def case_bfloat16(backend, rng, causal, L=70, S=90, E=16):
    """bfloat16 (8 bits of mantissa; NumPy has no bfloat16, so there is no dense baseline in the
    dtype to compare with): the inputs are rounded to bfloat16, the float64 oracle on those
    rounded inputs is the reference, and the kernel's error must stay within 4 units of bfloat16
    rounding (2^-8, twice the unit roundoff) of the largest entry of each result."""
    q, k, v, g = (round_to_bfloat16(a) for a in make_inputs(rng, L, S, E=E, Ev=E, hq=2, hkv=2,
                                                             dtype=np.float32))
    out, lse, grads = backend.bfloat16(q, k, v, g, causal)
    ref_out, ref_lse, _ = attention_oracle(q, k, v, is_causal=causal)
    ref_grads = attention_oracle_backward(g, q, k, v, is_causal=causal)
    eps = 2.0 ** -8  # bfloat16 unit roundoff is 2^-9; allow twice it, relative to the largest entry
    for part, got, ref in zip(("out", "dQ", "dK", "dV"), (out, *grads), (ref_out, *ref_grads),
                              strict=True):
        err = np.abs(got.astype(np.float64) - ref).max()
        assert err <= 4 * eps * np.abs(ref).max(), (f"{backend.name} bfloat16 {part}: "
                                                    f"error {err:.3g}")
    assert_close(lse, ref_lse, rtol=1e-4, atol=1e-4, what=f"{backend.name}: bfloat16 lse")


def case_matches_numpy_reference_in_float32(backend, rng):
    """Same dtype, same tiles: the kernel and the NumPy reference agree to float32 rounding."""
    q, k, v, _ = make_inputs(rng, 33, 47, E=24, Ev=24, hq=2, hkv=1, dtype=np.float32)
    out = backend.forward(q, k, v, True, enable_gqa=True, causal_align="bottom_right", block_q=8,
                          block_k=16)
    ref = numpy_flash(q, k, v, True, enable_gqa=True, causal_align="bottom_right", block_q=8,
                      block_k=16)
    assert_close(out, ref, rtol=1e-5, atol=1e-6, what=f"{backend.name} vs NumPy flash, float32")


def case_gradients_match_central_differences(backend, rng):
    from attention_scratch.testing import grad_check

    q, k, v, _ = make_inputs(rng, 4, 5, E=3, Ev=2, hq=2, hkv=1)
    kw = dict(enable_gqa=True, window=(2, None), block_q=3, block_k=2, causal_align="bottom_right")

    def backward(g, q, k, v):
        out, lse = backend.forward(q, k, v, True, return_lse=True, **kw)
        return backend.backward(g, q, k, v, out, lse, True, **kw)

    grad_check(lambda q, k, v: backend.forward(q, k, v, True, **kw), backward, [q, k, v])


def case_tiled_equals_dense(backend, L, S, E, bq, bk, causal, align, left, right, use_window, seed):
    rng = np.random.default_rng(seed)
    q, k, v, g = make_inputs(rng, L, S, E=E, Ev=3, hq=2, hkv=1)
    check_against_oracle(backend, q, k, v, g, (causal, align,
                                               (left, right) if use_window else None), bq, bk)


def tiled_equals_dense_strategy():
    """The Hypothesis arguments of :func:`case_tiled_equals_dense` (as in tests/test_flash.py)."""
    from hypothesis import strategies as st

    return dict(L=st.integers(1, 20), S=st.integers(1, 20), E=st.integers(1, 6),
                bq=st.integers(1, 24), bk=st.integers(1, 24), causal=st.booleans(),
                align=st.sampled_from(["top_left", "bottom_right"]),
                left=st.one_of(st.none(), st.integers(0, 8)),
                right=st.one_of(st.none(), st.integers(0, 8)), use_window=st.booleans(),
                seed=st.integers(0, 2**32 - 1))


# max_examples of the "default" Hypothesis profile (tests/conftest.py)
DEFAULT_PROFILE_EXAMPLES = 40


def run_hypothesis(check, examples_by_default):
    """Run ``check(**kw)`` under Hypothesis: ``examples_by_default`` examples under the default
    profile, scaled with the active profile's ``max_examples`` (``HYPOTHESIS_PROFILE=thorough``
    runs ten times as many)."""
    from hypothesis import given, settings

    scaled = examples_by_default * settings.default.max_examples / DEFAULT_PROFILE_EXAMPLES
    examples = max(1, round(scaled))
    settings(settings.default,
             max_examples=examples)(given(**tiled_equals_dense_strategy())(check))()


BLOCK_SIZE_SHAPES = [(11, 13), (13, 13), (1, 13), (13, 11)]
RAGGED_BLOCKS = [(7, 13), (16, 32), (64, 64), (97, 131), (128, 256)]
SHAPES = [(5, 17), (17, 17), (17, 5), (1, 17), (1, 1), (17, 1)]


class SharedFlashTests:
    """The test bodies every backend runs; subclass as ``class TestNumba(SharedFlashTests)``.

    A subclass sets ``backend`` and may set ``tiled_examples`` (Hypothesis examples of the
    tiled-equals-dense property under the default profile; other profiles scale it). It may narrow a
    grid only by overriding that test method.
    """

    backend: Backend
    tiled_examples = 25

    @pytest.mark.parametrize("mask", MASKS, ids=MASK_IDS)
    @pytest.mark.parametrize("L,S", BLOCK_SIZE_SHAPES)
    def test_every_block_size(self, rng, mask, L, S):
        case_block_sizes(self.backend, rng, mask, L, S, blocks=range(1, max(L, S) + 3))

    def test_every_pair_of_block_sizes(self, rng):
        case_every_pair_of_block_sizes(self.backend, rng)

    @pytest.mark.parametrize("mask", MASKS, ids=MASK_IDS)
    @pytest.mark.parametrize("bq,bk", RAGGED_BLOCKS)
    def test_ragged_shapes(self, rng, mask, bq, bk):
        case_ragged(self.backend, rng, mask, bq, bk)

    @pytest.mark.parametrize("mask", ALL_MASKS, ids=ALL_MASK_IDS)
    @pytest.mark.parametrize("L,S", SHAPES)
    def test_shapes_and_masks(self, rng, mask, L, S):
        # L > S with bottom-right alignment, and narrow windows, leave rows with
        # nothing to attend to.
        case_shapes_and_masks(self.backend, rng, mask, L, S)

    def test_rows_with_nothing_to_attend_give_zero_output_inf_lse_zero_gradient(self, rng):
        case_empty_rows(self.backend, rng)

    def test_empty_sequences(self, rng):
        case_empty_sequences(self.backend, rng)

    def test_empty_dimensions_give_empty_results(self, rng):
        case_empty_dimensions(self.backend, rng)

    def test_head_dim_zero_averages_the_visible_values(self, rng):
        case_head_dim_zero(self.backend, rng)

    def test_window_that_sees_no_key_gives_zeros(self, rng):
        case_window_that_sees_no_key(self.backend, rng)

    def test_nan_in_a_masked_position_does_not_leak(self, rng):
        case_nan_in_a_masked_position_does_not_leak(self.backend, rng)

    def test_nan_hidden_from_a_row_never_reaches_it(self, rng):
        case_nan_hidden_from_a_row_never_reaches_it(self.backend, rng)

    def test_nonfinite_inputs_follow_the_rule(self, rng):
        case_nonfinite_inputs_follow_the_rule(self.backend, rng)

    def test_batch_axes_gqa_and_scale(self, rng):
        case_batch_axes_gqa_scale(self.backend, rng)

    def test_gradients_match_central_differences(self, rng):
        case_gradients_match_central_differences(self.backend, rng)

    def test_tiled_equals_dense_for_any_block_size(self):
        def tiled_equals_dense(**kw):
            case_tiled_equals_dense(self.backend, **kw)

        run_hypothesis(tiled_equals_dense, self.tiled_examples)

    @pytest.mark.parametrize("dtype", [np.float32, np.float16])
    @pytest.mark.parametrize("causal", [False, True])
    def test_low_precision_error_is_at_most_twice_dense_numpy(self, rng, dtype, causal):
        case_low_precision(self.backend, rng, dtype, causal)
