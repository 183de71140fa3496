"""Flash attention on the CPU with Numba: the public entry points of the ``"numba"`` backend.

This module imports without Numba (:func:`unavailable_reason` says what is
missing); the kernels live in :mod:`.forward` and :mod:`.backward`
and are imported, and compiled, on first use. ``cache=True`` stores the machine
code next to the sources, so a second process loads it instead of compiling.
Tile sizes left at their default are tuned for the machine at first use and cached
(:mod:`.autotune`); sizes passed explicitly are run as given.

Around each kernel the BLAS library is held to one thread and OpenBLAS's idle
workers are stopped (:func:`.threads.blas_one_thread`): the kernel already runs one
work item per core, and BLAS threads started for every tile product, or still
spinning after the caller's last NumPy product, would take those cores.
"""
import importlib.util

import numpy as np

from ...contract import TilePlan, attention_args
from .autotune import AUTO_BLOCK, DefaultBlock, plan_blocks
from .threads import blas_one_thread
from .workspace import scratch

_REQUIRED = (("numba", "Numba (pip install numba)"),
             ("scipy", "SciPy, which Numba's np.dot calls for BLAS (pip install scipy)"),
             ("threadpoolctl", "threadpoolctl, to hold BLAS to one thread (pip install "
                               "threadpoolctl)"))


def unavailable_reason():
    """``None`` when Numba, SciPy and threadpoolctl are installed, else which one is missing."""
    missing = [what for name, what in _REQUIRED if importlib.util.find_spec(name) is None]
    return f"the 'numba' backend needs {' and '.join(missing)}" if missing else None


def _kernel_arrays(args):
    """``q`` (Hq', L, E), ``k`` (Hkv', S, E), ``v`` (Hkv', S, Ev): C-contiguous, in the accumulation
    dtype.

    ``Hq' = N·Hq`` and ``Hkv' = N·Hkv`` fold the batch into the heads
    (:meth:`AttentionArgs.folded`).
    """
    for name in ("q", "k", "v"):
        x = getattr(args, name)
        if not isinstance(x, np.ndarray):
            raise TypeError(f"the 'numba' backend takes NumPy arrays; got {type(x).__module__}."
                            f"{type(x).__name__} (use backend='cupy' for GPU arrays)")
    return tuple(args.folded(x, args.acc_dtype) for x in (args.q, args.k, args.v))


def forward_flops(q, k, v):
    """The matrix-product FLOPs of a forward pass on kernel-layout arrays (mask ignored)."""
    return 2.0 * q.shape[0] * q.shape[1] * k.shape[1] * (q.shape[2] + v.shape[2])


def _args(query, key, value, is_causal, scale, enable_gqa, causal_align, window, block_q,
          block_k, backward, autotune):
    """The validated arguments, with the tile plan of :func:`.autotune.plan_blocks`."""
    sizes = [int(b) if isinstance(b, DefaultBlock) else b for b in (block_q, block_k)]
    args = attention_args(query, key, value, is_causal, scale, enable_gqa,
                          causal_align=causal_align, window=window, block_q=sizes[0],
                          block_k=sizes[1])
    requested, used, note = plan_blocks(args, block_q, block_k, backward, autotune)
    return args.with_plan(TilePlan(requested, used, note=note))


def flash_attention(query, key, value, is_causal=False, scale=None, enable_gqa=False, *,
                    causal_align="top_left", window=None, block_q=AUTO_BLOCK,
                    block_k=AUTO_BLOCK, return_lse=False, autotune=None):
    """:func:`attention_scratch.flash_attention` computed by the parallel Numba kernel.

    Shapes
    ------
    ``(..., Hq, L, E), (..., Hkv, S, E), (..., Hkv, S, Ev) -> (..., Hq, L, Ev)``
    (and ``lse`` ``(..., Hq, L)`` with ``return_lse``).
    """
    from .forward import forward_parallel
    from .register_tile import pack_columns, pack_heads, packed_columns_shape, packed_heads_shape

    args = _args(query, key, value, is_causal, scale, enable_gqa, causal_align, window, block_q,
                 block_k, False, autotune)
    q, k, v = _kernel_arrays(args)  # (Hq', L, E), (Hkv', S, E), (Hkv', S, Ev)
    out = np.empty((*q.shape[:2], v.shape[2]), dtype=args.acc_dtype)  # (Hq', L, Ev)
    lse = np.empty(q.shape[:2], dtype=args.acc_dtype)  # (Hq', L)
    lo, hi = args.band
    if q.shape[0] and args.L:  # no head (B = 0 or H = 0) or no query: nothing to compute
        with blas_one_thread(flops=forward_flops(q, k, v)):
            bk = args.plan.block_k
            kp = pack_heads(k, bk, scratch("kp", packed_heads_shape(k, bk), k.dtype))  # (Hkv',R,w)
            vp = pack_columns(v, scratch("vp", packed_columns_shape(v), v.dtype))  # (Hkv', m, S, w)
            forward_parallel(q, kp, vp, out, lse, q.dtype.type(args.scale), lo, hi,
                             args.plan.block_q, args.plan.block_k)
    out = out.astype(args.dtype, copy=False)  # (Hq', L, Ev)
    return args.finish_forward(out, lse, return_lse)  # (..., Hq, L, Ev)


def tile_plan(query, key, value, is_causal=False, scale=None, enable_gqa=False, *,
              causal_align="top_left", window=None, block_q=AUTO_BLOCK, block_k=AUTO_BLOCK,
              backward=False, autotune=None):
    """The tiles this backend runs (a :class:`~attention_scratch.contract.TilePlan`): those
    requested, and the tuned ones where the sizes were left at their default (:mod:`.autotune`).
    """
    return _args(query, key, value, is_causal, scale, enable_gqa, causal_align, window, block_q,
                 block_k, backward, autotune).plan


def flash_attention_backward(grad_out, query, key, value, out, lse, is_causal=False, scale=None,
                             enable_gqa=False, *, causal_align="top_left", window=None,
                             block_q=AUTO_BLOCK, block_k=AUTO_BLOCK, two_pass=False,
                             autotune=None):
    """:func:`attention_scratch.flash_attention_backward` computed by parallel Numba kernels.

    ``two_pass=True`` runs the two-pass kernels (dK/dV by key blocks, then dQ by
    query blocks: 7 tile products); the default is the one-pass kernel with
    private copies of dQ (5 tile products). Both give the same result up to rounding.

    Shapes
    ------
    returns ``(..., Hq, L, E)``, ``(..., Hkv, S, E)``, ``(..., Hkv, S, Ev)``.
    """
    from .backward import dq_chunks, dq_parallel, fused_parallel, kv_parallel, pack_operands
    from .register_tile import row_dots

    args = _args(query, key, value, is_causal, scale, enable_gqa, causal_align, window, block_q,
                 block_k, True, autotune)
    rows, d_out, out, lse = args.backward_inputs(grad_out, out, lse)  # kernel layout, rows cleaned
    q, k, v = _kernel_arrays(args)  # (Hq', L, E), (Hkv', S, E), (Hkv', S, Ev)
    acc_dtype = args.acc_dtype
    d_out = args.folded(d_out, acc_dtype)  # (Hq', L, Ev)
    out = args.folded(out, acc_dtype)  # (Hq', L, Ev)
    d = scratch("d", q.shape[:2], acc_dtype)  # (Hq', L): D = rowsum(dO ∘ O), summed as dP is
    row_dots(d_out, out, d)
    lse = np.ascontiguousarray(lse.reshape(q.shape[:2]), dtype=acc_dtype)  # (Hq', L)
    dk, dv = np.empty_like(k), np.empty_like(v)
    L, S = args.L, args.S
    lo, hi = args.band
    block_q, block_k = args.plan.block_q, args.plan.block_k
    scale, one = q.dtype.type(args.scale), q.dtype.type(1)
    # The kernels recompute the forward's scores bit for bit: (Q_i·scale) K_jᵀ on the same tiles
    # (the docstring of backends/numba/backward.py). So they get Q·scale, rounded as the forward
    # rounds it, and
    # scale 1; dK = dSᵀ (Q·scale) comes out scaled, dQ = (dS K) is scaled here at the end.
    q = np.multiply(q, scale, out=scratch("q_scaled", q.shape, q.dtype))  # (Hq', L, E)
    if not (q.shape[0] and L and S):  # no head, query or key: every gradient is 0
        dq = np.zeros_like(q)
        dk[...], dv[...] = 0, 0
    elif two_pass:
        packed = pack_operands(q, k, v, d_out, block_k, scratch)  # the register tiles' operands
        with blas_one_thread(flops=2.5 * forward_flops(q, k, v)):
            dq = np.empty_like(q)
            kv_parallel(q, v, d_out, packed, lse, d, dk, dv, one, lo, hi, block_q, block_k)
            dq_parallel(q, k, packed[0], v, d_out, lse, d, dq, one, lo, hi, block_q, block_k)
        dq *= scale
    else:
        chunks = dq_chunks(k.shape[0], -(-S // block_k))
        dq_parts = scratch("dq_parts", (chunks, *q.shape), acc_dtype)  # (C, Hq', L, E)
        dq_parts[...] = 0
        packed = pack_operands(q, k, v, d_out, block_k, scratch)  # the register tiles' operands
        with blas_one_thread(flops=2.5 * forward_flops(q, k, v)):
            fused_parallel(q, v, d_out, packed, lse, d, dk, dv, dq_parts, one, lo, hi, block_q,
                           block_k)
        dq = dq_parts.sum(axis=0) if chunks > 1 else dq_parts[0].copy()  # (Hq', L, E), ours
        dq *= scale
    grads = (a.astype(args.dtype, copy=False) for a in (dq, dk, dv))
    return args.finish_backward(rows, *grads)  # shaped like query, key, value
