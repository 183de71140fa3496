"""Attention across real processes: ring attention and split-KV decoding over MPI (chapter 11).

The chapter's simulation (:mod:`attention_scratch.decoding`) passes key/value shards
around a list inside one process. Here every shard lives in its own process and
travels over MPI (through mpi4py): rank ``r`` of a communicator of ``R`` ranks holds
its own part of the sequence, ``(B, H, N/R, E)``, and gets its own part of the
output back. Nothing but the library's public single-process kernels runs on a
rank: :func:`attention_scratch.flash_attention` (with ``return_lse=True``) and
:func:`attention_scratch.flash_attention_backward` on one pair of shards, and the
merge operator of chapter 8 to combine them.

mpi4py and an MPI library are optional: ``pip install "attention_scratch[mpi]"``
(mpi4py and MPICH, both from PyPI). This module imports without them; its functions
say what to install when they are called without them.

Which positions each rank holds (``layout=``: contiguous, zigzag or striped) and which
tiles it computes on a visiting shard are in :mod:`attention_scratch.distributed_layouts`;
:func:`shard_positions` and :func:`ring_tiles` are re-exported here.
"""
import time

import numpy as np

from . import flash_attention, flash_attention_backward, merge_attention
from .decoding import combine_splits
from .distributed_layouts import LAYOUTS, check_layout, ring_tiles, shard_positions
from .distributed_mpi import open_ring, run_step

__all__ = ["LAYOUTS", "ring_attention", "ring_attention_backward", "ring_tiles", "shard_positions",
           "split_kv_attention"]


def _check_flags(function, **flags):
    for name, value in flags.items():
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{function}: {name} must be True or False; "
                            f"got {type(value).__name__} {value!r}")


def _shards(ring, function, arrays, flags, layout, **switches):
    """Every rank's arrays as NumPy arrays, after checking the layout and the ``switches`` (flags
    that must be bools) here, and that shapes, dtypes, flags and layout agree across ranks; an
    error on any rank is raised on every rank."""
    def local():
        check_layout(layout)
        _check_flags(function, **switches)
        out = {name: np.asarray(a) for name, a in arrays.items()}
        for name, a in out.items():
            if a.ndim < 2:
                raise ValueError(f"{function}: {name} must be (..., N/R, ·); got shape {a.shape}")
        return out

    local_arrays = ring.agree(local)
    described = {f"{n} shape": a.shape for n, a in local_arrays.items()}
    described.update({f"{n} dtype": str(a.dtype) for n, a in local_arrays.items()})
    ring.same_everywhere(function, dict(described, **flags, layout=layout))
    q, k = local_arrays["query"], local_arrays["key"]
    if flags.get("is_causal") and q.shape[-2] != k.shape[-2]:
        raise ValueError(f"{function}: causal ring attention needs query "
                         f"and key shards of one length (N/R); got query {q.shape} "
                         f"and key {k.shape}")
    if layout == "zigzag" and q.shape[-2] % 2:
        raise ValueError(f"{function}: the zigzag layout holds two chunks per rank, "
                         f"so N/R must be even; got query {q.shape}")
    return local_arrays


def _merge(out_a, lse_a, out_b, lse_b):
    """:func:`attention_scratch.merge_attention`, with the log-sum-exp of a row that is NaN in
    either part NaN, as ``flash_attention`` gives it (the merge itself leaves ``+inf`` there)."""
    out, lse = merge_attention(out_a, lse_a, out_b, lse_b)  # (..., rows, Ev), (..., rows)
    return out, np.where(np.isnan(lse_a) | np.isnan(lse_b), np.nan, lse)


def _accumulator(dtype):
    return np.float64 if dtype == np.float64 else np.float32  # float16 shards accumulate in float32


def ring_attention(query, key, value, comm, is_causal=False, scale=None, *, enable_gqa=False,
                   layout="contiguous", return_lse=False, overlap=True, timeline=None):
    """Ring attention over the ranks of an MPI communicator (Liu, Zaharia and Abbeel, 2024).

    Every rank passes its own shard of the sequence and gets the attention output of
    its own queries over the whole sequence. Queries stay put; key/value shards travel
    from rank ``r`` to rank ``r + 1``. At each of ``R`` steps a rank starts sending the
    shard it holds and receiving the next one (non-blocking), attends its queries to the
    shard it holds with :func:`attention_scratch.flash_attention`, merges the partial
    result into its running ``(out, lse)`` with :func:`attention_scratch.merge_attention`,
    then waits for the next shard. Under ``is_causal`` (top-left, over global positions)
    shards entirely in a rank's future are skipped.

    Parameters
    ----------
    query, key, value : ndarray
        This rank's shards, ``(..., Hq, N/R, E)``, ``(..., Hkv, N/R, E)``,
        ``(..., Hkv, N/R, Ev)``, in the positions :func:`shard_positions` gives for
        ``layout``. Every rank must pass the same shapes, dtypes and options.
    comm : mpi4py.MPI.Intracomm
        The ranks of the ring, in rank order (for example ``MPI.COMM_WORLD``).
    is_causal, scale, enable_gqa
        As in :func:`attention_scratch.flash_attention`.
    layout : {"contiguous", "zigzag", "striped"}
        Which positions each rank holds (module docstring); ``"zigzag"`` and
        ``"striped"`` balance the causal work across ranks.
    return_lse : bool
        Also return this rank's log-sum-exp.
    overlap : bool
        ``False`` exchanges the shards with blocking ``Sendrecv`` after each step's
        computation instead: the baseline that shows what the overlap hides.
    timeline : list, optional
        Appended with one dict per phase: ``rank``, ``step``, ``what`` (``"compute"``,
        ``"wait"`` or ``"communicate"``), ``start`` and ``stop`` (``time.perf_counter``).

    Returns
    -------
    out : ndarray of the input dtype, ``(..., Hq, N/R, Ev)``; and ``lse`` ``(..., Hq, N/R)``
        with ``return_lse``. Equal to this rank's rows of ``flash_attention`` on the
        whole sequence.

    Raises
    ------
    TypeError, ValueError
        On every rank alike when any rank's arguments are wrong (different shard
        shapes across ranks, a ``comm`` that is not a communicator).
    ImportError
        Without mpi4py, saying what to install.

    Shapes
    ------
    ``(..., Hq, N/R, E), (..., Hkv, N/R, E), (..., Hkv, N/R, Ev) -> (..., Hq, N/R, Ev)``.
    """
    ring = open_ring(comm, overlap, timeline)
    try:
        flags = dict(is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
        a = _shards(ring, "ring_attention", dict(query=query, key=key, value=value), flags, layout,
                    return_lse=return_lse, overlap=overlap)
        q, held = a["query"], (a["key"], a["value"])
        acc = _accumulator(q.dtype)
        out = lse = None
        for step in range(ring.size):
            ring.step, source = step, (ring.rank - step) % ring.size
            pending = ring.send(held, tag=0) if ring.overlap and step < ring.size - 1 else None
            start = time.perf_counter()

            def compute(source=source, held=held):  # run now, by run_step, not later
                nonlocal out, lse
                for rows, keys, causal in ring_tiles(ring.rank, source, ring.size, q.shape[-2],
                                                     is_causal, layout):
                    o, s = flash_attention(q[..., rows, :], held[0][..., keys, :],
                                           held[1][..., keys, :], causal, scale, enable_gqa,
                                           return_lse=True)
                    o, s = o.astype(acc), s.astype(acc)  # (..., Hq, rows, Ev), (..., Hq, rows)
                    if out is None:  # step 0: the rank's own shard, all rows
                        out, lse = o, s
                    else:
                        out[..., rows, :], lse[..., rows] = _merge(out[..., rows, :],
                                                                   lse[..., rows], o, s)

            run_step(ring, step, compute, pending)
            ring.log("compute", start)
            if step < ring.size - 1:
                held = ring.wait(pending if ring.overlap else ring.send(held, tag=0))
        out = out.astype(q.dtype)  # (..., Hq, N/R, Ev)
        return (out, lse) if return_lse else out
    finally:
        ring.comm.Free()


def ring_attention_backward(grad_out, query, key, value, out, lse, comm, is_causal=False,
                            scale=None, *, enable_gqa=False, layout="contiguous", overlap=True,
                            timeline=None):
    """Gradients of :func:`ring_attention`; dK and dV travel around the ring with their shards.

    Each rank keeps its queries, ``grad_out``, ``out`` and ``lse`` and accumulates its
    own dQ. Key/value shards move from rank ``r`` to ``r + 1`` as in the forward pass,
    and each is followed by the running sum of its gradients: at every step a rank adds
    the contribution of its queries, from :func:`attention_scratch.flash_attention_backward`
    with the forward's ``out`` and ``lse`` of the whole sequence (so ``D = rowsum(dO∘O)``
    and the recomputed weights are those of the whole row), and passes the sums on. After
    ``R`` steps every shard's dK and dV are back on the rank that owns them. The sends of
    the next key/value shard overlap the step's computation, and the sends of the
    gradient sums overlap the next step's.

    Parameters
    ----------
    grad_out, out, lse : ndarray
        This rank's shards of dL/dout ``(..., Hq, N/R, Ev)``, of the forward output and of
        its log-sum-exp ``(..., Hq, N/R)`` (``ring_attention(..., return_lse=True)``).
    query, key, value, comm, is_causal, scale, enable_gqa, layout, overlap, timeline
        As in :func:`ring_attention`, and the same as in the forward call.

    Returns
    -------
    grad_query, grad_key, grad_value : ndarrays of the input dtype, shaped like this
        rank's ``query``, ``key`` and ``value``: this rank's rows of
        ``flash_attention_backward`` on the whole sequence.

    Shapes
    ------
    ``(..., Hq, N/R, E)``, ``(..., Hkv, N/R, E)``, ``(..., Hkv, N/R, Ev)``.
    """
    ring = open_ring(comm, overlap, timeline)
    try:
        flags = dict(is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
        a = _shards(ring, "ring_attention_backward",
                    dict(grad_out=grad_out, query=query, key=key, value=value, out=out, lse=lse),
                    flags, layout, overlap=overlap)
        g, q, o, s = a["grad_out"], a["query"], a["out"], a["lse"]
        held, acc = (a["key"], a["value"]), _accumulator(q.dtype)
        grad_q, incoming = np.zeros(q.shape, acc), None  # (..., Hq, N/R, E)
        for step in range(ring.size):
            ring.step, source = step, (ring.rank - step) % ring.size
            pending = ring.send(held, tag=0) if ring.overlap and step < ring.size - 1 else None
            start = time.perf_counter()
            # this step's part
            grad_k, grad_v = np.zeros(held[0].shape, acc), np.zeros(held[1].shape, acc)

            def compute(source=source, held=held, grad_k=grad_k, grad_v=grad_v):  # run now
                for rows, keys, causal in ring_tiles(ring.rank, source, ring.size, q.shape[-2],
                                                     is_causal, layout):
                    dq, dk, dv = flash_attention_backward(g[..., rows, :], q[..., rows, :],
                                                          held[0][..., keys, :],
                                                          held[1][..., keys, :], o[..., rows, :],
                                                          s[..., rows], causal, scale, enable_gqa)
                    grad_q[..., rows, :] += dq  # (..., Hq, rows, E)
                    grad_k[..., keys, :] += dk  # (..., Hkv, keys, E)
                    grad_v[..., keys, :] += dv  # (..., Hkv, keys, Ev)

            run_step(ring, step, compute, pending)
            ring.log("compute", start)
            if incoming is not None:  # the sums for this shard from the ranks it visited before
                done_k, done_v = ring.wait(incoming)
                grad_k += done_k  # (..., Hkv, N/R, E)
                grad_v += done_v  # (..., Hkv, N/R, Ev)
            if ring.size > 1:  # on to rank r + 1; after the last step that is the shard's owner
                incoming = ring.send((grad_k, grad_v), tag=2)
            if step < ring.size - 1:
                held = ring.wait(pending if ring.overlap else ring.send(held, tag=0))
        if incoming is not None:
            grad_k, grad_v = ring.wait(incoming)
        return grad_q.astype(q.dtype), grad_k.astype(q.dtype), grad_v.astype(q.dtype)
    finally:
        ring.comm.Free()


def split_kv_attention(query, key, value, comm, is_causal=False, scale=None, *, enable_gqa=False,
                       causal_align="bottom_right", return_lse=False):
    """Split-KV decoding across ranks: each rank holds part of the KV cache (flash-decoding on MPI).

    Every rank passes the same queries (the new tokens) and its own consecutive part of
    the keys and values, in rank order; the parts may differ in length, and a rank may
    hold none. Each rank runs :func:`attention_scratch.flash_attention` on its part,
    giving a partial output and log-sum-exp; the partial results are gathered on every
    rank and combined with :func:`attention_scratch.decoding.combine_splits`, the merge
    operator of chapter 8 for ``R`` parts.

    Parameters
    ----------
    query : ndarray
        ``(..., Hq, L, E)``, the same on every rank.
    key, value : ndarray
        This rank's part of the cache, ``(..., Hkv, S_r, E)`` and ``(..., Hkv, S_r, Ev)``.
    comm : mpi4py.MPI.Intracomm
        The ranks holding the cache, in the order of their parts.
    is_causal : bool
        Causal mask over the whole cache with the KV-cache alignment: query ``i`` sees
        keys ``j <= i + S - L`` where ``S = Σ S_r`` (the queries are the last ``L`` tokens).
    causal_align : {"bottom_right"}
        The only alignment offered: a cache's queries are its last tokens.
    scale, enable_gqa, return_lse
        As in :func:`attention_scratch.flash_attention`.

    Returns
    -------
    out : ndarray of the input dtype, ``(..., Hq, L, Ev)``, the same on every rank (and
        ``lse`` ``(..., Hq, L)`` with ``return_lse``): ``flash_attention`` over the whole cache.

    Shapes
    ------
    ``(..., Hq, L, E), (..., Hkv, S_r, E), (..., Hkv, S_r, Ev) -> (..., Hq, L, Ev)``.
    """
    ring = open_ring(comm, True, None)
    try:
        def local():
            if causal_align != "bottom_right":
                raise ValueError("split_kv_attention: causal_align must be 'bottom_right' "
                                 f"(the queries are the cache's last tokens); got {causal_align!r}")
            _check_flags("split_kv_attention", is_causal=is_causal, return_lse=return_lse)
            arrays = [np.asarray(a) for a in (query, key, value)]
            for name, a in zip(("query", "key", "value"), arrays, strict=True):
                if a.ndim < 2:
                    raise ValueError(f"split_kv_attention: {name} must be (..., ·, E); "
                                     f"got shape {a.shape}")
            return arrays

        q, k, v = ring.agree(local)
        ring.same_everywhere("split_kv_attention",
                             {"query shape": q.shape,
                              "key shape except S_r": k.shape[:-2] + k.shape[-1:],
                              "value shape except S_r": v.shape[:-2] + v.shape[-1:],
                              "dtype": (str(q.dtype), str(k.dtype)), "is_causal": is_causal,
                              "scale": scale, "enable_gqa": enable_gqa})
        sizes = ring.comm.allgather(k.shape[-2])  # S_r of every rank
        after = sum(sizes[ring.rank + 1:])  # keys held by later ranks
        # j_local <= i + S_r - L + after: causal globally
        window = (None, after) if is_causal else None
        part = ring.agree(lambda: flash_attention(q, k, v, False, scale, enable_gqa, window=window,
                                                  return_lse=True))
        acc = _accumulator(q.dtype)
        outs, lses = (np.empty((ring.size,) + x.shape, acc)
                      for x in part)  # (R, ..., Hq, L, Ev), (R, ..., Hq, L)
        for mine, everyone in zip(part, (outs, lses), strict=True):
            ring.comm.Allgather([np.ascontiguousarray(mine, dtype=acc), ring.MPI.BYTE],
                                [everyone, ring.MPI.BYTE])
        out, lse = combine_splits(outs, lses)  # (..., Hq, L, Ev), (..., Hq, L)
        # NaN rows stay NaN (combine gives +inf)
        lse = np.where(np.isnan(lses).any(axis=0), np.nan, lse)
        out = out.astype(q.dtype)
        return (out, lse) if return_lse else out
    finally:
        ring.comm.Free()
