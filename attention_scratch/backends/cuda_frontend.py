"""The public-signature front end of the CUDA kernels, shared by CuPy and the CPU emulation.

It validates the arguments exactly as the NumPy reference does (by calling
:func:`attention_scratch.flash.prepare` on zero-stride stand-ins of the right
shapes, so nothing is copied), brings the device arrays to the kernel layout,
calls :mod:`.cuda_driver`, and restores the caller's shapes. NaN and infinities follow
DESIGN.md §3 exactly as on the other backends: the rows holding one are found and
zeroed on the device before the kernels run (:mod:`attention_scratch._nonfinite`), and
the rows and keys the rule makes NaN are marked afterwards. ``xp`` is the
array module of the device arrays; ``launch`` runs one kernel (see cuda_driver).
"""
import numpy as np

from .._nonfinite import (band_backward_inputs, mark_band_backward, mark_band_forward, scan,
                          zero_rows)
from ..flash import prepare
from . import cuda_driver


def storage_tag(*dtypes):
    """The kernel dtype tag for the inputs' dtypes: float64, float32, float16 or bfloat16.

    Integers and booleans are computed in float64 (like the NumPy reference); any
    other dtype raises ``TypeError``.
    """
    names = [np.dtype(d).name if not _is_bf16(d) else "bfloat16" for d in dtypes]
    if "bfloat16" in names:
        if any(n != "bfloat16" for n in names):
            raise TypeError(f"bfloat16 input cannot be mixed with other dtypes; got {names}")
        return "bfloat16"
    for d in dtypes:
        if np.dtype(d).kind not in "biuf":
            raise TypeError(f"query, key and value must hold real floating-point numbers; got dtypes {names}")
    common = np.result_type(*[np.float64 if np.dtype(d).kind in "biu" else d for d in dtypes])
    return common.name


def _is_bf16(dtype):
    return str(dtype).endswith("bfloat16")


def _stand_in(shape, tag):
    check_dtype = np.float16 if tag == "bfloat16" else tag
    return np.broadcast_to(np.zeros((), dtype=check_dtype), tuple(shape))


def check(query, key, value, is_causal, scale, enable_gqa, causal_align, window, block_q, block_k, tag):
    """Validate like the NumPy reference; returns its ``prepare`` dict (stand-in arrays)."""
    return prepare(_stand_in(query.shape, tag), _stand_in(key.shape, tag), _stand_in(value.shape, tag),
                   is_causal, scale, enable_gqa, causal_align=causal_align, window=window,
                   block_q=block_q, block_k=block_k, find_nonfinite=False)


def forward(launch, xp, q, k, v, is_causal=False, scale=None, enable_gqa=False, *, tag,
            causal_align="top_left", window=None, block_q=64, block_k=64, tensor_cores=False,
            smem_limit=cuda_driver.DEFAULT_SMEM):
    """``out`` (..., Hq, L, Ev) in the storage dtype and ``lse`` (..., Hq, L) in the accumulation dtype.

    ``q``, ``k``, ``v`` are device arrays already in the storage dtype of ``tag``.
    """
    p = check(q, k, v, is_causal, scale, enable_gqa, causal_align, window, block_q, block_k, tag)
    lead, hq, hkv = p["lead"], p["hq"], p["k"].shape[1]
    L, E, S, Ev = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
    n = int(np.prod(lead, dtype=np.int64))
    q, k, v, found = _kernel_layout(p, q, k, v)  # (N, Hkv, G, L, E), (N, Hkv, 1, S, ·), rows cleaned
    q3 = xp.ascontiguousarray(q.reshape((n * hq, L, E)))  # (N*Hq, L, E)
    k3 = xp.ascontiguousarray(k.reshape((n * hkv, S, E)))  # (N*Hkv, S, E)
    v3 = xp.ascontiguousarray(v.reshape((n * hkv, S, Ev)))  # (N*Hkv, S, Ev)
    out, lse = cuda_driver.run_forward(launch, xp, q3, k3, v3, hq // max(hkv, 1), p["scale"], p["band"],
                                       p["block_q"], p["block_k"], tag, smem_limit=smem_limit,
                                       tensor_cores=tensor_cores)
    out, lse = mark_band_forward(found, p["band"], out.reshape(q.shape[:-1] + (Ev,)),
                                 lse.reshape(q.shape[:-1]))  # (N, Hkv, G, L, Ev), (N, Hkv, G, L)
    return out.reshape(lead + (hq, L, Ev)), lse.reshape(lead + (hq, L))  # (..., Hq, L, Ev), (..., Hq, L)


def _kernel_layout(p, q, k, v):
    """``q`` (N, Hkv, G, L, E), ``k`` (N, Hkv, 1, S, E), ``v`` (N, Hkv, 1, S, Ev) (device arrays) with the
    rows holding NaN or ±inf zeroed, and those rows (``found`` of :func:`attention_scratch._nonfinite.scan`)."""
    q, k, v = (a.reshape(p[name].shape) for a, name in ((q, "q"), (k, "k"), (v, "v")))
    found = scan(q, k, v)
    if found is not None:
        q, k, v = zero_rows(q, found[0]), zero_rows(k, found[1]), zero_rows(v, found[1])
    return q, k, v, found


def backward(launch, xp, grad_out, q, k, v, out, lse, is_causal=False, scale=None, enable_gqa=False,
             *, tag, causal_align="top_left", window=None, block_q=64, block_k=64,
             smem_limit=cuda_driver.DEFAULT_SMEM):
    """``(dq, dk, dv)`` shaped like ``q``, ``k``, ``v`` in the storage dtype of ``tag``."""
    p = check(q, k, v, is_causal, scale, enable_gqa, causal_align, window, block_q, block_k, tag)
    lead, hq, hkv = p["lead"], p["hq"], p["k"].shape[1]
    L, E, S, Ev = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
    expected = {"grad_out": lead + (hq, L, Ev), "out": lead + (hq, L, Ev), "lse": lead + (hq, L)}
    for name, arr in (("grad_out", grad_out), ("out", out), ("lse", lse)):
        if tuple(arr.shape) != expected[name]:
            raise ValueError(f"{name} must have shape {expected[name]} for query {tuple(q.shape)} "
                             f"and value {tuple(v.shape)}; got {tuple(arr.shape)}")
    n = int(np.prod(lead, dtype=np.int64))
    acc = cuda_driver.acc_dtype(tag)
    q, k, v, found = _kernel_layout(p, q, k, v)  # rows holding NaN or ±inf zeroed
    layout = q.shape[:-1]  # (N, Hkv, G, L)
    rows, grad_out, out, lse = band_backward_inputs(found, p["band"], grad_out.reshape(layout + (Ev,)),
                                                    out.reshape(layout + (Ev,)), lse.reshape(layout))
    flat = [xp.ascontiguousarray(a.reshape(s)) for a, s in (
        (grad_out, (n * hq, L, Ev)), (q, (n * hq, L, E)), (k, (n * hkv, S, E)),
        (v, (n * hkv, S, Ev)), (out, (n * hq, L, Ev)))]  # kernel layout, (N*H, len, dim)
    lse2 = xp.ascontiguousarray(lse.reshape((n * hq, L)).astype(acc))  # (N*Hq, L)
    dq, dk, dv = cuda_driver.run_backward(launch, xp, flat[0], flat[1], flat[2], flat[3], flat[4], lse2,
                                          hq // max(hkv, 1), p["scale"], p["band"], p["block_q"],
                                          p["block_k"], tag, smem_limit=smem_limit)
    dq, dk, dv = mark_band_backward(rows, p["band"], dq.reshape(q.shape), dk.reshape(k.shape),
                                    dv.reshape(v.shape))
    return (dq.reshape(lead + (hq, L, E)), dk.reshape(lead + (hkv, S, E)),  # like q, like k
            dv.reshape(lead + (hkv, S, Ev)))  # like v
