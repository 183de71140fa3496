"""Benchmarks: naive NumPy, flash NumPy, flash Numba and PyTorch SDPA in one process (chapter 12).

Run ``python -m attention_scratch.bench`` (``make bench``). For each sequence
length ``N`` (``L = S = N``), with and without a causal mask, forward and
backward, every method is first checked against a float64 reference, then
timed; the methods take turns in each repetition, so a burst of load from
elsewhere on the machine hits all of them alike, and each repetition starts one method
later than the one before (:func:`turn_order`). The table gives the best and
the median time, GFLOP/s (:func:`attention_scratch.bench.common.attention_flops`:
forward ``4·B·H·L·S·E``, halved when causal; backward 2.5× the forward), the fraction of this
machine's measured
sgemm throughput, and the ratio to PyTorch (above 1: faster than PyTorch) three
ways: best against best, median against median, and the median of the ratios
within each repetition (the two runs close in time, so the steadiest under load).
The table goes to standard output as each case finishes; a progress bar on
standard error says which case and which method is running.

The quick check of the chapter's claim::

    python -m attention_scratch.bench --sizes 2048 --repeats 9

``--gpu`` runs the GPU benchmarks of :mod:`attention_scratch.bench.gpu` instead.
"""
import argparse
import datetime
import gc
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

from ..progress import printer_beside, progress_bar
from . import machine
from .common import attention_flops, git_commit, relative_error, seconds
from .methods import METHODS, Method, available_methods, first_head, reference

DEFAULT_SIZES = (512, 1024, 2048, 4096, 8192)
NUMPY_BLOCKS = (512, 512)  # the NumPy flash reference's tiles in the benchmark
# bytes of (B, H, N, N) float32 temporaries the dense baseline may hold
NAIVE_MEMORY_LIMIT = 3 * 2**30
REPEATS = 7  # timed runs per method and case (five left a best at the mercy of one busy second)


def measure_sgemm(n=2048, repeats=7):
    """The best float32 ``n×n @ n×n`` throughput of NumPy's BLAS here, in GFLOP/s (all cores)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.dot(a, b, out=out)
    best = min(seconds(lambda: np.dot(a, b, out=out)) for _ in range(repeats))
    return 2.0 * n ** 3 / best / 1e9


def run_case(methods, inputs, causal, backward, repeats, budget_s, tolerance, flash_numpy_max=4096,
             log=print, status=None):
    """Check then time each method on one (N, causal, pass); returns {method: record}.

    ``status(text)``, if given, is told what is running (the progress bar's postfix).
    """
    status = status or (lambda text: None)
    B, H, N, E = inputs[0].shape
    flops = attention_flops(B, H, N, N, E, causal, backward)
    ref = reference(inputs, causal, backward)
    records, runs = {}, {}
    for m in methods:
        naive_bytes = 4 * B * H * N * N * (3 if backward else 2)
        if m.name == "naive numpy" and naive_bytes > NAIVE_MEMORY_LIMIT:
            records[m.name] = {"skipped": f"needs more than {NAIVE_MEMORY_LIMIT / 2**30:.0f} GiB"}
            continue
        if m.name == "flash numpy" and flash_numpy_max < N:
            records[m.name] = {"skipped": f"N > {flash_numpy_max}: minutes per call "
                                          "(--flash-numpy-max)"}
            continue
        status(f"checking {m.name}")
        if backward:
            m.prepare_backward(causal)
        call = (lambda m=m: m.backward(causal)) if backward else (lambda m=m: m.forward(causal))
        results = []
        # the first call also compiles (Numba), tunes the tiles (once) and warms the caches
        first = seconds(lambda call=call, results=results: results.append(call()))
        result = results[0]
        err = relative_error(first_head(result), ref)
        if not err <= tolerance:
            raise AssertionError(f"{m.name} ({'backward' if backward else 'forward'}, N={N}, "
                                 f"causal={causal}) is wrong: relative error {err:.2e} > "
                                 f"{tolerance:g}")
        records[m.name] = {"error": err, "times": []}
        plan = m.tiles(causal, backward)
        if plan is not None:  # the tiles run, and where tuned ones came from (the cache file)
            records[m.name]["tiles"] = list(plan.used)
            records[m.name]["tiles_note"] = plan.note
        if first * repeats > budget_s:  # the first call may have compiled or tuned: time it again
            first = min(first, seconds(call))
        runs[m.name] = (call, max(1, min(repeats, int(budget_s / max(first, 1e-9)))))
    gc.collect()  # once per case (a full collection takes 0.1 s with PyTorch loaded)
    gc.disable()  # and none during the timed calls
    try:
        for rep in range(repeats):  # interleaved: each repetition runs every method once
            status(f"timing, repetition {rep + 1}/{repeats}")
            for name, (call, n) in turn_order(runs, rep):
                if rep < n:
                    records[name]["times"].append(seconds(call))
    finally:
        gc.enable()
    for rec in records.values():
        if "times" in rec:
            rec["best_ms"] = 1e3 * min(rec["times"])
            rec["median_ms"] = 1e3 * float(np.median(rec["times"]))
            rec["gflops"] = flops / (rec["best_ms"] / 1e3) / 1e9
            rec["gflops_median"] = flops / (rec["median_ms"] / 1e3) / 1e9
    return records


def turn_order(runs, rep):
    """The ``(name, run)`` pairs of ``runs`` in the order of repetition ``rep``: each repetition
    starts one method later, so that no method always runs right after the same other one (a
    method can leave the next one a cold cache, freed memory to fault in again, or a spinning
    thread)."""
    items = list(runs.items())
    start = rep % len(items) if items else 0
    return items[start:] + items[:start]


def ratios(reference, rec, prefix):
    """How many times faster ``rec`` ran than ``reference``: best against best, median against
    median, and the median of the ratios of the two runs made in one repetition."""
    n_pairs = min(len(rec["times"]), len(reference["times"]))
    paired = np.divide(reference["times"][:n_pairs], rec["times"][:n_pairs])
    return {prefix: reference["best_ms"] / rec["best_ms"],
            f"{prefix}_median": reference["median_ms"] / rec["median_ms"],
            f"{prefix}_paired": float(np.median(paired))}


def machine_description():
    """CPU model, vector ISA, cores, library versions, BLAS kernels, load, and the environment
    variables that change BLAS or Numba."""
    info = machine.describe()
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("numba", "scipy", "torch"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return {"cpu": info["cpu"], "isa": info["isa"], "fma": info["fma"], "cores": info["cores"],
            "platform": platform.platform(), "versions": versions, "blas": info["blas"],
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "env": {k: v for k, v in os.environ.items()
                    if k.startswith(("OPENBLAS", "OMP", "NUMBA", "MKL", "ATTENTION_SCRATCH"))}}


def run(sizes=DEFAULT_SIZES, repeats=REPEATS, batch=1, heads=8, dim=64, methods=METHODS,
        blocks=None, budget_s=20.0, tolerance=1e-3, passes=("forward", "backward"),
        causal=(False, True), flash_numpy_max=4096, log=print, progress=False):
    """Run the benchmark and return the results as a dict (what ``--out`` stores).

    ``progress=True`` shows a bar over the cases (size, mask, pass) on standard error.
    """
    blocks = {"flash numpy": NUMPY_BLOCKS, "flash numba": None, **(blocks or {})}  # None: tuned
    bar = progress_bar(len(sizes) * len(causal) * len(passes), unit="case", enabled=progress)
    say = printer_beside(bar, log)

    names, skipped = available_methods(methods)
    for name, why in skipped.items():
        say(f"skipping {name}: {why}")
    results = []
    rng = np.random.default_rng(0)
    with bar:
        bar.set_description_str("sgemm")
        sgemm = measure_sgemm()
        say(f"sgemm (float32 2048x2048, NumPy's BLAS, all cores): {sgemm:.0f} GFLOP/s")
        for n in sizes:
            inputs = tuple(rng.standard_normal((batch, heads, n, dim), dtype=np.float32)
                           for _ in range(4))  # q, k, v, grad_out: (B, H, N, E)
            contenders = [Method(name, inputs, blocks) for name in names]
            for is_causal in causal:
                for which in passes:
                    bar.set_description_str(f"N={n} {'causal' if is_causal else 'no mask'} {which}")
                    records = run_case(contenders, inputs, is_causal, which == "backward", repeats,
                                       budget_s, tolerance, flash_numpy_max, say,
                                       bar.set_postfix_str)
                    torch_rec = records.get("torch sdpa", {})
                    naive_rec = records.get("naive numpy", {})
                    for name, rec in records.items():
                        row = {"N": n, "causal": is_causal, "pass": which, "method": name, **rec}
                        if "best_ms" in rec:
                            row["sgemm_fraction"] = rec["gflops"] / sgemm
                            if "best_ms" in torch_rec:
                                row.update(ratios(torch_rec, rec, "vs_torch"))
                            if name == "flash numpy" and "best_ms" in naive_rec:
                                row.update(ratios(naive_rec, rec, "vs_naive"))
                        results.append(row)
                        say(format_row(row))
                    bar.update(1)
        bar.set_description_str("sgemm")
        bar.set_postfix_str("")
        sgemm_end = measure_sgemm()
    say(f"sgemm again at the end: {sgemm_end:.0f} GFLOP/s (the fractions use the larger of the "
        "two)")
    if sgemm_end > sgemm:
        for row in results:
            if "gflops" in row:
                row["sgemm_fraction"] = row["gflops"] / sgemm_end
    return {"command": " ".join([Path(sys.executable).name, "-m", __package__] + sys.argv[1:]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": git_commit(), "machine": machine_description(),
            "sgemm_gflops": max(sgemm, sgemm_end),
            "sgemm_gflops_start_end": [sgemm, sgemm_end],
            "shape": {"B": batch, "H": heads, "E": dim, "dtype": "float32"}, "repeats": repeats,
            "blocks": {k: None if v is None else list(v) for k, v in blocks.items()},
            "skipped": skipped, "results": results}


HEADER = (f"{'N':>5} {'mask':>6} {'pass':>8} {'method':<12} {'tiles':>7} {'best ms':>9} "
          f"{'median':>9} {'GFLOP/s':>8} {'sgemm':>6} {'x torch':>8} {'(median)':>8} "
          f"{'(paired)':>8}  error")


def format_row(row):
    """One line of the results table."""
    tiles = "x".join(map(str, row["tiles"])) if row.get("tiles") else ""
    head = (f"{row['N']:>5} {'causal' if row['causal'] else 'none':>6} {row['pass']:>8} "
            f"{row['method']:<12} {tiles:>7}")
    if "best_ms" not in row:
        return f"{head} skipped: {row.get('skipped')}"
    ratio = (f"{row['vs_torch']:8.2f} {row['vs_torch_median']:8.2f} "
             f"{row.get('vs_torch_paired', np.nan):8.2f}"
             if "vs_torch" in row else f"{'':>8} {'':>8} {'':>8}")
    naive = (f"  x naive {row['vs_naive']:.2f} (median {row['vs_naive_median']:.2f}, "
             f"paired {row['vs_naive_paired']:.2f})" if "vs_naive" in row else "")
    return (f"{head} {row['best_ms']:9.1f} {row['median_ms']:9.1f} {row['gflops']:8.1f} "
            f"{row['sgemm_fraction']:6.0%} {ratio}  {row['error']:.1e}{naive}")


def plot(data, path=None):
    """GFLOP/s against N, one panel per (pass, mask), with the sgemm ceiling; saved to ``path`` if
    given.

    Returns the matplotlib ``Figure`` (built without pyplot, so it works in scripts and notebooks).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 7.5))
    axes = fig.subplots(2, 2, sharex=True, sharey=True)
    panels = [(p, c) for p in ("forward", "backward") for c in (False, True)]
    for ax, (which, causal) in zip(axes.flat, panels, strict=True):
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
    isa = data["machine"].get("isa")
    fig.suptitle(f"B={shape['B']}, H={shape['H']}, E={shape['E']}, float32 — "
                 f"{data['machine']['cpu']}, {data['machine']['cores']} cores"
                 + (f", {isa}" if isa else ""), fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--gpu" in argv:
        argv.remove("--gpu")
        try:
            from . import gpu
        except ImportError as err:
            print("the GPU benchmarks need CuPy and a CUDA GPU (attention_scratch.bench.gpu: "
                  f"{err})")
            return 0
        return gpu.main(argv)
    parser = argparse.ArgumentParser(prog="python -m attention_scratch.bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                        help="sequence lengths N")
    parser.add_argument("--repeats", type=int, default=REPEATS,
                        help="timed runs per method (median and best)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64, help="head dim E")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--block-q", type=int, default=None,
                        help="Numba kernel query block (default: tuned for this machine)")
    parser.add_argument("--block-k", type=int, default=None,
                        help="Numba kernel key block (default: tuned for this machine)")
    parser.add_argument("--numpy-blocks", type=int, nargs=2, default=list(NUMPY_BLOCKS),
                        metavar=("BLOCK_Q", "BLOCK_K"), help="the NumPy flash reference's tiles")
    parser.add_argument("--budget", type=float, default=20.0,
                        help="seconds per method and case: slow methods are timed fewer times")
    parser.add_argument("--flash-numpy-max", type=int, default=4096,
                        help="largest N for the NumPy flash reference (slow: a Python loop over "
                             "tiles)")
    parser.add_argument("--out", default="bench_results/bench.json", help="where to save the "
                                                                          "results (JSON)")
    parser.add_argument("--plot", default=None, help="figure path (default: next to --out, .png)")
    parser.add_argument("--gpu", action="store_true", help="run attention_scratch.bench.gpu "
                                                           "instead")
    args = parser.parse_args(argv)
    print("machine:", machine.summary())
    print(HEADER)
    data = run(args.sizes, args.repeats, args.batch, args.heads, args.dim, args.methods,
               {"flash numba": None if args.block_q is None and args.block_k is None else
                (args.block_q or 64, args.block_k or 64),
                "flash numpy": tuple(args.numpy_blocks)}, args.budget,
               flash_numpy_max=args.flash_numpy_max, progress=True)
    data["machine"]["blas_after"] = machine.blas_libraries()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    figure = Path(args.plot) if args.plot else out.with_suffix(".png")
    plot(data, figure)
    print(f"results: {out}; figure: {figure}")
    return 0
