"""Launch planning for the CUDA flash kernels, shared by the CuPy backend and the CPU emulation.

Nothing here imports CuPy. The functions take the array module ``xp`` (NumPy or
CuPy) and a ``launch`` callable, so the very same sequence of kernel launches,
tile sizes, shared-memory budgets and dtype conversions runs on a GPU through
:mod:`attention_scratch.backends.cuda.gpu` and on the CPU through
:mod:`attention_scratch.backends.cuda.emulator`.

``launch(name, tag, D, grid, threads, smem, args)`` runs kernel ``name`` (``"flash_fwd_scalar"``,
``"flash_fwd_mma"``, ``"flash_fwd_wmma"``, ``"flash_bwd_preprocess"`` or ``"flash_bwd_dkdv"``) for
input dtype ``tag`` and head-dim bucket ``D`` with ``args`` a list of ``(kind, value)`` pairs, kind
one of ``"ptr"``, ``"i32"``, ``"i64"``, ``"f64"``.
"""
import numpy as np

from ...contract import DEFAULT_BLOCK
from .constants import (
    FLASH_BWD_ROWS,
    FLASH_MAX_THREADS,
    MMA_BK_LARGE_D,
    MMA_BK_SMALL_D,
    MMA_BQ,
    MMA_WARPS,
    WMMA_BK,
    WMMA_BQ,
    WMMA_WARPS,
)

HEAD_DIMS = (32, 64, 128, 256)  # compiled head-dim buckets; E and Ev are zero-padded up to one
TAGS = ("float64", "float32", "float16", "bfloat16")
CTYPES = {"float64": "double", "float32": "float", "float16": "__half", "bfloat16": "__nv_bfloat16"}
MAX_THREADS = FLASH_MAX_THREADS  # per block of the scalar kernels (flash_constants.cuh)
GRID_Y_MAX = 65535


def mma_tiles(D):
    """flash_fwd_mma's fixed ``(query, key)`` tiles for head-dim bucket ``D``
    (MMA_BK in the kernel)."""
    return MMA_BQ, (MMA_BK_LARGE_D if D > 64 else MMA_BK_SMALL_D)


TENSOR_CORE_KERNELS = ("mma", "wmma")  # flash_fwd_mma (registers) and flash_fwd_wmma (WMMA API)
DEFAULT_SMEM = 48 * 1024  # shared memory any CUDA GPU gives a block without opting in


def acc_dtype_of_tag(tag):
    """float64 accumulates in float64; float32, float16 and bfloat16 in float32."""
    return np.dtype(np.float64) if tag == "float64" else np.dtype(np.float32)


def head_dim_bucket(E, Ev):
    """The smallest compiled head dim ``D >= max(E, Ev)``, or None when there is none."""
    for D in HEAD_DIMS:
        if max(E, Ev) <= D:
            return D
    return None


def threads_per_row(D):
    """Threads that share one query (forward) or key (backward) row: each owns 16 head dims."""
    return D // 16


def round_up(x, multiple):
    return -(-x // multiple) * multiple


# BEGIN EXERCISE 13.2 (2 points): the shared-memory budget of the forward tile
def forward_smem_bytes(block_k, D, acc_bytes):
    """Bytes of shared memory the scalar forward kernel needs: K and V tiles of ``block_k`` rows.

    Each tile row holds ``D + 1`` accumulation-type values (the head dim padded by
    one to spread the rows over the 32 shared-memory banks), ``acc_bytes`` each.
    Returns an ``int``.
    """
    # BEGIN SOLUTION
    return 2 * block_k * (D + 1) * acc_bytes
    # END SOLUTION


# END EXERCISE


def largest_block_k(D, acc_bytes, smem_limit, block_k):
    """The largest key tile ``<= block_k`` whose K and V tiles fit in ``smem_limit`` bytes."""
    bk = block_k
    while bk > 1 and forward_smem_bytes(bk, D, acc_bytes) > smem_limit:
        bk //= 2
    return bk


def backward_smem_bytes(block_q, block_k, D, acc_bytes):
    """Shared memory of ``flash_bwd_dkdv``: K tile, Q and dO tiles, lse and D, the dS tile."""
    return (block_k * (D + 1) + 2 * block_q * (D + 1) + 2 * block_q + block_q
            * (block_k + 1)) * acc_bytes


def wmma_smem_bytes(D):
    """Shared memory of ``flash_fwd_wmma`` (2-byte inputs), mirroring the carving in the kernel."""
    bq, bk = WMMA_BQ, WMMA_BK
    dp, sp, pp, op = D + 8, bk + 4, bk + 8, D + 4
    q_or_scores = max(bq * dp * 2, 4 * 16 * sp * 4)
    return q_or_scores + 2 * bk * dp * 2 + 4 * 16 * pp * 2 + 4 * 16 * op * 4


def mma_smem_bytes(D):
    """Shared memory of ``flash_fwd_mma``: the Q tile and two K and two V tiles (double
    buffering), rows of pitch D + 8 in the 2-byte input type (mirrors the carving in the kernel)."""
    bq, bk = mma_tiles(D)
    return (bq + 4 * bk) * (D + 8) * 2


def tensor_core_plan(kind, D, smem_limit):
    """The plan of tensor-core kernel ``kind`` ("mma" or "wmma") for head dims ``D``, or None
    when it does not fit in ``smem_limit`` bytes of shared memory."""
    if kind not in TENSOR_CORE_KERNELS:
        raise ValueError("tensor_cores must be False, True or one of "
                         f"{TENSOR_CORE_KERNELS}; got {kind!r}")
    bq, bk = mma_tiles(D) if kind == "mma" else (WMMA_BQ, WMMA_BK)
    smem = mma_smem_bytes(D) if kind == "mma" else wmma_smem_bytes(D)
    if smem > smem_limit:
        return None
    threads = 32 * (MMA_WARPS if kind == "mma" else WMMA_WARPS)
    return dict(kernel=f"flash_fwd_{kind}", D=D, bq=bq, bk=bk, threads=threads, smem=smem)


def forward_plan(tag, L, S, E, Ev, block_q, block_k, smem_limit=DEFAULT_SMEM, tensor_cores=False):
    """Which forward kernel runs and how: a dict with ``kernel``, ``D``, ``bq``, ``bk``,
    ``threads``, ``smem``. Block sizes are honoured up to what one thread block holds
    (256 threads, ``smem_limit`` bytes); larger ones are reduced, which changes the
    tiling but never the result (beyond rounding).

    ``tensor_cores`` (``True`` = ``"mma"``, or ``"wmma"``) lets float16/bfloat16 input
    with the default 64x64 tiles and head dims up to 128 run on a tensor-core kernel
    with that kernel's own tiles, when its shared memory fits.
    """
    D = head_dim_bucket(E, Ev)
    if D is None:
        raise ValueError(f"the CUDA kernels support head dims up to {HEAD_DIMS[-1]}; "
                         f"got E={E}, Ev={Ev}")
    if (tensor_cores and tag in ("float16", "bfloat16") and D <= 128
            and (block_q, block_k) == (DEFAULT_BLOCK, DEFAULT_BLOCK)):
        plan = tensor_core_plan("mma" if tensor_cores is True else tensor_cores, D, smem_limit)
        if plan is not None:
            return plan
    tpr, acc_bytes = threads_per_row(D), acc_dtype_of_tag(tag).itemsize
    bq = max(1, min(block_q, MAX_THREADS // tpr, max(L, 1)))
    bk = largest_block_k(D, acc_bytes, smem_limit, max(1, min(block_k, max(S, 1))))
    return dict(kernel="flash_fwd_scalar", D=D, bq=bq, bk=bk, threads=round_up(bq * tpr, 32),
                smem=forward_smem_bytes(bk, D, acc_bytes))


def backward_plan(tag, L, S, E, Ev, block_q, block_k, smem_limit=DEFAULT_SMEM):
    """Tiles of ``flash_bwd_dkdv``: one row group per key row, so ``block_k`` sets the threads."""
    D = head_dim_bucket(E, Ev)
    if D is None:
        raise ValueError(f"the CUDA kernels support head dims up to {HEAD_DIMS[-1]}; "
                         f"got E={E}, Ev={Ev}")
    tpr, acc_bytes = threads_per_row(D), acc_dtype_of_tag(tag).itemsize
    bq = max(1, min(block_q, max(L, 1)))
    bk = max(1, min(block_k, MAX_THREADS // tpr, max(S, 1)))
    while backward_smem_bytes(bq, bk, D, acc_bytes) > smem_limit and max(bq, bk) > 1:
        if bq >= bk:
            bq = max(1, bq // 2)
        else:
            bk = max(1, bk // 2)
    return dict(kernel="flash_bwd_dkdv", D=D, bq=bq, bk=bk, threads=round_up(bk * tpr, 32),
                smem=backward_smem_bytes(bq, bk, D, acc_bytes))


def _chunks(total):
    """Split a grid's y extent (batch*heads) into launches of at most 65535 blocks."""
    for start in range(0, total, GRID_Y_MAX):
        yield start, min(GRID_Y_MAX, total - start)


def run_forward(launch, xp, q, k, v, G, scale, band, block_q, block_k, tag, *,
                smem_limit=DEFAULT_SMEM, tensor_cores=False):
    """The forward pass on contiguous ``q`` (BH, L, E), ``k`` (BKV, S, E), ``v`` (BKV, S, Ev).

    Arrays hold the input storage (bfloat16 as uint16 bits). Returns ``out``
    (BH, L, Ev) in that storage and ``lse`` (BH, L) in the accumulation dtype.
    """
    BH, L, E = q.shape
    S, Ev = k.shape[1], v.shape[2]
    out = xp.empty((BH, L, Ev), dtype=q.dtype)  # (BH, L, Ev)
    lse = xp.empty((BH, L), dtype=acc_dtype_of_tag(tag))  # (BH, L)
    if BH == 0 or L == 0:
        return out, lse
    plan = forward_plan(tag, L, S, E, Ev, block_q, block_k, smem_limit, tensor_cores)
    lo, hi = band  # the integer band of AttentionArgs
    for bh0, gy in _chunks(BH):
        args = [("ptr", q), ("ptr", k), ("ptr", v), ("ptr", out), ("ptr", lse), ("i32", G),
                ("i32", L), ("i32", S), ("i32", E), ("i32", Ev), ("f64", scale), ("i32", lo),
                ("i32", hi)]
        if plan["kernel"] == "flash_fwd_scalar":  # the tensor-core kernels have fixed tiles
            args += [("i32", plan["bq"]), ("i32", plan["bk"])]
        args.append(("i32", bh0))
        launch(plan["kernel"], tag, plan["D"], (-(-L // plan["bq"]), gy), plan["threads"],
               plan["smem"], args)
    return out, lse


def run_backward(launch, xp, grad_out, q, k, v, out, lse, G, scale, band, block_q, block_k, tag, *,
                 smem_limit=DEFAULT_SMEM):
    """The backward pass on the kernel layout; returns ``dq``, ``dk``, ``dv`` in the input storage.

    Shapes: ``grad_out``, ``out`` (BH, L, Ev); ``lse`` (BH, L); the rest as in :func:`run_forward`.
    """
    BH, L, E = q.shape
    BKV, S, Ev = v.shape
    acc_dtype = acc_dtype_of_tag(tag)
    big_d = xp.empty((BH, L), dtype=acc_dtype)  # (BH, L): rowsum(dO * O)
    lse2 = xp.empty((BH, L), dtype=acc_dtype)  # (BH, L): lse in log2 units
    rows = BH * L
    if rows:
        launch("flash_bwd_preprocess", tag, None, (-(-rows // FLASH_BWD_ROWS), 1),
               32 * FLASH_BWD_ROWS, 0, [("ptr", grad_out), ("ptr", out), ("ptr", lse),
                                        ("ptr", big_d), ("ptr", lse2), ("i64", rows), ("i32", Ev)])
    dq_acc = xp.zeros((BH, L, E), dtype=acc_dtype)  # (BH, L, E): atomics add into it
    dk = xp.empty((BKV, S, E), dtype=q.dtype)  # (BKV, S, E)
    dv = xp.empty((BKV, S, Ev), dtype=q.dtype)  # (BKV, S, Ev)
    if BKV and S:
        plan = backward_plan(tag, L, S, E, Ev, block_q, block_k, smem_limit)
        lo, hi = band
        for bh0, gy in _chunks(BKV):
            launch("flash_bwd_dkdv", tag, plan["D"], (-(-S // plan["bk"]), gy), plan["threads"],
                   plan["smem"],
                   [("ptr", q), ("ptr", k), ("ptr", v), ("ptr", grad_out), ("ptr", lse2),
                    ("ptr", big_d), ("ptr", dq_acc), ("ptr", dk), ("ptr", dv), ("i32", G),
                    ("i32", L), ("i32", S), ("i32", E), ("i32", Ev), ("f64", scale), ("i32", lo),
                    ("i32", hi), ("i32", plan["bq"]), ("i32", plan["bk"]), ("i32", bh0)])
    return to_storage(dq_acc, tag, xp), dk, dv


def to_storage(x, tag, xp):
    """Accumulated values -> the input storage dtype
    (bfloat16: uint16 bits, rounded to nearest even)."""
    if tag != "bfloat16":
        return x.astype(tag)
    bits = x.astype(np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return xp.where(xp.isnan(x), np.uint32(0x7FC0), rounded).astype(np.uint16)


def from_storage(x, tag):
    """Storage -> float32 (bfloat16 bits) or the dtype itself."""
    if tag != "bfloat16":
        return x
    return (x.astype(np.uint32) << np.uint32(16)).view(np.float32)
