"""Run the CUDA flash kernels on the CPU: an *emulation* for testing without a GPU (chapter 13).

The ``.cu`` sources in ``backends/cuda/`` are compiled with ``g++`` together with
``emulation/cuda_emulation.h``, which supplies ``threadIdx``, ``__syncthreads``,
warp shuffles, half/bfloat16 types and WMMA fragments on the host. Every CUDA
thread becomes a fiber; the threads of a block take turns at each barrier, and
the blocks of a grid run one after another. The kernel *logic* — indexing,
masks, block skipping, the online softmax, the shared-memory budget, the order
of the collective operations — is executed exactly as written; speed, memory
coalescing and real concurrency are not. Passing these tests is evidence, not
proof, that the kernels work on a GPU.

The functions take and return NumPy arrays and have the signatures of
:func:`attention_scratch.flash_attention` (without ``backend``), plus ``tensor_cores`` (``True`` or
``"mma"``: the register-fragment tensor-core kernel, ``"wmma"``: the WMMA one, for 16-bit input with
the default 64x64 tiles) and ``bfloat16`` (round float inputs to bfloat16 and compute in it).
"""
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ...contract import DEFAULT_BLOCK
from . import driver, frontend

CUDA_DIR = Path(__file__).resolve().parent
SOURCES = sorted(CUDA_DIR.glob("*.cu")) + sorted(CUDA_DIR.glob("*.cuh")) + sorted(
    (CUDA_DIR / "emulation").glob("*"))
DTYPE_CODES = {"float64": 0, "float32": 1, "float16": 2, "bfloat16": 3}
KINDS = {"ptr": ctypes.c_void_p, "i32": ctypes.c_int, "i64": ctypes.c_longlong,
         "f64": ctypes.c_double}
_LIBRARY = None


def unavailable_reason():
    """None when a C++ compiler (``g++``) can build the emulation; otherwise why not."""
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        return "the CUDA emulation needs a C++17 compiler (g++) on PATH"
    return None


def library():
    """Compile (once per source version, cached in the temp directory) and load the emulation."""
    global _LIBRARY
    if _LIBRARY is not None:
        return _LIBRARY
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    # e.g. -fsanitize=address
    extra = os.environ.get("ATTENTION_SCRATCH_EMULATION_CXXFLAGS", "").split()
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in SOURCES)
                            + " ".join(extra).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("ATTENTION_SCRATCH_CACHE",
                                Path(tempfile.gettempdir()) / "attention_scratch"))
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"cuda_emulation_{digest}.so"
    if not target.exists():
        tmp = cache / f"{target.name}.{os.getpid()}.tmp"
        cmd = [os.environ.get("CXX", "g++"), "-O2", "-std=c++17", "-U_FORTIFY_SOURCE", "-shared",
               "-fPIC", "-o", str(tmp), *extra, str(CUDA_DIR / "emulation" / "emulation.cpp")]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError("compiling the CUDA emulation "
                               f"failed:\n{' '.join(cmd)}\n{result.stderr}")
        os.replace(tmp, target)
    _LIBRARY = ctypes.CDLL(str(target))
    return _LIBRARY


def _launch(name, tag, D, grid, threads, smem, args):
    """Run one kernel through the emulation (the ``launch`` of :mod:`.driver`)."""
    lib = library()
    head = [ctypes.c_int(DTYPE_CODES[tag])]
    if name != "flash_bwd_preprocess":
        head.append(ctypes.c_int(D))
    head += [ctypes.c_uint(grid[0])]
    if name != "flash_bwd_preprocess":
        head.append(ctypes.c_uint(grid[1]))
    head.append(ctypes.c_uint(threads))
    if name != "flash_bwd_preprocess":
        head.append(ctypes.c_size_t(smem))
    values = [ctypes.c_void_p(v.ctypes.data) if kind == "ptr" else KINDS[kind](v)
              for kind, v in args]
    code = getattr(lib, "emu_" + name.removeprefix("flash_"))(*head, *values)
    if code:
        raise RuntimeError(f"emulated kernel {name}<{tag}, {D}> failed "
                           f"with code {code} (see stderr)")


def _tag(bfloat16, *arrays):
    return "bfloat16" if bfloat16 else frontend.storage_tag(*(np.asarray(a).dtype for a in arrays))


def _storage(a, tag):
    """A host array in the kernel's storage dtype (bfloat16: uint16 bits of the rounded values)."""
    if tag == "bfloat16":
        return driver.to_storage(np.asarray(a, dtype=np.float32), tag, np)
    return np.ascontiguousarray(a, dtype=tag)


def flash_attention(query, key, value, is_causal=False, scale=None, enable_gqa=False, *,
                    causal_align="top_left", window=None, block_q=DEFAULT_BLOCK,
                    block_k=DEFAULT_BLOCK, return_lse=False, tensor_cores=False, bfloat16=False,
                    smem_limit=driver.DEFAULT_SMEM):
    """The CUDA forward kernels, emulated on the CPU; NumPy in, NumPy out (bfloat16 as float32)."""
    tag = _tag(bfloat16, query, key, value)
    q, k, v = (_storage(a, tag) for a in (query, key, value))
    out, lse = frontend.forward(_launch, np, q, k, v, is_causal, scale, enable_gqa, tag=tag,
                                causal_align=causal_align, window=window, block_q=block_q,
                                block_k=block_k, tensor_cores=tensor_cores, smem_limit=smem_limit)
    out = driver.from_storage(out, tag)
    return (out, lse) if return_lse else out


def tile_plan(query, key, value, is_causal=False, scale=None, enable_gqa=False, *,
              causal_align="top_left", window=None, block_q=DEFAULT_BLOCK, block_k=DEFAULT_BLOCK,
              backward=False, tensor_cores=False, bfloat16=False, smem_limit=driver.DEFAULT_SMEM):
    """The :class:`~attention_scratch.contract.TilePlan` the emulated kernels run for
    these arguments."""
    return frontend.tile_plan(query, key, value, is_causal, scale, enable_gqa,
                              tag=_tag(bfloat16, query, key, value), causal_align=causal_align,
                              window=window, block_q=block_q, block_k=block_k, backward=backward,
                              tensor_cores=False if backward else tensor_cores,
                              smem_limit=smem_limit)


def flash_attention_backward(grad_out, query, key, value, out, lse, is_causal=False, scale=None,
                             enable_gqa=False, *, causal_align="top_left", window=None, block_q=64,
                             block_k=64, bfloat16=False, smem_limit=driver.DEFAULT_SMEM):
    """The CUDA backward kernels, emulated on the CPU; NumPy in, NumPy out (bfloat16 as float32)."""
    tag = _tag(bfloat16, query, key, value)
    arrays = [_storage(a, tag) for a in (grad_out, query, key, value, out)]
    grads = frontend.backward(_launch, np, *arrays, np.asarray(lse), is_causal, scale, enable_gqa,
                              tag=tag, causal_align=causal_align, window=window, block_q=block_q,
                              block_k=block_k, smem_limit=smem_limit)
    return tuple(driver.from_storage(g, tag) for g in grads)
