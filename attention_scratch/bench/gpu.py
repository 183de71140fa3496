"""GPU benchmark: the CuPy flash kernels against PyTorch SDPA (flash and math backends), chapter 13.

``python -m attention_scratch.bench --gpu`` times forward and backward passes for
N = 1024 … 16384, E = 64 and 128, B·H = 32, float16 and float32, on one GPU. Every
configuration is first checked against the float64 oracle on slices the host can afford
(output and dQ of the first 128 query rows of the first head; for causal masks also dK
and dV of its last 128 keys); a failed check is recorded and not timed. The results file
names the device, the commit, the command and the numbers. FLOPs, timer and relative
error are those of :mod:`attention_scratch.bench.common`.

Without CuPy, PyTorch with CUDA, or a GPU it prints why and exits with status 2.
"""
import argparse
import datetime
import platform
import sys
from pathlib import Path

import numpy as np

from ..testing import attention_oracle, attention_oracle_backward
from .common import attention_flops, git_commit, relative_error, seconds

CHECK_ROWS = 128
# max |error| / max |reference| on the checked rows
TOL = {"float16": 2e-2, "bfloat16": 5e-2, "float32": 2e-4}


def unavailable_reason():
    from ..backends.cuda import gpu

    reason = gpu.unavailable_reason()
    if reason:
        return reason
    try:
        import torch
    except ImportError:
        return "the GPU benchmark compares with PyTorch SDPA: PyTorch is not installed"
    if not torch.cuda.is_available():
        return ("the GPU benchmark compares with PyTorch SDPA on the same GPU: torch.cuda is not "
                "available")
    return None


def median_ms(fn, sync, repeats, warmup=2, batch_seconds=0.02):
    """Median time of one ``fn()`` in milliseconds, over ``repeats`` batches.

    Each batch launches calls back to back with one synchronisation at the end
    (:func:`~attention_scratch.bench.common.seconds`), so the host's Python work overlaps the
    device's and only the slower of the two is measured; ``batch_seconds`` sets the length
    of a batch (at most 50 calls).
    """
    for _ in range(warmup):
        fn()
    one = seconds(fn, sync)
    calls = int(min(50, max(1, batch_seconds / max(one, 1e-6))))
    return float(np.median([seconds(fn, sync, calls) for _ in range(repeats)])) * 1e3


def _oracle_errors(tq, tk, tv, tg, out, dq, dk, dv, causal):
    """Relative errors of out, dQ (first rows) and, when causal, dK, dV (last keys) of head 0.

    The float64 oracle runs on the host, on slices it can afford at N = 16384: each of the
    first rows sees all its keys, and under a causal mask only the last rows reach the last keys.
    """
    r = min(CHECK_ROWS, tq.shape[-2])
    as64 = lambda t: t[0, :1].double().cpu().numpy()  # noqa: E731  (1, N, E)
    qh, kh, vh, gh = (as64(t) for t in (tq, tk, tv, tg))
    ref_out, _, _ = attention_oracle(qh[:, :r], kh, vh, is_causal=causal)
    ref_dq, _, _ = attention_oracle_backward(gh[:, :r], qh[:, :r], kh, vh, is_causal=causal)
    errors = {"out": relative_error(as64(out)[:, :r], ref_out),
              "dQ": relative_error(as64(dq)[:, :r], ref_dq)}
    if causal:
        _, ref_dk, ref_dv = attention_oracle_backward(gh[:, -r:], qh[:, -r:], kh, vh,
                                                      is_causal=True, causal_align="bottom_right")
        errors["dK"] = relative_error(as64(dk)[:, -r:], ref_dk[:, -r:])
        errors["dV"] = relative_error(as64(dv)[:, -r:], ref_dv[:, -r:])
    return errors, ref_out, as64


def _time_kernels(gpu, tq, tk, tv, causal, dtype, ref_out, as64, sync, repeats):
    """Every forward kernel for 16-bit input, each checked against the oracle before it is timed."""
    r = ref_out.shape[-2]
    kernels = {}
    for kernel in ("mma", "wmma", False):
        fwd = lambda kernel=kernel: gpu.flash_attention(tq, tk, tv, causal,  # noqa: E731
                                                        tensor_cores=kernel)
        err = relative_error(as64(fwd())[:, :r], ref_out)
        name = kernel or "scalar"
        if kernel in gpu.FAILED_TENSOR_CORE_KERNELS:  # it fell back to the scalar kernel
            kernels[name] = "not compiled"
        else:
            kernels[name] = (median_ms(fwd, sync, repeats) if err <= TOL[dtype]
                             else f"FAILED ({err:.2g})")
    return kernels


def _time_torch(torch, row, tq, tk, tv, tg, causal, sync, repeats):
    """PyTorch SDPA's flash and math backends, forward and backward, into ``row`` (None:
    unsupported)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    sdpa = torch.nn.functional.scaled_dot_product_attention
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("math", SDPBackend.MATH)):
        for part in ("fwd", "bwd"):
            graph = None
            try:
                with sdpa_kernel(backend):
                    if part == "fwd":
                        row[f"{name}_fwd"] = median_ms(lambda: sdpa(tq, tk, tv, is_causal=causal),
                                                       sync, repeats)
                    else:
                        xq, xk, xv = (t.detach().requires_grad_() for t in (tq, tk, tv))
                        graph = sdpa(xq, xk, xv, is_causal=causal)
                        row[f"{name}_bwd"] = median_ms(
                            lambda graph=graph: graph.backward(tg, retain_graph=True), sync,
                            repeats)
            except RuntimeError as exc:  # a dtype the backend does not support, or out of memory
                row[f"{name}_{part}"] = None
                first_line = str(exc).splitlines()[0][:60]
                row["note"] = row.get("note", "") + f"torch {name} {part}: {first_line}; "
            graph = None  # free the retained graph before the next measurement
            torch.cuda.empty_cache()


def run_config(torch, cupy, dtype, E, N, bh, causal, repeats, rng, device="cuda"):
    """One configuration: check, then time ours / torch flash / torch math, forward and backward."""
    from ..backends.cuda import gpu

    host = [rng.standard_normal((1, bh, N, E)).astype(np.float32) for _ in range(4)]  # q, k, v, dO
    tq, tk, tv, tg = (torch.from_numpy(a).to(device, getattr(torch, dtype)) for a in host)
    row = {"dtype": dtype, "E": E, "N": N, "causal": causal}
    out, lse = gpu.flash_attention(tq, tk, tv, causal, return_lse=True)  # torch in, torch out
    grads = gpu.flash_attention_backward(tg, tq, tk, tv, out, lse, causal)
    errors, ref_out, as64 = _oracle_errors(tq, tk, tv, tg, out, *grads, causal)
    row["max_rel_err"] = max(errors.values())
    row["checked"] = row["max_rel_err"] <= TOL[dtype]
    if not row["checked"]:
        row["note"] = "FAILED the oracle check, not timed: " + ", ".join(
            f"{k} {v:.2g}" for k, v in errors.items())
        return row
    sync = lambda: (cupy.cuda.Device().synchronize(), torch.cuda.synchronize())  # noqa: E731
    if dtype in ("float16", "bfloat16"):
        row["kernels"] = _time_kernels(gpu, tq, tk, tv, causal, dtype, ref_out, as64, sync, repeats)
    row["ours_fwd"] = median_ms(lambda: gpu.flash_attention(tq, tk, tv, causal, return_lse=True),
                                sync, repeats)
    row["ours_bwd"] = median_ms(
        lambda: gpu.flash_attention_backward(tg, tq, tk, tv, out, lse, causal), sync, repeats)
    _time_torch(torch, row, tq, tk, tv, tg, causal, sync, repeats)
    cupy.get_default_memory_pool().free_all_blocks()
    flops = attention_flops(1, bh, N, N, E, causal)
    row["tflops_fwd"] = flops / row["ours_fwd"] / 1e9
    flops_bwd = attention_flops(1, bh, N, N, E, causal, backward=True)
    row["tflops_bwd"] = flops_bwd / row["ours_bwd"] / 1e9
    return row


def _fmt(x, digits=2, suffix=""):
    return "n/a" if x is None else f"{x:.{digits}f}{suffix}"


def render(rows, header):
    lines = [header, "", "| dtype | E | N | causal | check (max rel err) | pass | ours ms | torch "
                         "flash ms | torch math ms "
             "| vs flash | vs math | ours TFLOP/s | note |", "|" + "---|" * 13]
    for r in rows:
        for p in ("fwd", "bwd"):
            ours, fl, ma = r.get(f"ours_{p}"), r.get(f"flash_{p}"), r.get(f"math_{p}")
            lines.append(
                f"| {r['dtype']} | {r['E']} | {r['N']} | {r['causal']} | {r['max_rel_err']:.2g} | "
                f"{p} "
                f"| {_fmt(ours)} | {_fmt(fl)} | {_fmt(ma)} "
                f"| {_fmt(fl / ours if fl and ours else None, suffix='x')} "
                f"| {_fmt(ma / ours if ma and ours else None, suffix='x')} "
                f"| {_fmt(r.get(f'tflops_{p}'), 1)} | {r.get('note', '')} |")
    return "\n".join(lines) + "\n"


def render_kernels(rows):
    """The forward kernels for 16-bit input side by side (ms; ratio to torch flash in brackets)."""
    lines = ["| dtype | E | N | causal | mma ms | wmma ms | scalar ms | torch flash ms "
             "|", "|" + "---|" * 8]
    for r in rows:
        if "kernels" not in r:
            continue
        cells = []
        for name in ("mma", "wmma", "scalar"):
            t = r["kernels"].get(name)
            fl = r.get("flash_fwd")
            cells.append(t if isinstance(t, str) else f"{t:.3f} "
                                                      f"({fl / t:.2f}x)" if fl else f"{t:.3f}")
        lines.append(f"| {r['dtype']} | {r['E']} | {r['N']} | {r['causal']} | " + " | ".join(cells)
                     + f" | {_fmt(r.get('flash_fwd'), 3)} |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else "- no 16-bit configuration measured\n"


def matmul_rate(torch, dtype, n=8192, repeats=10):
    """TFLOP/s of one n x n x n matrix product through PyTorch on random data: the device's
    ceiling."""
    tdtype = getattr(torch, dtype)
    a, b = (torch.randn(n, n, device="cuda").to(tdtype) for _ in range(2))
    ms = median_ms(lambda: a @ b, torch.cuda.synchronize, repeats)
    return 2 * n ** 3 / ms / 1e9


def targets(rows):
    """The issue's targets: fp16 fwd >= 0.5x torch flash at N=4096 (E 64, 128); fp32 >= 1.0x torch
    math."""
    out = []
    for r in rows:
        measured = r.get("flash_fwd") and r.get("ours_fwd")
        if r["dtype"] == "float16" and r["N"] == 4096 and r["E"] in (64, 128) and measured:
            ratio = r["flash_fwd"] / r["ours_fwd"]
            out.append(f"- float16 forward, N=4096, E={r['E']}, causal={r['causal']}: {ratio:.2f}x "
                       "torch flash "
                       f"({'meets' if ratio >= 0.5 else 'MISSES'} the 0.5x target)")
        if r["dtype"] == "float32" and r.get("math_fwd") and r.get("ours_fwd"):
            for p in ("fwd", "bwd"):
                ratio = r[f"math_{p}"] / r[f"ours_{p}"]
                out.append(f"- float32 {p}, N={r['N']}, E={r['E']}, causal={r['causal']}: "
                           f"{ratio:.2f}x torch math "
                           f"({'meets' if ratio >= 1.0 else 'MISSES'} the 1.0x target)")
    return "\n".join(out) if out else "- no configuration measured"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--e", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--dtypes", nargs="+", default=["float16", "float32"],
                        choices=["float16", "float32", "bfloat16"])
    parser.add_argument("--bh", type=int, default=32, help="batch x heads (default 32)")
    parser.add_argument("--causal", choices=["no", "yes", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=None, help="write the markdown results here")
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"GPU benchmark not run: {reason}", file=sys.stderr)
        return 2
    import cupy
    import torch

    rng = np.random.default_rng(0)
    causals = {"no": [False], "yes": [True], "both": [False, True]}[args.causal]
    rows = []
    for dtype in args.dtypes:
        for E in args.e:
            for N in args.n:
                for causal in causals:
                    row = run_config(torch, cupy, dtype, E, N, args.bh, causal, args.repeats, rng)
                    rows.append(row)
                    print(render([row], "").splitlines()[-1], flush=True)
    command = "python -m attention_scratch.bench --gpu " + " ".join(
        argv if argv is not None else sys.argv[1:])
    header = "\n".join([
        "# GPU results: CuPy flash attention kernels against PyTorch SDPA", "",
        f"- device: {torch.cuda.get_device_name()} (compute capability "
        f"{'.'.join(map(str, torch.cuda.get_device_capability()))})",
        f"- commit: {git_commit() or 'unknown (not a git checkout)'}",
        f"- command: `{command.strip()}`",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- software: CuPy {cupy.__version__}, PyTorch {torch.__version__} (CUDA "
        f"{torch.version.cuda}), "
        f"Python {platform.python_version()}",
        f"- shapes: B·H = {args.bh} heads, L = S = N, Ev = E; median of {args.repeats} batches "
        "after 2"
        " warm-ups, each batch back-to-back calls with one synchronisation (host work overlaps the "
        "GPU's)",
        "- matrix-product ceiling (PyTorch, 8192³, random data): "
        + ", ".join(f"{d} {matmul_rate(torch, d):.0f} TFLOP/s" for d in ("float16", "float32")),
        "- ratios are torch time / our time (above 1: ours is faster)", "",
        "## Targets of issue 7", "", targets(rows), "",
        "## Forward kernels for 16-bit input (ratio to torch flash in "
        "brackets)", "", render_kernels(rows),
        "## All measurements (ours = mma for 16-bit input)"])
    text = render(rows, header)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"wrote {args.output}")
    else:
        print(text)
    return 0
