"""Flash attention on the CPU with Numba: the public entry points of the ``"numba"`` backend.

This module imports without Numba (:func:`unavailable_reason` says what is
missing); the kernels live in :mod:`.numba_forward` and :mod:`.numba_backward`
and are imported, and compiled, on first use. ``cache=True`` stores the machine
code next to the sources, so a second process loads it instead of compiling.

Around each kernel the BLAS library is held to one thread: the kernel already
runs one work item per core, and an OpenBLAS that also started its own threads
for every tile product would fight it for the same cores.
"""
import importlib.util

import numpy as np

from ..flash import backward_inputs, finish_backward, finish_forward, prepare

_REQUIRED = (("numba", "Numba (pip install numba)"),
             ("scipy", "SciPy, which Numba's np.dot calls for BLAS (pip install scipy)"),
             ("threadpoolctl", "threadpoolctl, to hold BLAS to one thread (pip install threadpoolctl)"))
_controller = None


def band_bounds(band, L, S):
    """The band ``(lo, hi)`` as two ints, ``None`` replaced by ``∓(L + S + 1)`` (never binding)."""
    lo, hi = band
    big = L + S + 1
    return (-big if lo is None else int(lo)), (big if hi is None else int(hi))


def unavailable_reason():
    """``None`` when Numba, SciPy and threadpoolctl are installed, else which one is missing."""
    missing = [what for name, what in _REQUIRED if importlib.util.find_spec(name) is None]
    return f"the 'numba' backend needs {' and '.join(missing)}" if missing else None


def blas_one_thread():
    """A context manager holding every loaded BLAS library to one thread."""
    global _controller
    if _controller is None:
        import scipy.linalg.cython_blas  # noqa: F401  (load SciPy's BLAS before threadpoolctl looks)
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")


def _kernel_layout(p):
    """C-contiguous ``q`` (Hq', L, E), ``k`` (Hkv', S, E), ``v`` (Hkv', S, Ev) in the accumulation dtype."""
    for name in ("q", "k", "v"):
        if not isinstance(p[name], np.ndarray):
            raise TypeError(f"the 'numba' backend takes NumPy arrays; got {type(p[name]).__module__}."
                            f"{type(p[name]).__name__} (use backend='cupy' for GPU arrays)")
    q, k, v = p["q"], p["k"], p["v"]
    heads = (q.shape[0] * q.shape[1] * q.shape[2], k.shape[0] * k.shape[1])  # (N·Hkv·G, N·Hkv)
    return (np.ascontiguousarray(q.reshape((heads[0],) + q.shape[-2:]), dtype=p["acc"]),  # (Hq', L, E)
            np.ascontiguousarray(k.reshape((heads[1],) + k.shape[-2:]), dtype=p["acc"]),  # (Hkv', S, E)
            np.ascontiguousarray(v.reshape((heads[1],) + v.shape[-2:]), dtype=p["acc"]))  # (Hkv', S, Ev)


def flash_attention(query, key, value, is_causal=False, scale=None, enable_gqa=False, *,
                    causal_align="top_left", window=None, block_q=64, block_k=64, return_lse=False):
    """:func:`attention_scratch.flash_attention` computed by the parallel Numba kernel.

    Shapes
    ------
    ``(..., Hq, L, E), (..., Hkv, S, E), (..., Hkv, S, Ev) -> (..., Hq, L, Ev)``
    (and ``lse`` ``(..., Hq, L)`` with ``return_lse``).
    """
    from .numba_forward import forward_parallel

    p = prepare(query, key, value, is_causal, scale, enable_gqa, causal_align=causal_align,
                window=window, block_q=block_q, block_k=block_k)
    q, k, v = _kernel_layout(p)
    L, S = q.shape[1], k.shape[1]
    out = np.empty(q.shape[:2] + (v.shape[2],), dtype=p["acc"])  # (Hq', L, Ev)
    lse = np.empty(q.shape[:2], dtype=p["acc"])  # (Hq', L)
    lo, hi = band_bounds(p["band"], L, S)
    if q.shape[0] and L:  # no head (B = 0 or H = 0) or no query: nothing to compute
        with blas_one_thread():
            forward_parallel(q, k, v, out, lse, q.dtype.type(p["scale"]), lo, hi, p["block_q"],
                             p["block_k"])
    return finish_forward(p, out.astype(p["dtype"], copy=False), lse, return_lse)  # (..., Hq, L, Ev)


def dq_chunks(n_kv, n_key_blocks, min_items=16):
    """How many private copies of ``dQ`` the one-pass backward uses: enough for ``min_items`` work items.

    It depends on the shapes only, never on the thread count, so that the
    result is the same on every machine.
    """
    return max(1, min(n_key_blocks, -(-min_items // max(n_kv, 1))))


def flash_attention_backward(grad_out, query, key, value, out, lse, is_causal=False, scale=None,
                             enable_gqa=False, *, causal_align="top_left", window=None,
                             block_q=64, block_k=64, two_pass=False):
    """:func:`attention_scratch.flash_attention_backward` computed by parallel Numba kernels.

    ``two_pass=True`` runs the two-pass kernels (dK/dV by key blocks, then dQ by
    query blocks: 7 tile products); the default is the one-pass kernel with
    private copies of dQ (5 tile products). Both give the same result up to rounding.

    Shapes
    ------
    returns ``(..., Hq, L, E)``, ``(..., Hkv, S, E)``, ``(..., Hkv, S, Ev)``.
    """
    from .numba_backward import dq_parallel, fused_parallel, kv_parallel

    p = prepare(query, key, value, is_causal, scale, enable_gqa, causal_align=causal_align,
                window=window, block_q=block_q, block_k=block_k)
    rows, g, o, lse = backward_inputs(p, grad_out, out, lse, query, value)  # (N, Hkv, G, L, ·), rows cleaned
    q, k, v = _kernel_layout(p)
    acc = p["acc"]
    d_out = np.ascontiguousarray(g.reshape(q.shape[:2] + (v.shape[2],)), dtype=acc)  # (Hq', L, Ev)
    o = o.reshape(d_out.shape).astype(acc, copy=False)  # (Hq', L, Ev)
    d = np.ascontiguousarray((d_out * o).sum(axis=-1))  # (Hq', L): D = rowsum(dO ∘ O)
    lse_k = np.ascontiguousarray(lse.reshape(q.shape[:2]), dtype=acc)  # (Hq', L)
    dk, dv = np.empty_like(k), np.empty_like(v)
    L, S = q.shape[1], k.shape[1]
    lo, hi = band_bounds(p["band"], L, S)
    scale_t, one = q.dtype.type(p["scale"]), q.dtype.type(1)
    # The kernels recompute the forward's scores bit for bit: K_j (Q_i·scale)ᵀ on the same tiles
    # (numba_backward's docstring). So they get Q·scale, rounded as the forward rounds it, and
    # scale 1; dK = dSᵀ (Q·scale) comes out scaled, dQ = (dS K) is scaled here at the end.
    q = q * scale_t  # (Hq', L, E)
    if not (q.shape[0] and L and S):  # no head, query or key: every gradient is 0
        dq = np.zeros_like(q)
        dk[...], dv[...] = 0, 0
    elif two_pass:
        with blas_one_thread():
            dq = np.empty_like(q)
            kv_parallel(q, k, v, d_out, lse_k, d, dk, dv, one, lo, hi, p["block_q"], p["block_k"])
            dq_parallel(q, k, v, d_out, lse_k, d, dq, one, lo, hi, p["block_q"], p["block_k"])
        dq *= scale_t
    else:
        chunks = dq_chunks(k.shape[0], -(-S // p["block_k"]))
        dq_parts = np.zeros((chunks,) + q.shape, dtype=acc)  # (C, Hq', L, E)
        with blas_one_thread():
            fused_parallel(q, k, v, d_out, lse_k, d, dk, dv, dq_parts, one, lo, hi, p["block_q"],
                           p["block_k"])
        dq = dq_parts.sum(axis=0) if chunks > 1 else dq_parts[0]  # (Hq', L, E)
        dq *= scale_t
    dtype = p["dtype"]
    return finish_backward(p, rows, *(a.astype(dtype, copy=False) for a in (dq, dk, dv)))  # like q, k, v
