"""The public-signature front end of the CUDA kernels, shared by CuPy and the CPU emulation.

It validates the arguments exactly as the NumPy reference does, with
:func:`attention_scratch.contract.attention_args` on the device arrays themselves (in the
kernels' storage dtype, bfloat16 as its uint16 bits), folds them into the kernel layout,
calls :mod:`.driver`, and restores the caller's shapes. NaN and infinities follow
``CONVENTIONS.md`` exactly as on the other backends: the rows holding one are found and
zeroed on the device before the kernels run (:mod:`attention_scratch._nonfinite`), and the
rows and keys the rule makes NaN are marked afterwards. ``xp`` is the array module of the
device arrays; ``launch`` runs one kernel (see :mod:`.driver`).
"""
import numpy as np

from ...contract import DEFAULT_BLOCK, TilePlan, attention_args
from . import driver


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
            raise TypeError("query, key and value must hold real floating-point numbers; "
                            f"got dtypes {names}")
    common = np.result_type(*[np.float64 if np.dtype(d).kind in "biu" else d for d in dtypes])
    return common.name


def _is_bf16(dtype):
    return str(dtype).endswith("bfloat16")


def _stand_in(shape):
    """A zero-stride float array of ``shape``: validates like an input without holding one."""
    return np.broadcast_to(np.zeros((), dtype=np.float32), tuple(shape))


def tile_plan(query, key, value, is_causal=False, scale=None, enable_gqa=False, *, tag,
              causal_align="top_left", window=None, block_q=DEFAULT_BLOCK, block_k=DEFAULT_BLOCK,
              backward=False, tensor_cores=False, smem_limit=driver.DEFAULT_SMEM):
    """The :class:`~attention_scratch.contract.TilePlan` the CUDA kernels run for these arguments.

    ``block_q`` and ``block_k`` are requests here: the tensor-core forward kernels have
    fixed tiles, and the scalar kernels reduce tiles to what one thread block holds
    (threads and ``smem_limit`` bytes of shared memory). Only shapes are read.
    """
    args = attention_args(*(_stand_in(a.shape) for a in (query, key, value)), is_causal, scale,
                          enable_gqa, causal_align=causal_align, window=window, block_q=block_q,
                          block_k=block_k)
    return plan_for(args, tag, backward=backward, tensor_cores=tensor_cores, smem_limit=smem_limit)


def plan_for(args, tag, *, backward=False, tensor_cores=False, smem_limit=driver.DEFAULT_SMEM):
    """:func:`tile_plan` for validated :class:`~attention_scratch.contract.AttentionArgs`."""
    block_q, block_k = args.plan.requested
    if backward:
        launch = driver.backward_plan(tag, args.L, args.S, args.E, args.Ev, block_q, block_k,
                                           smem_limit)
    else:
        launch = driver.forward_plan(tag, args.L, args.S, args.E, args.Ev, block_q, block_k,
                                          smem_limit, tensor_cores)
    used = (launch["bq"], launch["bk"])
    note = ""
    if launch["kernel"] in ("flash_fwd_mma", "flash_fwd_wmma"):
        note = f"tensor-core kernel {launch['kernel']}: fixed {used[0]}x{used[1]} tiles"
    elif used != (block_q, block_k):
        note = (f"reduced to fit one thread block ({driver.MAX_THREADS} threads, "
                f"{smem_limit} bytes of shared memory), or to the sequence")
    return TilePlan((block_q, block_k), used, kernel=launch["kernel"], note=note)


def forward(launch, xp, q, k, v, is_causal=False, scale=None, enable_gqa=False, *, tag,
            causal_align="top_left", window=None, block_q=DEFAULT_BLOCK, block_k=DEFAULT_BLOCK,
            tensor_cores=False, smem_limit=driver.DEFAULT_SMEM):
    """``out`` (..., Hq, L, Ev) in the storage dtype and ``lse``
    (..., Hq, L) in the accumulation dtype.

    ``q``, ``k``, ``v`` are device arrays already in the storage dtype of ``tag``.
    """
    args = attention_args(q, k, v, is_causal, scale, enable_gqa, causal_align=causal_align,
                          window=window, block_q=block_q, block_k=block_k, convert=False)
    q3, k3, v3 = (args.folded(x) for x in (args.q, args.k, args.v))  # (N·Hq, L, E), (N·Hkv, S, ·)
    out, lse = driver.run_forward(launch, xp, q3, k3, v3, args.group, args.scale, args.band,
                                       *args.plan.requested, tag, smem_limit=smem_limit,
                                       tensor_cores=tensor_cores)  # (N·Hq, L, Ev), (N·Hq, L)
    return args.finish_forward(out, lse, return_lse=True)  # (..., Hq, L, Ev), (..., Hq, L)


def backward(launch, xp, grad_out, q, k, v, out, lse, is_causal=False, scale=None, enable_gqa=False,
             *, tag, causal_align="top_left", window=None, block_q=DEFAULT_BLOCK,
             block_k=DEFAULT_BLOCK, smem_limit=driver.DEFAULT_SMEM):
    """``(dq, dk, dv)`` shaped like ``q``, ``k``, ``v`` in the storage dtype of ``tag``."""
    args = attention_args(q, k, v, is_causal, scale, enable_gqa, causal_align=causal_align,
                          window=window, block_q=block_q, block_k=block_k, convert=False)
    # rows cleaned
    rows, grad_out, out, lse = args.backward_inputs(grad_out, out, lse, convert=False)
    q_rows = (int(np.prod(args.q.shape[:-2], dtype=np.int64)), args.L)  # (N·Hq, L)
    lse = lse.reshape(q_rows).astype(driver.acc_dtype_of_tag(tag))  # (N·Hq, L)
    lse = xp.ascontiguousarray(lse)
    # dq (N·Hq, L, E), dk (N·Hkv, S, E), dv (N·Hkv, S, Ev)
    dq, dk, dv = driver.run_backward(
        launch, xp, args.folded(grad_out), args.folded(args.q), args.folded(args.k),
        args.folded(args.v), args.folded(out), lse, args.group, args.scale, args.band,
        *args.plan.requested, tag, smem_limit=smem_limit)
    return args.finish_backward(rows, dq, dk, dv)  # shaped like q, k, v
