"""Two efficient-attention methods of the literature that are not masks (chapter 16).

The sparse patterns (Longformer, BigBird, packed documents, prefix-LM) are ``mask_mod``
functions in :mod:`attention_scratch.flex_mods`: a block mask and the flex kernels are all they
need. Two other methods change what is attended to, and get functions of their own:

* :func:`linformer_attention` (Wang et al., 2020) projects the ``S`` keys and values down to
  ``k`` rows with two ``(k, S)`` matrices, so each query attends to ``k`` mixtures of keys:
  ``Θ(N k d)`` work, a low-rank approximation of the attention matrix;
* :func:`lsh_attention` (Kitaev et al., 2020, the Reformer) hashes queries and keys with random
  rotations, sorts both by bucket and lets a query attend only to the keys of its own bucket.
  After the sort the bucket mask is block-diagonal, so it runs as a ``mask_mod`` on the flex
  kernels, and the tiles between buckets are skipped.
"""
import numpy as np

from ._checks import as_float_array
from .block_mask import create_block_mask
from .contract import default_scale
from .flex import flex_attention
from .softmax import softmax


def linformer_attention(query, key, value, proj_k, proj_v, scale=None):
    """Linformer: softmax attention over ``k`` projected keys and values.

    ``K' = P_k K`` and ``V' = P_v V`` with ``proj_k``, ``proj_v`` of shape ``(k, S)``; then
    ``softmax(Q K'ᵀ · scale) V'``. Exact only when the attention matrix has rank ``k`` or less.

    Shapes
    ------
    ``query`` (..., L, E), ``key`` (..., S, E), ``value`` (..., S, Ev), ``proj_k`` and ``proj_v``
    (k, S) -> (..., L, Ev).
    """
    q, k, v = (as_float_array(a, n) for a, n in ((query, "query"), (key, "key"),
                                                  (value, "value")))
    proj_k, proj_v = np.asarray(proj_k, dtype=q.dtype), np.asarray(proj_v, dtype=q.dtype)
    if proj_k.shape != proj_v.shape or proj_k.ndim != 2 or proj_k.shape[1] != k.shape[-2]:
        raise ValueError(f"proj_k and proj_v must both have shape (k, S) with S = {k.shape[-2]}; "
                         f"got {proj_k.shape} and {proj_v.shape}")
    scale = default_scale(q.shape[-1]) if scale is None else float(scale)
    k_low = proj_k @ k  # (k, S) @ (..., S, E) -> (..., k, E)
    v_low = proj_v @ v  # (..., k, Ev)
    weights = softmax((q @ np.swapaxes(k_low, -1, -2)) * scale, axis=-1)  # (..., L, k)
    return weights @ v_low  # (..., L, Ev)


def lsh_buckets(x, rotations):
    """Reformer's angular LSH: ``argmax([x R, -x R])``, one bucket of ``2·r`` per row.

    Shapes
    ------
    ``x`` (..., n, E), ``rotations`` (E, r) -> (..., n) int64 in ``0 .. 2r - 1``.
    """
    projected = x @ rotations  # (..., n, r)
    return np.argmax(np.concatenate([projected, -projected], axis=-1), axis=-1)  # (..., n)


def lsh_attention(query, key, value, n_buckets, rng, *, block_size=64, scale=None,
                  backend="numpy", return_block_mask=False):
    """Reformer-style LSH attention: each query attends only to the keys of its own bucket.

    Queries and keys are hashed with the same random rotation (:func:`lsh_buckets`; unit-norm
    rows, as in the Reformer's shared-QK attention, hash by angle only), each sorted by bucket
    (stable: positions stay in order inside a bucket), attended with the ``mask_mod``
    "same bucket" on the flex kernels, and the outputs put back in the queries' order. A query
    whose bucket holds no key gets output 0.

    Parameters
    ----------
    n_buckets : int
        Even; the rotation has ``n_buckets / 2`` columns.
    rng : numpy.random.Generator
        Draws the rotation.
    return_block_mask : bool
        Also return the block mask of the sorted problem (its ``sparsity()``).

    Shapes
    ------
    ``(B, H, L, E), (B, H, S, E), (B, H, S, Ev) -> (B, H, L, Ev)``.
    """
    q, k, v = (as_float_array(a, n) for a, n in ((query, "query"), (key, "key"),
                                                  (value, "value")))
    if q.ndim != 4 or k.shape[:2] != q.shape[:2] or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"lsh_attention takes (B, H, L, E), (B, H, S, E), (B, H, S, Ev); got "
                         f"{q.shape}, {k.shape}, {v.shape}")
    if n_buckets < 2 or n_buckets % 2:
        raise ValueError(f"n_buckets must be an even number >= 2; got {n_buckets}")
    B, H, L, E = q.shape
    rotations = rng.standard_normal((E, n_buckets // 2))  # (E, r)
    bucket_q, bucket_k = lsh_buckets(q, rotations), lsh_buckets(k, rotations)  # (B, H, L), (.., S)
    order_q = np.argsort(bucket_q, axis=-1, kind="stable")  # (B, H, L)
    order_k = np.argsort(bucket_k, axis=-1, kind="stable")  # (B, H, S)
    sorted_q = np.take_along_axis(bucket_q, order_q, axis=-1)  # (B, H, L), non-decreasing
    sorted_k = np.take_along_axis(bucket_k, order_k, axis=-1)  # (B, H, S)

    def same_bucket(b, h, q_idx, kv_idx):
        return sorted_q[b, h, q_idx] == sorted_k[b, h, kv_idx]

    block_mask = create_block_mask(same_bucket, B, H, L, k.shape[2], BLOCK_SIZE=block_size)
    out_sorted = flex_attention(np.take_along_axis(q, order_q[..., None], axis=-2),
                                np.take_along_axis(k, order_k[..., None], axis=-2),
                                np.take_along_axis(v, order_k[..., None], axis=-2),
                                block_mask=block_mask, scale=scale,
                                backend=backend)  # (B, H, L, Ev), queries in bucket order
    out = np.empty_like(out_sorted)  # (B, H, L, Ev)
    np.put_along_axis(out, order_q[..., None], out_sorted, axis=-2)  # back to query order
    return (out, block_mask) if return_block_mask else out
