"""Benchmarks: naive NumPy, flash NumPy, flash Numba and PyTorch SDPA in one process (chapter 12).

Run ``python -m attention_scratch.bench`` (``make bench``). For each sequence
length ``N`` (``L = S = N``), with and without a causal mask, forward and
backward, every method is first checked against a float64 reference, then
timed; the methods take turns in each repetition, so a burst of load from
elsewhere on the machine hits all of them alike. The table gives the best and
the median time, GFLOP/s by DESIGN.md §8 (forward ``4·B·H·L·S·E``, halved when
causal; backward 2.5× the forward), the fraction of this machine's measured
sgemm throughput, and the ratio to PyTorch (above 1: faster than PyTorch) three
ways: best against best, median against median, and the median of the ratios
within each repetition (the two runs back to back, so the steadiest under load).

The quick check of the chapter's claim::

    python -m attention_scratch.bench --sizes 2048 --repeats 9

``--gpu`` runs the GPU benchmarks of :mod:`attention_scratch.bench_gpu` instead.
"""
import argparse
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .flash import flash_attention, flash_attention_backward
from .testing import attention_oracle, attention_oracle_backward, reference_mask

METHODS = ("naive numpy", "flash numpy", "flash numba", "torch sdpa")
DEFAULT_SIZES = (512, 1024, 2048, 4096, 8192)
NAIVE_MEMORY_LIMIT = 3 * 2**30  # bytes of (B, H, N, N) float32 temporaries the dense baseline may hold


def attention_flops(B, H, L, S, E, causal=False, backward=False):
    """FLOPs of one attention call by DESIGN.md §8: ``4·B·H·L·S·E``, halved if causal, ×2.5 for backward."""
    flops = 4.0 * B * H * L * S * E * (0.5 if causal else 1.0)
    return flops * (2.5 if backward else 1.0)


def measure_sgemm(n=2048, repeats=7):
    """The best float32 ``n×n @ n×n`` throughput of NumPy's BLAS here, in GFLOP/s (all cores)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.dot(a, b, out=out)
    best = min(_timed(lambda: np.dot(a, b, out=out)) for _ in range(repeats))
    return 2.0 * n ** 3 / best / 1e9


def blas_description():
    """Which BLAS libraries are loaded, with their kernel ("architecture") and thread count."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{key: info.get(key) for key in ("internal_api", "version", "architecture", "num_threads",
                                             "filepath")} for info in threadpool_info()]


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# The dense baseline: the whole (N, N) score matrix in float32, as a first NumPy program would do it.

def naive_forward(q, k, v, causal):
    """Dense attention in the input dtype. Shapes: (B, H, L, E), (B, H, S, E), (B, H, S, Ev) -> (B, H, L, Ev)."""
    scale = q.dtype.type(1.0 / np.sqrt(q.shape[-1]))
    scores = (q @ np.swapaxes(k, -1, -2)) * scale  # (B, H, L, S)
    if causal:
        scores = np.where(reference_mask(q.shape[-2], k.shape[-2], is_causal=True), scores, -np.inf)
    scores -= scores.max(axis=-1, keepdims=True)
    p = np.exp(scores, out=scores)  # (B, H, L, S)
    p /= p.sum(axis=-1, keepdims=True)
    return p @ v, p  # (B, H, L, Ev), (B, H, L, S)


def naive_backward(g, q, k, v, p):
    """Dense gradients from the stored weights ``p`` (B, H, L, S); returns dQ, dK, dV."""
    scale = q.dtype.type(1.0 / np.sqrt(q.shape[-1]))
    dv = np.swapaxes(p, -1, -2) @ g  # (B, H, S, Ev)
    dp = g @ np.swapaxes(v, -1, -2)  # (B, H, L, S)
    dp -= (dp * p).sum(axis=-1, keepdims=True)
    ds = np.multiply(p, dp, out=dp)  # (B, H, L, S)
    return (ds @ k) * scale, (np.swapaxes(ds, -1, -2) @ q) * scale, dv


class Method:
    """One contender: ``forward(causal)`` returns the output; ``backward(causal)`` the three gradients.

    ``prepare_backward(causal)`` runs the forward pass whose results the backward
    pass needs (not timed).
    """

    def __init__(self, name, inputs, blocks):
        self.name, self.blocks = name, blocks
        self.q, self.k, self.v, self.g = inputs
        self.state = None
        if name == "torch sdpa":
            import torch

            self.torch = torch
            self.tq, self.tk, self.tv, self.tg = (torch.from_numpy(a) for a in inputs)

    def forward(self, causal):
        if self.name == "naive numpy":
            return naive_forward(self.q, self.k, self.v, causal)[0]
        if self.name == "torch sdpa":
            with self.torch.no_grad():
                return self.torch.nn.functional.scaled_dot_product_attention(
                    self.tq, self.tk, self.tv, is_causal=causal).numpy()
        backend, (bq, bk) = self.name.split()[1], self.blocks[self.name]
        return flash_attention(self.q, self.k, self.v, causal, block_q=bq, block_k=bk, backend=backend)

    def prepare_backward(self, causal):
        self.state = None
        if self.name == "naive numpy":
            self.state = naive_forward(self.q, self.k, self.v, causal)[1]
        elif self.name == "torch sdpa":
            xs = [t.clone().requires_grad_() for t in (self.tq, self.tk, self.tv)]
            out = self.torch.nn.functional.scaled_dot_product_attention(*xs, is_causal=causal)
            self.state = (xs, out)
        else:
            backend, (bq, bk) = self.name.split()[1], self.blocks[self.name]
            self.state = flash_attention(self.q, self.k, self.v, causal, block_q=bq, block_k=bk,
                                         backend=backend, return_lse=True)

    def backward(self, causal):
        if self.name == "naive numpy":
            return naive_backward(self.g, self.q, self.k, self.v, self.state)
        if self.name == "torch sdpa":
            xs, out = self.state
            grads = self.torch.autograd.grad(out, xs, self.tg, retain_graph=True)
            return tuple(t.numpy() for t in grads)
        backend, (bq, bk) = self.name.split()[1], self.blocks[self.name]
        out, lse = self.state
        return flash_attention_backward(self.g, self.q, self.k, self.v, out, lse, causal,
                                        block_q=bq, block_k=bk, backend=backend)


def reference(inputs, causal, backward):
    """float64 results for batch 0, head 0: the oracle up to N = 4096, the NumPy flash reference above."""
    q, k, v, g = (a[:1, :1].astype(np.float64) for a in inputs)  # (1, 1, N, ·)
    if q.shape[-2] <= 4096:
        if backward:
            return attention_oracle_backward(g, q, k, v, is_causal=causal)
        return attention_oracle(q, k, v, is_causal=causal)[0]
    if backward:
        out, lse = flash_attention(q, k, v, causal, block_q=512, block_k=512, return_lse=True)
        return flash_attention_backward(g, q, k, v, out, lse, causal, block_q=512, block_k=512)
    return flash_attention(q, k, v, causal, block_q=512, block_k=512)


def relative_error(got, ref):
    """``max |got - ref| / max |ref|`` over batch 0, head 0 (several arrays: the worst)."""
    if isinstance(ref, tuple):
        return max(relative_error(a, b) for a, b in zip(got, ref))
    got = np.asarray(got)[:1, :1].astype(np.float64)
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


def available_methods(wanted):
    """The requested methods that can run here, and a reason for each that cannot."""
    from .backends import unavailable_reason

    methods, skipped = [], {}
    for name in wanted:
        if name == "flash numba" and unavailable_reason("numba"):
            skipped[name] = unavailable_reason("numba")
        elif name == "torch sdpa":
            try:
                import torch  # noqa: F401
                methods.append(name)
            except ImportError:
                skipped[name] = "PyTorch is not installed"
        else:
            methods.append(name)
    return methods, skipped


def run_case(methods, inputs, causal, backward, repeats, budget_s, tolerance, flash_numpy_max=4096,
             log=print):
    """Check then time each method on one (N, causal, pass); returns {method: record}."""
    B, H, N, E = inputs[0].shape
    flops = attention_flops(B, H, N, N, E, causal, backward)
    ref = reference(inputs, causal, backward)
    records, runs = {}, {}
    for m in methods:
        if m.name == "naive numpy" and 4 * B * H * N * N * (3 if backward else 2) > NAIVE_MEMORY_LIMIT:
            records[m.name] = {"skipped": f"needs more than {NAIVE_MEMORY_LIMIT / 2**30:.0f} GiB"}
            continue
        if m.name == "flash numpy" and N > flash_numpy_max:
            records[m.name] = {"skipped": f"N > {flash_numpy_max}: minutes per call (--flash-numpy-max)"}
            continue
        if backward:
            m.prepare_backward(causal)
        call = (lambda m=m: m.backward(causal)) if backward else (lambda m=m: m.forward(causal))
        start = time.perf_counter()
        result = call()  # the first call also compiles (Numba) and warms the caches
        first = time.perf_counter() - start
        err = relative_error(result, ref)
        if not err <= tolerance:
            raise AssertionError(f"{m.name} ({'backward' if backward else 'forward'}, N={N}, "
                                 f"causal={causal}) is wrong: relative error {err:.2e} > {tolerance:g}")
        records[m.name] = {"error": err, "times": []}
        runs[m.name] = (call, max(1, min(repeats, int(budget_s / max(first, 1e-9)))))
    for rep in range(repeats):  # interleaved: each repetition runs every method once
        for name, (call, n) in runs.items():
            if rep < n:
                gc.collect()
                records[name]["times"].append(_timed(call))
    for name, rec in records.items():
        if "times" in rec:
            rec["best_ms"] = 1e3 * min(rec["times"])
            rec["median_ms"] = 1e3 * float(np.median(rec["times"]))
            rec["gflops"] = flops / (rec["best_ms"] / 1e3) / 1e9
            rec["gflops_median"] = flops / (rec["median_ms"] / 1e3) / 1e9
    return records


def machine_description():
    """CPU, cores, library versions, BLAS kernels, load and the OpenBLAS environment variables."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("numba", "scipy", "torch"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "versions": versions,
            "blas": blas_description(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "env": {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP", "NUMBA", "MKL"))}}


def git_commit():
    """The commit of this checkout, with ``+dirty`` when tracked files have uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=here, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=here, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) or None


def run(sizes=DEFAULT_SIZES, repeats=5, batch=1, heads=8, dim=64, methods=METHODS, blocks=None,
        budget_s=20.0, tolerance=1e-3, passes=("forward", "backward"), causal=(False, True),
        flash_numpy_max=4096, log=print):
    """Run the benchmark and return the results as a dict (what ``--out`` stores)."""
    blocks = {"flash numpy": (256, 256), "flash numba": (64, 64), **(blocks or {})}
    names, skipped = available_methods(methods)
    for name, why in skipped.items():
        log(f"skipping {name}: {why}")
    sgemm = measure_sgemm()
    log(f"sgemm (float32 2048x2048, NumPy's BLAS, all cores): {sgemm:.0f} GFLOP/s")
    results = []
    rng = np.random.default_rng(0)
    for n in sizes:
        inputs = tuple(rng.standard_normal((batch, heads, n, dim), dtype=np.float32) for _ in range(4))
        contenders = [Method(name, inputs, blocks) for name in names]
        for is_causal in causal:
            for which in passes:
                records = run_case(contenders, inputs, is_causal, which == "backward", repeats, budget_s,
                                   tolerance, flash_numpy_max, log)
                torch_rec = records.get("torch sdpa", {})
                for name, rec in records.items():
                    row = {"N": n, "causal": is_causal, "pass": which, "method": name, **rec}
                    if "best_ms" in rec:
                        row["sgemm_fraction"] = rec["gflops"] / sgemm
                        if "best_ms" in torch_rec:
                            row["vs_torch"] = torch_rec["best_ms"] / rec["best_ms"]
                            row["vs_torch_median"] = torch_rec["median_ms"] / rec["median_ms"]
                            n_pairs = min(len(rec["times"]), len(torch_rec["times"]))
                            row["vs_torch_paired"] = float(np.median(  # same repetition, run back to back
                                np.divide(torch_rec["times"][:n_pairs], rec["times"][:n_pairs])))
                    results.append(row)
                    log(format_row(row))
    sgemm_end = measure_sgemm()
    log(f"sgemm again at the end: {sgemm_end:.0f} GFLOP/s (the fractions use the larger of the two)")
    if sgemm_end > sgemm:
        for row in results:
            if "gflops" in row:
                row["sgemm_fraction"] = row["gflops"] / sgemm_end
    return {"command": " ".join([Path(sys.executable).name, "-m", "attention_scratch.bench"] + sys.argv[1:]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": git_commit(), "machine": machine_description(), "sgemm_gflops": max(sgemm, sgemm_end),
            "sgemm_gflops_start_end": [sgemm, sgemm_end],
            "shape": {"B": batch, "H": heads, "E": dim, "dtype": "float32"}, "repeats": repeats,
            "blocks": {k: list(v) for k, v in blocks.items()}, "skipped": skipped, "results": results}


HEADER = (f"{'N':>5} {'mask':>6} {'pass':>8} {'method':<12} {'best ms':>9} {'median':>9} "
          f"{'GFLOP/s':>8} {'sgemm':>6} {'x torch':>8} {'(median)':>8} {'(paired)':>8}  error")


def format_row(row):
    """One line of the results table."""
    head = f"{row['N']:>5} {'causal' if row['causal'] else 'none':>6} {row['pass']:>8} {row['method']:<12}"
    if "best_ms" not in row:
        return f"{head} skipped: {row.get('skipped')}"
    ratio = (f"{row['vs_torch']:8.2f} {row['vs_torch_median']:8.2f} {row.get('vs_torch_paired', np.nan):8.2f}"
             if "vs_torch" in row else f"{'':>8} {'':>8} {'':>8}")
    return (f"{head} {row['best_ms']:9.1f} {row['median_ms']:9.1f} {row['gflops']:8.1f} "
            f"{row['sgemm_fraction']:6.0%} {ratio}  {row['error']:.1e}")


def plot(data, path=None):
    """GFLOP/s against N, one panel per (pass, mask), with the sgemm ceiling; saved to ``path`` if given.

    Returns the matplotlib ``Figure`` (built without pyplot, so it works in scripts and notebooks).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 7.5))
    axes = fig.subplots(2, 2, sharex=True, sharey=True)
    for ax, (which, causal) in zip(axes.flat, [(p, c) for p in ("forward", "backward") for c in (False, True)]):
        for name in METHODS:
            rows = [r for r in data["results"] if r["method"] == name and r["pass"] == which
                    and r["causal"] == causal and "gflops" in r]
            if rows:
                ax.plot([r["N"] for r in rows], [r["gflops"] for r in rows], marker="o", label=name)
        ax.axhline(data["sgemm_gflops"], color="k", linestyle="--", linewidth=1, label="sgemm")
        ax.set_xscale("log", base=2)
        ax.set_title(f"{which}, {'causal' if causal else 'no mask'}")
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("sequence length N")
    for ax in axes[:, 0]:
        ax.set_ylabel("GFLOP/s (best)")
    axes[0, 0].legend(fontsize=8)
    shape = data["shape"]
    fig.suptitle(f"B={shape['B']}, H={shape['H']}, E={shape['E']}, float32 — {data['machine']['cpu']}, "
                 f"{data['machine']['cores']} cores", fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--gpu" in argv:
        argv.remove("--gpu")
        try:
            from . import bench_gpu
        except ImportError as err:
            print(f"the GPU benchmarks need CuPy and a CUDA GPU (attention_scratch.bench_gpu: {err})")
            return 0
        return bench_gpu.main(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="sequence lengths N")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per method (median and best)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64, help="head dim E")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--block-q", type=int, default=64, help="Numba kernel query block")
    parser.add_argument("--block-k", type=int, default=64, help="Numba kernel key block")
    parser.add_argument("--budget", type=float, default=20.0,
                        help="seconds per method and case: slow methods are timed fewer times")
    parser.add_argument("--flash-numpy-max", type=int, default=4096,
                        help="largest N for the NumPy flash reference (slow: a Python loop over tiles)")
    parser.add_argument("--out", default="bench_results/bench.json", help="where to save the results (JSON)")
    parser.add_argument("--plot", default=None, help="figure path (default: next to --out, .png)")
    parser.add_argument("--gpu", action="store_true", help="run attention_scratch.bench_gpu instead")
    args = parser.parse_args(argv)
    machine = machine_description()
    print(f"{machine['cpu']}, {machine['cores']} cores; " +
          "; ".join(f"{b['internal_api']} {b['version']} kernel={b['architecture']} threads={b['num_threads']}"
                    for b in machine["blas"]))
    print(HEADER)
    data = run(args.sizes, args.repeats, args.batch, args.heads, args.dim, args.methods,
               {"flash numba": (args.block_q, args.block_k)}, args.budget,
               flash_numpy_max=args.flash_numpy_max)
    data["machine"]["blas_after"] = blas_description()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    figure = Path(args.plot) if args.plot else out.with_suffix(".png")
    plot(data, figure)
    print(f"results: {out}; figure: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
