"""What every rank runs for tests/test_distributed.py: ``mpiexec -n R python tests/mpi_ranks.py``.

Every rank builds the same whole problem from one seed, computes the single-process
reference (``at.flash_attention`` / ``at.flash_attention_backward`` on the whole sequence)
and its own shard with :mod:`attention_scratch.distributed`, and measures the difference
on its shard. Rank 0 gathers every rank's report and prints one JSON line, which the
test reads; the checks themselves are made there, so a failure names the case and rank.
"""
import json
import sys
import traceback

import numpy as np
from mpi4py import MPI

import attention_scratch as at
from attention_scratch.distributed import (
    ring_attention,
    ring_attention_backward,
    shard_positions,
    split_kv_attention,
)

comm = MPI.COMM_WORLD
rank, world = comm.Get_rank(), comm.Get_size()


def difference(actual, expected):
    """Largest |actual - expected| over finite entries; inf if shapes, dtypes' kind, or the places
    of NaN and of ±inf differ (those must match exactly)."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return float("inf")
    for where in (np.isnan, np.isposinf, np.isneginf):
        if not np.array_equal(where(actual), where(expected)):
            return float("inf")
    finite = np.isfinite(expected)
    return float(np.abs(actual[finite] - expected[finite]).max()) if finite.any() else 0.0


def ring_case(N=None, Hq=2, Hkv=2, E=8, Ev=5, is_causal=False, layout="contiguous", overlap=True,
              dtype=np.float64, scale=None, poison=None, poison_grad=None, seed=0):
    """Errors of this rank's out, lse, dQ, dK,
    dV against the single-process kernels on the whole sequence."""
    N = N or 6 * world
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((2, Hq, N, E))  # (B, Hq, N, E)
    k, v = rng.standard_normal((2, Hkv, N, E)), rng.standard_normal((2, Hkv, N, Ev))
    g = rng.standard_normal((2, Hq, N, Ev))
    # NaN in one key: what sees it is NaN, what the mask hides it from is not
    if poison is not None:
        k[0, 0, poison, 0] = np.nan
    # NaN in one row of grad_out: its dq and the dk, dv of the keys it sees
    if poison_grad is not None:
        g[0, 0, poison_grad, 0] = np.nan
    q, k, v, g = (x.astype(dtype) for x in (q, k, v, g))
    gqa = Hq != Hkv
    out, lse = at.flash_attention(q, k, v, is_causal, scale, gqa, return_lse=True)
    grads = at.flash_attention_backward(g, q, k, v, out, lse, is_causal, scale, gqa)
    rows = shard_positions(N, world, layout)[rank]  # (N/R,) positions of this rank's shard
    def mine(x):
        return x[..., rows, :]  # (..., N, ·) -> (..., N/R, ·)

    timeline = []
    r_out, r_lse = ring_attention(mine(q), mine(k), mine(v), comm, is_causal, scale, enable_gqa=gqa,
                                  layout=layout, return_lse=True, overlap=overlap,
                                  timeline=timeline)
    r_grads = ring_attention_backward(mine(g), mine(q), mine(k), mine(v), r_out, r_lse, comm,
                                      is_causal, scale, enable_gqa=gqa, layout=layout,
                                      overlap=overlap)
    report = {"out": difference(r_out, mine(out)), "lse": difference(r_lse, lse[..., rows]),
              "dtype": str(r_out.dtype) + "," + str(r_grads[0].dtype)}
    for name, mine_grad, whole in zip(("dq", "dk", "dv"), r_grads, grads, strict=True):
        report[name] = difference(mine_grad, mine(whole))
    report["size"] = float(min(np.abs(x[np.isfinite(x)]).max() for x in (r_out,) + tuple(r_grads)))
    report["rows"], report["nan_rows"] = int(r_lse.size), int(np.isnan(r_lse).sum())
    report["nan_gradient_rows"] = int(sum(np.isnan(x).any(axis=-1).sum() for x in r_grads))
    report["phases"] = sorted({e["what"] for e in timeline})
    report["steps"] = sorted({e["step"] for e in timeline if e["what"] == "compute"})
    # the low-precision rule: at most 2x the error of the single-process kernels
    if dtype != np.float64:
        exact = at.flash_attention(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64),
                                   is_causal, scale, gqa)
        report["ring_error"] = difference(r_out, mine(exact))
        report["flash_error"] = difference(mine(out), mine(exact))
    return report


def split_kv_case(L=1, is_causal=False, Hq=2, Hkv=2, poison=None, seed=1):
    """Errors of split-KV decoding over this rank's part of the cache (lengths 0, 5, 3, 9, …)."""
    rng = np.random.default_rng(seed)
    sizes = [(0, 5, 3, 9)[r % 4] + r // 4 for r in range(world)]  # S_r; rank 0 holds no key
    if world == 1:
        sizes = [7]
    offsets = np.cumsum([0] + sizes)
    q = rng.standard_normal((2, Hq, L, 8))  # (B, Hq, L, E): the same new tokens on every rank
    k, v = rng.standard_normal((2, Hkv, offsets[-1], 8)), rng.standard_normal((2, Hkv, offsets[-1],
                                                                               4))
    if poison is not None:  # NaN in one key of the cache
        k[0, 0, poison, 0] = np.nan
    gqa = Hq != Hkv
    out, lse = at.flash_attention(q, k, v, is_causal, None, gqa, causal_align="bottom_right",
                                  return_lse=True)
    part = slice(offsets[rank], offsets[rank + 1])
    d_out, d_lse = split_kv_attention(q, k[..., part, :], v[..., part, :], comm, is_causal,
                                      enable_gqa=gqa, return_lse=True)
    return {"out": difference(d_out, out), "lse": difference(d_lse, lse),
            "size": float(np.abs(out[np.isfinite(out)]).max()), "rows": int(lse.size),
            "keys": int(offsets[-1]), "empty_rows": int(np.isposinf(lse).sum()),
            "nan_rows": int(np.isnan(lse).sum())}


def error_case(call):
    """The exception ``call()`` raises here: ``[type, message]``, or ``None`` if it returned."""
    try:
        call()
    except Exception as error:
        return [type(error).__name__, str(error)]
    return None


def error_cases():
    rng = np.random.default_rng(2)
    n = 4
    q, k, v = rng.standard_normal((1, 2, n, 3)), rng.standard_normal((1, 2, n,
                                                                      3)), rng.standard_normal((1,
                                                                                                2,
                                                                                                n,
                                                                                                3))
    longer = rng.standard_normal((1, 2, n + 1, 3))
    return {
        "shard_sizes": error_case(lambda: ring_attention(*((longer if rank == 0 else a)
                                                           for a in (q, k, v)), comm, True)),
        "not_a_comm": error_case(lambda: ring_attention(q, k, v, "COMM_WORLD")),
        "head_dims": error_case(lambda: ring_attention(q, k[..., :2], v, comm)),
        "flags": error_case(lambda: ring_attention(q, k, v, comm, is_causal=rank == 0)),
        "zigzag_odd": error_case(lambda: ring_attention(q[..., :3, :], k[..., :3, :], v[..., :3, :],
                                                        comm, True, layout="zigzag")),
        "backward_lse": error_case(lambda: ring_attention_backward(q, q, k, v, q, q[..., :3, 0],
                                                                   comm)),
        "split_kv_query": error_case(lambda: split_kv_attention(q[..., : 1 + (rank == 0), :], k, v,
                                                                comm)),
        "layout_on_rank_0": error_case(lambda: ring_attention(
            q, k, v, comm, layout="ring" if rank == 0 else "contiguous")),
        "flag_type": error_case(lambda: ring_attention(q, k, v, comm, is_causal="yes")),
        "overlap_type": error_case(lambda: ring_attention_backward(q, q, k, v, q, q[..., 0], comm,
                                                                   overlap="no")),
        "split_kv_align": error_case(lambda: split_kv_attention(q, k, v, comm,
                                                                causal_align="top_left")),
        # after all of these, a correct call still works on the same communicator
        "after": error_case(lambda: ring_attention(q, k, v, comm, True)),
    }


CASES = {
    "full contiguous": dict(),
    "full zigzag": dict(layout="zigzag"),
    "full striped": dict(layout="striped"),
    "causal contiguous": dict(is_causal=True),
    "causal zigzag": dict(is_causal=True, layout="zigzag"),
    "causal striped": dict(is_causal=True, layout="striped"),
    "causal contiguous blocking": dict(is_causal=True, overlap=False),
    "causal zigzag blocking": dict(is_causal=True, layout="zigzag", overlap=False),
    "full blocking": dict(overlap=False),
    "causal zigzag GQA scale": dict(is_causal=True, layout="zigzag", Hq=4, Hkv=2, E=6, Ev=3,
                                    scale=0.3),
    "causal striped GQA": dict(is_causal=True, layout="striped", Hq=6, Hkv=2),
    # shards of 80 rows: 2 tiles of 64
    "causal contiguous long shards": dict(is_causal=True, N=80 * world),
    "causal zigzag NaN in the last key": dict(is_causal=True, layout="zigzag", poison=-1),
    "causal contiguous NaN in key 2": dict(is_causal=True, poison=2),
    "causal striped NaN in grad_out row 3": dict(is_causal=True, layout="striped", poison_grad=3),
    "causal striped float32": dict(is_causal=True, layout="striped", dtype=np.float32),
    "full contiguous float32": dict(dtype=np.float32),
    "causal zigzag float16": dict(is_causal=True, layout="zigzag", dtype=np.float16),
}
SPLIT_KV = {
    "decode": dict(),
    "decode GQA": dict(Hq=4, Hkv=1),
    "causal L=3": dict(L=3, is_causal=True),
    "causal L=12": dict(L=12, is_causal=True),
    "causal L=6 NaN in the last key": dict(L=6, is_causal=True, poison=-1),
}


def main():
    report = {"package": at.__file__, "mpi": MPI.Get_library_version().splitlines()[0].strip(),
              "ring": {}, "split_kv": {}, "errors": {}}
    for name, kw in CASES.items():
        report["ring"][name] = ring_case(**kw)
    for name, kw in SPLIT_KV.items():
        report["split_kv"][name] = split_kv_case(**kw)
    report["errors"] = error_cases()
    everyone = comm.gather(report)
    if rank == 0:
        print("RESULT " + json.dumps(everyone))


if __name__ == "__main__":
    try:
        main()
    except BaseException:  # one rank's crash must end the whole run, not leave the others waiting
        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)
