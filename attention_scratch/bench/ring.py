"""Ring attention on MPI, measured: scaling with the number of ranks and what the overlap hides
(chapter 11).

Record the chapter's numbers (a few minutes)::

    python -m attention_scratch.bench.ring --record attention_scratch/data/11_ring_bench.json

For each number of ranks ``P`` (1, 2, 4; twice, in turn) this starts ``mpiexec -n P python -m
attention_scratch.bench.ring --rank …``. Every rank holds its shard of one problem
(``B = 1``, ``H`` heads, ``N`` positions, ``E``, float64) and keeps NumPy's BLAS to one
thread, so ``P`` ranks use at most ``P`` cores. Before anything is timed, the ranks'
outputs and gradients are gathered and checked against single-process
``flash_attention`` / ``flash_attention_backward`` on the whole sequence. Then, ``repeats``
times, the forward and the backward pass run with the overlap on (non-blocking
exchanges started before each step's computation) and off (blocking ``Sendrecv`` after
it), taking turns; each time is barrier to barrier, so it is the slowest rank's. The
timelines of the ranks (compute, wait, communicate) are summed per rank, and the same
messages are timed alone (the shards passed around the ring with no computation).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

CONFIGS = {  # name: (is_causal, layout)
    "full": (False, "contiguous"),
    "causal contiguous": (True, "contiguous"),
    "causal zigzag": (True, "zigzag"),
}


def _phase_sums(timeline):
    """Seconds per phase (compute, wait, communicate) in one rank's timeline."""
    sums = {"compute": 0.0, "wait": 0.0, "communicate": 0.0}
    for event in timeline:
        sums[event["what"]] += event["stop"] - event["start"]
    return sums


def _shard(whole, rows):
    """Rows ``rows`` of an lse (B, H, N) or of an output or gradient (B, H, N, ·)."""
    return whole[..., rows] if whole.ndim == 3 else whole[..., rows, :]


def rank_main(N, heads, dim, repeats, configs, seed=0):
    """What each rank runs; rank 0 returns the measurements of every config (others ``None``)."""
    from mpi4py import MPI
    from threadpoolctl import threadpool_limits

    import attention_scratch as at
    from attention_scratch.distributed import (
        ring_attention,
        ring_attention_backward,
        shard_positions,
    )

    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    rng = np.random.default_rng(seed)
    q, k, v, g = (rng.standard_normal((1, heads, N, dim))
                  for _ in range(4))  # (B, H, N, E), on every rank
    results = {}
    with threadpool_limits(1):
        for name in configs:
            causal, layout = CONFIGS[name]
            rows = shard_positions(N, world, layout)[rank]
            mine = [x[..., rows, :].copy() for x in (q, k, v, g)]  # (1, H, N/P, E) each
            out, lse = ring_attention(*mine[:3], comm, causal, layout=layout, return_lse=True)
            grads = ring_attention_backward(mine[3], *mine[:3], out, lse, comm, causal,
                                            layout=layout)
            gathered = comm.gather((rows, out, lse) + tuple(grads))
            error = None
            if rank == 0:  # the check before timing: single-process flash on the whole sequence
                ref_out, ref_lse = at.flash_attention(q, k, v, causal, return_lse=True)
                ref_grads = at.flash_attention_backward(g, q, k, v, ref_out, ref_lse, causal)
                ref = (ref_out, ref_lse, *ref_grads)
                error = max(float(np.abs(part - _shard(whole, r)).max())
                            for r, *parts in gathered
                            for part, whole in zip(parts, ref, strict=True))
                if not error <= 1e-12:
                    raise AssertionError(f"{name} on {world} ranks differs from flash_attention "
                                         f"by {error:.3g}")
            modes = ("overlap", "blocking") if world > 1 else ("overlap",)
            times = {mode: {"forward": [], "backward": [], "phases_forward": [],
                            "phases_backward": []} for mode in modes}
            timelines = {}
            for _ in range(repeats):
                for mode, record in times.items():
                    overlap = mode == "overlap"
                    forward_log, backward_log = [], []
                    comm.Barrier()
                    start = time.perf_counter()
                    out, lse = ring_attention(*mine[:3], comm, causal, layout=layout,
                                              return_lse=True, overlap=overlap,
                                              timeline=forward_log)
                    comm.Barrier()
                    middle = time.perf_counter()
                    ring_attention_backward(mine[3], *mine[:3], out, lse, comm, causal,
                                            layout=layout, overlap=overlap, timeline=backward_log)
                    comm.Barrier()
                    stop = time.perf_counter()
                    record["forward"].append(middle - start)
                    record["backward"].append(stop - middle)
                    record["phases_forward"].append(comm.gather(_phase_sums(forward_log)))
                    record["phases_backward"].append(comm.gather(_phase_sums(backward_log)))
                    timelines[mode] = comm.gather(forward_log)  # the last repetition's, per rank
            # the same messages alone, each the size of a K shard: forward K and V P - 1 times each,
            # backward K and V P - 1 times each and dK and dV P times each
            shard = mine[1]
            inbox, alone = np.empty_like(shard), []
            messages = 4 * (world - 1) + 2 * world if world > 1 else 0
            for _ in range(repeats):
                comm.Barrier()
                start = time.perf_counter()
                for _ in range(messages):
                    comm.Sendrecv(shard, (rank + 1) % world, 0, inbox, (rank - 1) % world, 0)
                comm.Barrier()
                alone.append(time.perf_counter() - start)
            results[name] = {"check_error": error, "times": times, "messages_alone_s": alone,
                             "messages": messages, "message_bytes": shard.nbytes,
                             "timelines": timelines}
            comm.Barrier()
    return results if rank == 0 else None


def record(path, N=4096, heads=4, dim=64, repeats=3, rounds=2, worlds=(1, 2, 4),
           configs=tuple(CONFIGS), timeout=1800):
    """Run every ``P`` of ``worlds`` under mpiexec, ``rounds`` times in turn (so that a change of
    load on the machine reaches every ``P``), and write what they measured to ``path`` (JSON)."""
    from ..distributed_mpi import mpi, run_ranks
    from .common import git_commit
    from .cpu import machine_description

    runs = {str(world): [] for world in worlds}
    for turn in range(rounds):
        for world in worlds:
            start, load = time.perf_counter(), os.getloadavg()
            done = run_ranks(world, ["-m", "attention_scratch.bench.ring", "--rank", "--size", N,
                                     "--heads", heads, "--dim", dim, "--repeats", repeats,
                                     "--configs", ",".join(configs)], timeout=timeout)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or len(lines) != 1:
                raise RuntimeError(f"mpiexec -n {world} failed "
                                   f"({done.returncode}):\n{done.stdout}\n{done.stderr}")
            runs[str(world)].append({"round": turn, "load_before": load,
                                     "load_after": os.getloadavg(),
                                     "results": json.loads(lines[0][len("RESULT "):])})
            print(f"round {turn + 1}/{rounds}, P={world}: {time.perf_counter() - start:.0f} s",
                  file=sys.stderr)
    result = {"command": "python -m attention_scratch.bench.ring " + " ".join(sys.argv[1:]),
              "problem": {"B": 1, "H": heads, "N": N, "E": dim, "dtype": "float64",
                          "repeats": repeats, "rounds": rounds}, "machine": machine_description(),
              "commit": git_commit(), "mpi": mpi().Get_library_version().splitlines()[0].strip(),
              "date": time.strftime("%Y-%m-%d"), "runs": runs}
    with open(path, "w") as file:
        json.dump(result, file, indent=1)
        file.write("\n")
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", metavar="PATH",
                        help="run P = 1, 2, 4 under mpiexec and write JSON here")
    parser.add_argument("--rank", action="store_true",
                        help="(internal) run as one rank under mpiexec")
    parser.add_argument("--size", type=int, default=4096, help="sequence length N (default 4096)")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed repetitions per run (default 3)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="runs of every P, in turn (default 2)")
    parser.add_argument("--worlds", default="1,2,4", help="numbers of ranks to run (default 1,2,4)")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"some of {', '.join(CONFIGS)}")
    args = parser.parse_args(argv)
    configs = tuple(args.configs.split(","))
    if args.rank:
        results = rank_main(args.size, args.heads, args.dim, args.repeats, configs)
        if results is not None:
            print("RESULT " + json.dumps(results), flush=True)
        return
    if not args.record:
        parser.error("give --record PATH")
    record(args.record, args.size, args.heads, args.dim, args.repeats, args.rounds,
           tuple(int(w) for w in args.worlds.split(",")), configs)
    print(f"written: {os.path.abspath(args.record)}", file=sys.stderr)


if __name__ == "__main__":
    main()
