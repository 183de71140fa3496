"""Compile every CUDA source of the package with ``nvcc``, so a syntax error cannot land unnoticed.

``python -m attention_scratch.backends.cuda.compile_check`` compiles each ``backends/cuda/*.cu``
for every architecture in ``--arch`` (default ``sm_80 sm_90``) with
``-DFLASH_COMPILE_CHECK``, which instantiates every kernel template the driver can
launch. It needs ``nvcc`` but no GPU. ``--ptxas-info`` prints the registers,
spills and shared memory ptxas reports per kernel. ``--nvrtc`` also compiles every
kernel the way the CuPy backend does (NVRTC through CuPy, with the same name
expressions and include paths) for ``compute_80``, without touching a GPU.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CUDA_DIR = Path(__file__).resolve().parent
ARCHS = ("sm_80", "sm_90")


def sources():
    """The kernel sources, ``backends/cuda/*.cu``."""
    return sorted(CUDA_DIR.glob("*.cu"))


def nvcc_path():
    return shutil.which(os.environ.get("NVCC", "nvcc"))


def compile_one(source, arch, outdir, ptxas_info=False):
    """Compile ``source`` for ``arch`` to a cubin; returns ``(ok, seconds, compiler output)``."""
    out = Path(outdir) / f"{source.stem}.{arch}.cubin"
    cmd = [nvcc_path(), f"-arch={arch}", "-std=c++17", "-DFLASH_COMPILE_CHECK", "--cubin",
           f"-I{CUDA_DIR}", "-o", str(out), str(source)]
    if ptxas_info:
        cmd.insert(1, "-Xptxas=-v")
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    return result.returncode == 0, time.perf_counter() - start, " ".join(cmd) + "\n" + result.stderr


def ptxas_report(source, arch):
    """Per kernel of ``source`` compiled for ``arch``: ``(mangled name, registers, spill
    store bytes, spill load bytes)``, parsed from ``nvcc -Xptxas=-v``. Raises
    ``RuntimeError`` if nvcc fails."""
    with tempfile.TemporaryDirectory() as tmp:
        ok, _, log = compile_one(Path(source), arch, tmp, ptxas_info=True)
    if not ok:
        raise RuntimeError(log)
    report, name = [], None
    for line in log.splitlines():
        if "Compiling entry function" in line:
            name = line.split("'")[1]
        elif "spill stores" in line and name:
            stores, loads = (int(line.split(" bytes spill " + w)[0].split()[-1])
                             for w in ("stores", "loads"))
            report.append([name, None, stores, loads])
        elif "Used" in line and "registers" in line and report and report[-1][1] is None:
            report[-1][1] = int(line.split("Used ")[1].split()[0])
    return [tuple(r) for r in report]


def check_all(archs=ARCHS, ptxas_info=False, jobs=None, out=sys.stdout):
    """Compile every source for every arch in parallel; returns the list of failures."""
    if nvcc_path() is None:
        raise RuntimeError("nvcc is not on PATH (set NVCC to its location)")
    jobs = jobs or os.cpu_count() or 1
    tasks = [(src, arch) for src in sources() for arch in archs]
    failures = []
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(jobs) as pool:
        results = pool.map(lambda t: (t, compile_one(t[0], t[1], tmp, ptxas_info)), tasks)
        for (src, arch), (ok, seconds, log) in results:
            print(f"{'ok  ' if ok else 'FAIL'} {src.name:22s} {arch}  {seconds:5.1f} s", file=out)
            if not ok or ptxas_info:
                print(log, file=out)
            if not ok:
                failures.append((src.name, arch, log))
    return failures


def nvrtc_expressions():
    """Every kernel instantiation the CuPy backend can ask NVRTC for, per source file."""
    from .driver import CTYPES, HEAD_DIMS

    types = list(CTYPES.values())
    return {
        "flash_fwd.cu": [f"flash_fwd_scalar<{t}, {D}>" for t in types for D in HEAD_DIMS],
        "flash_bwd.cu": [f"flash_bwd_dkdv<{t}, {D}>" for t in types for D in HEAD_DIMS]
        + [f"flash_bwd_preprocess<{t}>" for t in types],
        **{f"flash_fwd_{kind}.cu": [f"flash_fwd_{kind}<{t}, {D}>"
                                    for t in ("__half", "__nv_bfloat16") for D in (32, 64, 128)]
           for kind in ("mma", "wmma")},
    }


def check_nvrtc(arch="compute_80", out=sys.stdout):
    """Compile every kernel with CuPy's NVRTC wrapper, as ``gpu.kernel`` would; no GPU needed.

    Raises ``ImportError`` without CuPy and ``RuntimeError`` when NVRTC cannot be loaded.
    Returns the list of ``(source, error)`` failures.
    """
    import cupy
    from cupy.cuda import compiler

    from .gpu import _include_dirs

    # CuPy asks the current device for its architecture; there may be none, so say it.
    original = compiler._get_arch_for_options_for_nvrtc
    compiler._get_arch_for_options_for_nvrtc = lambda *a: (f"-arch={arch}", "ptx")
    options = ("--std=c++17",) + tuple(f"-I{d}" for d in _include_dirs(cupy))
    failures = []
    try:
        for name, exprs in nvrtc_expressions().items():
            start = time.perf_counter()
            try:
                compiler.compile_using_nvrtc((CUDA_DIR / name).read_text(), options=options,
                                             arch=arch, name_expressions=exprs)
                print(f"ok   {name:22s} NVRTC {arch}  {len(exprs)} kernels  "
                      f"{time.perf_counter() - start:5.1f} s", file=out)
            except compiler.CompileException as exc:
                print(f"FAIL {name:22s} NVRTC {arch}\n{exc}", file=out)
                failures.append((name, str(exc)))
    finally:
        compiler._get_arch_for_options_for_nvrtc = original
    return failures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=list(ARCHS),
                        help="GPU architectures (sm_80 sm_90)")
    parser.add_argument("--ptxas-info", action="store_true",
                        help="print registers/spills per kernel")
    parser.add_argument("--jobs", type=int, default=None, help="parallel nvcc processes")
    parser.add_argument("--nvrtc", action="store_true", help="also compile through CuPy's NVRTC")
    args = parser.parse_args(argv)
    try:
        failures = check_all(args.arch, args.ptxas_info, args.jobs)
        if args.nvrtc:
            failures += check_nvrtc()
    except (RuntimeError, ImportError) as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
