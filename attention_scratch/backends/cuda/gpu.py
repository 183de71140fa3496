"""Flash attention on an NVIDIA GPU: raw CUDA kernels loaded with ``cupy.RawModule`` (chapter 13).

The kernels live in ``backends/cuda/*.cu``: a scalar forward pass for every
dtype (``flash_fwd.cu``), two tensor-core forward passes for float16/bfloat16 with
float32 accumulation (``flash_fwd_mma.cu``: ``mma.sync`` with scores, probabilities
and output in registers, sm_80 and newer, the default; ``flash_fwd_wmma.cu``: the
WMMA API with the score and output tiles in shared memory) and the backward pass
(``flash_bwd.cu``). Launch planning is shared with the CPU
emulation in :mod:`.driver` and :mod:`.frontend`.

CuPy is imported only when a function here is called, never at package import.
Inputs may be NumPy arrays (copied to the GPU and back), CuPy arrays, or
PyTorch CUDA tensors (shared through DLPack; ``torch.bfloat16`` is the way to
pass bfloat16, which NumPy and CuPy lack);
results come back as the same kind of array as ``query``.

Status: these kernels have been compiled with nvcc for sm_80 and sm_90 and
executed in the CPU emulation, but not yet run on a GPU (see
benchmarks/gpu_results.md).
"""
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from ...contract import DEFAULT_BLOCK
from . import driver, frontend

CUDA_DIR = Path(__file__).resolve().parent
SOURCE_OF = {"flash_fwd_scalar": "flash_fwd.cu", "flash_fwd_mma": "flash_fwd_mma.cu",
             "flash_fwd_wmma": "flash_fwd_wmma.cu",
             "flash_bwd_preprocess": "flash_bwd.cu", "flash_bwd_dkdv": "flash_bwd.cu"}
_KERNELS = {}
# kind ("mma" or "wmma") -> why it failed to compile in this process
FAILED_TENSOR_CORE_KERNELS = {}


def unavailable_reason():
    """None when CuPy and a CUDA GPU are usable; otherwise a sentence saying what is missing."""
    try:
        import cupy
    except ImportError:
        return ("the 'cupy' backend needs CuPy and an NVIDIA CUDA GPU: CuPy is not installed "
                "(pip install 'attention_scratch[gpu]', i.e. cupy-cuda12x)")
    except Exception as exc:  # a broken CUDA installation raises other errors at import
        return ("the 'cupy' backend needs CuPy and an NVIDIA CUDA GPU: "
                f"importing CuPy failed ({exc})")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return ("the 'cupy' backend needs CuPy and an NVIDIA CUDA GPU: "
                f"no usable CUDA device ({exc})")
    if count < 1:
        return "the 'cupy' backend needs CuPy and an NVIDIA CUDA GPU: CuPy sees no CUDA device"
    return None


def _require():
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    import cupy

    return cupy


def _include_dirs(cupy):
    """Where NVRTC finds our headers and cuda_fp16.h, cuda_bf16.h, mma.h: a CUDA toolkit
    (``CUDA_PATH``, CuPy's CUDA path, the toolkit of ``nvcc``) or, for pip-only installs,
    the header wheels (``nvidia-cuda-runtime`` and, for mma.h, ``nvidia-cuda-crt`` or
    ``nvidia-cuda-nvcc-cu12``)."""
    dirs = [CUDA_DIR]
    for root in (os.environ.get("CUDA_PATH"), cupy.cuda.get_cuda_path()):
        if root and (Path(root) / "include").is_dir():
            dirs.append(Path(root) / "include")
    for package in ("cuda_runtime", "cuda_nvcc"):  # cuda_fp16.h etc.; crt/mma.h
        try:
            module = __import__(f"nvidia.{package}", fromlist=["__path__"])
        except ImportError:
            continue
        dirs += [Path(p) / "include" for p in module.__path__ if (Path(p) / "include").is_dir()]
    # cupy-cuda13x's wheels put headers in nvidia/cu13/include (get_cuda_path() above) but its [ctk]
    # extra lacks nvidia-cuda-crt (crt/mma.h, for mma.h): last resort, the toolkit of nvcc on PATH.
    if not any((d / "crt" / "mma.h").is_file() for d in dirs):
        nvcc = shutil.which("nvcc")
        for root in ((Path(nvcc).resolve().parent.parent if nvcc else None),
                     Path("/usr/local/cuda")):
            if root and (root / "include" / "crt" / "mma.h").is_file():
                dirs.append(root / "include")
                break
    return dirs


class KernelCompileError(RuntimeError):
    """NVRTC could not compile a kernel (usually: CUDA headers not found)."""


def kernel(name, tag, D):
    """The compiled kernel ``name<ctype, D>`` (compiled by NVRTC on first use, then cached)."""
    cupy = _require()
    expr = f"{name}<{driver.CTYPES[tag]}>" if D is None else f"{name}<{driver.CTYPES[tag]}, {D}>"
    if expr not in _KERNELS:
        code = (CUDA_DIR / SOURCE_OF[name]).read_text()
        options = ("--std=c++17",) + tuple(f"-I{d}" for d in _include_dirs(cupy))
        try:
            module = cupy.RawModule(code=code, options=options, name_expressions=[expr],
                                    backend=os.environ.get("ATTENTION_SCRATCH_CUDA_COMPILER",
                                                           "nvrtc"))
            _KERNELS[expr] = module.get_function(expr)
        except Exception as exc:  # cupy.cuda.compiler.CompileException and friends
            raise KernelCompileError(f"compiling {expr} failed "
                                     "(set CUDA_PATH to a CUDA toolkit, or install the header "
                                     "wheels: nvidia-cuda-runtime and nvidia-cuda-crt "
                                     "for CUDA 13, nvidia-cuda-runtime-cu12 "
                                     f"and nvidia-cuda-nvcc-cu12 for CUDA 12): {exc}") from exc
    return _KERNELS[expr]


def _launch(name, tag, D, grid, threads, smem, args):
    """Launch one kernel on the current device (the ``launch`` of :mod:`.driver`)."""
    fn = kernel(name, tag, D)
    if smem > 48 * 1024 and fn.max_dynamic_shared_size_bytes < smem:
        fn.max_dynamic_shared_size_bytes = smem  # opt in to more than 48 KiB
    cast = {"ptr": lambda a: a, "i32": np.int32, "i64": np.int64, "f64": np.float64}
    fn(tuple(int(g) for g in grid), (int(threads),), tuple(cast[k](v) for k, v in args),
       shared_mem=int(smem))


_LIMITS = {}


def device_limits():
    """``(shared memory per block with opt-in, compute capability as an int like
    90)``, per device."""
    cupy = _require()
    dev = cupy.cuda.Device()
    key = (id(cupy), getattr(dev, "id", 0))
    if key not in _LIMITS:  # querying every attribute of a device is slow: once per device
        _LIMITS[key] = (int(dev.attributes["MaxSharedMemoryPerBlockOptin"]),
                        int(dev.compute_capability))
    return _LIMITS[key]


def _to_device(x):
    """``(cupy array, kind)``; bfloat16 becomes its uint16 bits; kind: numpy, cupy or torch."""
    import cupy

    module = type(x).__module__.split(".")[0]
    if module == "torch":
        import torch

        x = x.detach()
        if x.dtype == torch.bfloat16:  # no bfloat16 in CuPy: pass its bits; results stay on the GPU
            x = x if x.is_cuda else x.to("cuda")
            bits = cupy.from_dlpack(x.contiguous().view(torch.int16)).view(cupy.uint16)
            return bits, "torch-bf16"
        if not x.is_cuda:  # a CPU tensor: copied to the GPU, and the result copied back
            return cupy.asarray(x.numpy()), "torch-cpu"
        return cupy.from_dlpack(x), "torch"
    if module == "cupy":
        return x, "cupy"
    return cupy.asarray(np.asarray(x)), "numpy"


def _from_device(a, kind, tag):
    if kind == "numpy":
        return a.get() if tag != "bfloat16" else driver.from_storage(a, tag).get()
    if kind == "torch-cpu":
        import torch

        return torch.from_numpy(a.get())
    if kind.startswith("torch"):
        import torch

        if tag == "bfloat16":
            return torch.from_dlpack(a.view(np.int16)).view(torch.bfloat16)
        return torch.from_dlpack(a)
    return a


def _inputs(arrays):
    """Move the arrays to the GPU; returns ``(arrays in storage dtype, kind of query, tag)``.

    ``arrays`` ends with query, key, value (the backward pass puts grad_out, out first).
    """
    moved = [_to_device(a) for a in arrays]
    bf16 = {k == "torch-bf16" for _, k in moved}
    if len(bf16) > 1:
        raise TypeError("bfloat16 input cannot be mixed with other dtypes")
    if bf16 == {True}:
        return [a for a, _ in moved], "torch-bf16", "bfloat16"
    tag = frontend.storage_tag(*(a.dtype for a, _ in moved[-3:]))
    return [a.astype(tag, copy=False) for a, _ in moved], moved[-3][1], tag


def tensor_core_kernel(tag, cc, requested="auto"):
    """The tensor-core kernel for input ``tag`` on compute capability ``cc`` (e.g. 90): ``"mma"``
    (sm_80+), ``"wmma"`` (float16 on sm_70+) or ``False``. ``requested`` overrides "auto". A
    kernel that failed to compile in this process (``FAILED_TENSOR_CORE_KERNELS``) is never
    chosen again."""
    if tag not in ("float16", "bfloat16") or requested is False:
        return False
    if requested == "auto":
        for kind, ok in (("mma", cc >= 80), ("wmma", cc >= 70 and tag == "float16")):
            if ok and kind not in FAILED_TENSOR_CORE_KERNELS:
                return kind
        return False
    if requested not in driver.TENSOR_CORE_KERNELS:
        raise ValueError("tensor_cores must be 'auto', False or one of "
                         f"{driver.TENSOR_CORE_KERNELS}; got {requested!r}")
    return False if requested in FAILED_TENSOR_CORE_KERNELS else requested


def flash_attention(query, key, value, is_causal=False, scale=None, enable_gqa=False, *,
                    causal_align="top_left", window=None, block_q=DEFAULT_BLOCK,
                    block_k=DEFAULT_BLOCK, return_lse=False, tensor_cores="auto"):
    """:func:`attention_scratch.flash_attention` on the GPU (same arguments, no ``backend``).

    ``block_q`` and ``block_k`` are requests: float16 and bfloat16 inputs with the
    default 64x64 tiles and head dims up to 128 run on tensor cores with the kernel's own
    tiles: ``flash_fwd_mma`` (128-row query tiles) on sm_80 or newer, ``flash_fwd_wmma``
    for float16 on sm_70/75; ``tensor_cores`` ("mma", "wmma" or False) picks one by hand
    (the benchmark compares them). Every other case runs the scalar kernel with the
    requested tiles, reduced to what a thread block can hold. :func:`tile_plan` says
    which tiles run. Head dims above 256 raise ``ValueError``.
    """
    cupy = _require()
    (q, k, v), kind, tag = _inputs((query, key, value))
    smem, cc = device_limits()
    kw = dict(tag=tag, causal_align=causal_align, window=window, block_q=block_q, block_k=block_k,
              smem_limit=smem)
    chosen = tensor_core_kernel(tag, cc, tensor_cores)
    try:
        out, lse = frontend.forward(_launch, cupy, q, k, v, is_causal, scale, enable_gqa,
                                         tensor_cores=chosen, **kw)
    except KernelCompileError as exc:
        if not chosen or f"flash_fwd_{chosen}" not in str(exc):
            raise
        FAILED_TENSOR_CORE_KERNELS[chosen] = str(exc)
        warnings.warn("the tensor-core kernel could not be compiled, "
                      f"using the scalar kernel: {exc}", stacklevel=2)
        out, lse = frontend.forward(_launch, cupy, q, k, v, is_causal, scale, enable_gqa,
                                         tensor_cores=False, **kw)
    out = _from_device(out, kind, tag)
    return (out, _from_device(lse, kind.replace("-bf16", ""), "float32")) if return_lse else out


def tile_plan(query, key, value, is_causal=False, scale=None, enable_gqa=False, *,
              causal_align="top_left", window=None, block_q=DEFAULT_BLOCK, block_k=DEFAULT_BLOCK,
              backward=False, tensor_cores="auto"):
    """The :class:`~attention_scratch.contract.TilePlan` :func:`flash_attention` (or, with
    ``backward=True``, :func:`flash_attention_backward`) runs for these arguments on this GPU.

    Only the shapes and dtypes of the inputs are read; nothing is copied to the device.
    """
    _require()
    tag = _tag_of(query, key, value)
    smem, cc = device_limits()
    chosen = False if backward else tensor_core_kernel(tag, cc, tensor_cores)
    return frontend.tile_plan(query, key, value, is_causal, scale, enable_gqa, tag=tag,
                                   causal_align=causal_align, window=window, block_q=block_q,
                                   block_k=block_k, backward=backward, tensor_cores=chosen,
                                   smem_limit=smem)


def _tag_of(*arrays):
    """The storage tag of the inputs without moving them (``torch.bfloat16`` is "bfloat16")."""
    if any(str(getattr(a, "dtype", "")) == "torch.bfloat16" for a in arrays):
        return "bfloat16"
    dtypes = [np.dtype(str(a.dtype).removeprefix("torch.")) if hasattr(a, "dtype")
              else np.asarray(a).dtype for a in arrays]
    return frontend.storage_tag(*dtypes)


def flash_attention_backward(grad_out, query, key, value, out, lse, is_causal=False, scale=None,
                             enable_gqa=False, *, causal_align="top_left", window=None,
                             block_q=DEFAULT_BLOCK, block_k=DEFAULT_BLOCK):
    """:func:`attention_scratch.flash_attention_backward` on the GPU; returns ``(dq, dk, dv)``."""
    cupy = _require()
    (g, o, q, k, v), kind, tag = _inputs((grad_out, out, query, key, value))
    g, o = (a.astype(q.dtype, copy=False) for a in (g, o))
    lse_dev, _ = _to_device(lse)
    smem, _ = device_limits()
    grads = frontend.backward(_launch, cupy, g, q, k, v, o, lse_dev, is_causal, scale, enable_gqa,
                              tag=tag, causal_align=causal_align, window=window, block_q=block_q,
                              block_k=block_k, smem_limit=smem)
    return tuple(_from_device(a, kind, tag) for a in grads)
