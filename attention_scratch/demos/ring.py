"""Ring attention and split-KV decoding on MPI ranks,
checked against flash attention in one process.

Run it on 4 processes (chapter 11)::

    mpiexec -n 4 python -m attention_scratch.demos.ring

Every rank builds the same whole problem from one seed, computes the single-process
reference on the whole sequence, and compares its own shard; rank 0 prints every
rank's largest difference.
"""
import numpy as np

import attention_scratch as at
from attention_scratch.distributed import (
    ring_attention,
    ring_attention_backward,
    shard_positions,
    split_kv_attention,
)


def main():
    from mpi4py import MPI  # importing it starts MPI: only when the program runs

    comm = MPI.COMM_WORLD
    rank, P = comm.Get_rank(), comm.Get_size()
    rng = np.random.default_rng(0)  # one seed: every rank draws the same numbers
    N = 128 * P
    q, k, v, g = (rng.standard_normal((2, 4, N, 32)) for _ in range(4))  # (B, H, N, E)

    # The reference: the single-process kernels on the whole sequence.
    out, lse = at.flash_attention(q, k, v, is_causal=True,
                                  return_lse=True)  # (B, H, N, E), (B, H, N)
    grads = at.flash_attention_backward(g, q, k, v, out, lse, is_causal=True)

    worst = 0.0
    for layout in ("contiguous", "zigzag", "striped"):
        rows = shard_positions(N, P, layout)[rank]  # (N/P,) the positions this rank holds
        q_r, k_r, v_r, g_r = (x[..., rows, :] for x in (q, k, v, g))  # (B, H, N/P, E)
        out_r, lse_r = ring_attention(q_r, k_r, v_r, comm, is_causal=True, layout=layout,
                                      return_lse=True)
        grads_r = ring_attention_backward(g_r, q_r, k_r, v_r, out_r, lse_r, comm, is_causal=True,
                                          layout=layout)
        diffs = [np.abs(out_r - out[..., rows, :]).max(), np.abs(lse_r - lse[..., rows]).max()]
        diffs += [np.abs(mine - whole[..., rows, :]).max()
                  for mine, whole in zip(grads_r, grads, strict=True)]
        everyone = comm.gather(max(diffs))  # rank 0 collects each rank's largest difference
        if rank == 0:
            print(f"ring, causal, {layout:>10}: largest |ring - flash| over out, lse, dQ, dK, "
                  f"dV on ranks 0..{P - 1}: " + ", ".join(f"{d:.1e}" for d in everyone))
        worst = max(worst, *diffs)

    # Split-KV decoding: one new token; rank r holds 100 + 30·r cached keys, in rank order.
    sizes = [100 + 30 * r for r in range(P)]
    start = sum(sizes[:rank])
    token = rng.standard_normal((2, 4, 1, 32))  # (B, Hq, 1, E)
    cache_k, cache_v = rng.standard_normal((2, 2, 2, sum(sizes), 32))  # (B, Hkv, S, E) each
    ref = at.flash_attention(token, cache_k, cache_v, enable_gqa=True)  # (B, Hq, 1, E)
    mine = slice(start, start + sizes[rank])
    got = split_kv_attention(token, cache_k[..., mine, :], cache_v[..., mine, :], comm,
                             enable_gqa=True)
    everyone = comm.gather(np.abs(got - ref).max())
    if rank == 0:
        print(f"split-KV decoding, {sum(sizes)} keys in parts of {sizes}: "
              "largest difference per rank: " + ", ".join(f"{d:.1e}" for d in everyone))
    worst = comm.allreduce(max(worst, np.abs(got - ref).max()), op=MPI.MAX)
    if rank == 0:
        print(f"worst difference: {worst:.2e}")


if __name__ == "__main__":
    main()
