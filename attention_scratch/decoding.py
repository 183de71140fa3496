"""Attention split across key chunks and across devices:
flash-decoding and ring attention (chapter 11).

Both rest on the merge operator of chapter 8. Attention over a set of keys is
determined by two numbers per query row and part: its normalised output and its
log-sum-exp. Parts computed independently, in any order and on any device,
combine exactly.

* **Split-KV decoding** (flash-decoding): a single new token (L = 1) has too
  little work to fill a parallel machine if keys are walked in order, so the
  keys are cut into chunks processed in parallel, and the partial results are
  combined with their log-sum-exps at the end.
* **Ring attention**: the sequence is sharded over R devices. Device r keeps
  its queries and passes key/value shards around a ring; after R steps it has
  seen every shard and merged each partial result into its running output.
"""
import numpy as np

from ._checks import array_module, check_positive_int
from .bands import shift_band
from .contract import DEFAULT_BLOCK, attention_args
from .flash import forward_blocks
from .flash_tiles import key_block_range
from .online_softmax import check_partials, merge_attention


# BEGIN EXERCISE 11.1 (3 points): the split-KV combine
# uses: from attention_scratch.online_softmax import check_partials
def combine_splits(outs, lses):
    """Combine the partial results of ``R`` disjoint key chunks into attention over all keys.

    ``outs[p]`` is the normalised output over chunk ``p`` and ``lses[p]`` its
    log-sum-exp (``+inf`` where a row had no key in that chunk, output 0 there).
    With ``lse = log Σ_p exp(lses[p])`` the result is
    ``Σ_p exp(lses[p] - lse)·outs[p]``. Subtract the maximum over chunks before
    exponentiating (any chunk may hold a row's largest lse); a row with no key in
    any chunk gives output 0 and lse ``+inf``. NaN in a chunk that is not empty
    (its output or its lse) reaches the entries it feeds (a NaN lse, the whole
    row and its lse): never hide it. The results keep the dtype of the inputs
    (float32 chunks give float32).

    Shapes: ``outs`` (R, ..., Ev), ``lses`` (R, ...); returns ``out`` (..., Ev) and ``lse`` (...).
    """
    check_partials(outs=outs, lses=lses)
    # BEGIN SOLUTION
    # HINT: merge_attention (exercise 8.3) for R parts at once: the max and the sums run over axis 0
    logs = np.where(np.isposinf(lses), -np.inf, lses)  # (R, ...): log of each chunk's mass
    top = logs.max(axis=0)  # (...)
    shift = np.where(np.isneginf(top), 0.0, top)  # (...): finite
    weights = np.exp(logs - shift)  # (R, ...): 0 for empty chunks
    total = weights.sum(axis=0)  # (...)
    safe = np.where(total == 0, 1.0, total)  # (...): NaN stays NaN
    out = (weights[..., None] * outs).sum(axis=0) / safe[..., None]  # (..., Ev)
    return out, np.where(total == 0, np.inf, shift + np.log(safe))
    # END SOLUTION


# END EXERCISE


def _bounds(n, parts):
    """Start and stop of ``parts`` near-equal consecutive chunks of ``range(n)``
    (some may be empty)."""
    edges = np.linspace(0, n, parts + 1).round().astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def split_kv_attention(query, key, value, num_splits, is_causal=False, scale=None,
                       enable_gqa=False, *, causal_align="top_left", window=None,
                       block_q=DEFAULT_BLOCK, block_k=DEFAULT_BLOCK, return_lse=False):
    """Attention computed over ``num_splits`` key chunks independently, then combined
    (flash-decoding).

    Each chunk runs the flash forward pass on its slice of the keys with the
    mask shifted to the chunk's position, giving a partial output and
    log-sum-exp; :func:`combine_splits` merges them. The arguments are those of
    :func:`attention_scratch.flash_attention`.

    Shapes
    ------
    ``(..., Hq, L, E), (..., Hkv, S, E), (..., Hkv, S, Ev) -> (..., Hq, L, Ev)``
    (and ``lse`` ``(..., Hq, L)`` with ``return_lse``).
    """
    num_splits = check_positive_int(num_splits, "num_splits")
    args = attention_args(query, key, value, is_causal, scale, enable_gqa,
                          causal_align=causal_align, window=window, block_q=block_q,
                          block_k=block_k)
    q, k, v = args.q, args.k, args.v  # (N, Hkv, G, L, E), (N, Hkv, 1, S, E), (N, Hkv, 1, S, Ev)
    acc_dtype, (block_q, block_k) = args.acc_dtype, args.plan.used
    outs, lses = [], []
    for j0, j1 in _bounds(args.S, num_splits):
        out, lse = forward_blocks(q, k[..., j0:j1, :], v[..., j0:j1, :], args.scale,
                                  shift_band(args.band, 0, j0), block_q, block_k, acc_dtype,
                                  acc_dtype)  # (N, Hkv, G, L, Ev), (N, Hkv, G, L)
        outs.append(out)
        lses.append(lse)
    out, lse = combine_splits(np.stack(outs),
                              np.stack(lses))  # (R, N, Hkv, G, L, ·) -> (N, Hkv, G, L, ·)
    # NaN rows marked, shapes restored
    return args.finish_forward(out.astype(args.dtype), lse, return_lse)


def ring_attention(query, key, value, world_size, is_causal=False, scale=None, enable_gqa=False,
                   *, causal_align="top_left", window=None, block_q=DEFAULT_BLOCK,
                   block_k=DEFAULT_BLOCK, return_lse=False, return_log=False):
    """Ring attention simulated on ``world_size`` devices (Liu, Zaharia and Abbeel, 2024).

    Queries are sharded along L and keys/values along S into ``world_size``
    consecutive shards; device ``r`` owns query shard ``r`` and starts with
    key/value shard ``r``. At each of ``world_size`` steps every device attends
    its queries to the shard it holds (skipping a shard the mask hides entirely),
    merges the partial result into its running ``(out, lse)`` with
    :func:`merge_attention`, and passes the shard to device ``r + 1``.

    Parameters
    ----------
    world_size : int
        Number of simulated devices.
    return_log : bool
        Also return the schedule: a list over steps of lists over devices of
        ``(kv_shard, "computed" | "skipped")``.
    Others
        As in :func:`attention_scratch.flash_attention`.

    Shapes
    ------
    ``(..., Hq, L, E), (..., Hkv, S, E), (..., Hkv, S, Ev) -> (..., Hq, L, Ev)``.
    """
    world = check_positive_int(world_size, "world_size")
    args = attention_args(query, key, value, is_causal, scale, enable_gqa,
                          causal_align=causal_align, window=window, block_q=block_q,
                          block_k=block_k)
    q, k, v, acc_dtype = args.q, args.k, args.v, args.acc_dtype
    q_bounds, kv_bounds = _bounds(q.shape[-2], world), _bounds(k.shape[-2], world)
    # Device state: its query shard, its running (out, lse), and the key/value shard it holds now.
    xp = array_module(q)  # NumPy or CuPy: the device state lives where the inputs do
    # per query shard: out (N, Hkv, G, Lr, Ev) and lse (N, Hkv, G, Lr)
    running = [(xp.zeros(q.shape[:-2] + (i1 - i0, v.shape[-1]), dtype=acc_dtype),
                xp.full(q.shape[:-2] + (i1 - i0,), np.inf, dtype=acc_dtype)) for i0, i1 in q_bounds]
    held = list(range(world))  # held[r] = index of the key/value shard device r holds
    log = []
    for _ in range(world):
        step = []
        for r, (i0, i1) in enumerate(q_bounds):
            s = held[r]
            j0, j1 = kv_bounds[s]
            band = shift_band(args.band, i0, j0)
            if (i1 == i0 or j1 == j0
                    or len(key_block_range(0, i1 - i0, j1 - j0, j1 - j0, band)) == 0):
                step.append((s, "skipped"))  # nothing in this shard is visible to these queries
                continue
            part = forward_blocks(q[..., i0:i1, :], k[..., j0:j1, :], v[..., j0:j1, :], args.scale,
                                  band, *args.plan.used, acc_dtype, acc_dtype)
            running[r] = merge_attention(*running[r], *part)  # (N, Hkv, G, Lr, Ev), (N, Hkv, G, Lr)
            step.append((s, "computed"))
        log.append(step)
        held = [held[(r - 1) % world] for r in range(world)]  # each device sends its shard to r + 1
    out = np.concatenate([o for o, _ in running], axis=-2).astype(args.dtype)  # (N, Hkv, G, L, Ev)
    lse = np.concatenate([s for _, s in running], axis=-1)  # (N, Hkv, G, L)
    result = args.finish_forward(out, lse, return_lse)  # NaN rows marked, shapes restored
    return (result, log) if return_log else result
