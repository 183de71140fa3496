"""The argument contract of attention: one validated, typed object that every path takes.

:func:`attention_args` checks the arguments of an attention call once (shapes, dtypes,
``scale``, the flags, the mask, the block sizes; the scalar checks of
:mod:`attention_scratch._checks`), finds the rows that hold NaN or ±inf
(:mod:`attention_scratch._nonfinite`), and returns an :class:`AttentionArgs`: the inputs
in the kernel layout, the scale, the integer mask band, the dtypes, the caller's leading
axes and the :class:`TilePlan`. Scaled dot-product attention, the flash kernels (NumPy,
Numba, CUDA), split-KV and ring attention and the sliding-window variant all start from
it, and hand their results back through it (:meth:`AttentionArgs.finish_forward`,
:meth:`AttentionArgs.finish_backward`), which writes NaN where the rule of
``CONVENTIONS.md`` says and restores the caller's shapes.

The kernel layout: ``q`` (N, Hkv, G, L, E), ``k`` (N, Hkv, 1, S, E), ``v`` (N, Hkv, 1, S, Ev),
with ``N`` the flattened leading axes and ``G = Hq / Hkv`` query heads per key/value head;
query head ``h`` reads key/value head ``h // G``, and the keys broadcast over ``G`` without
a copy. No chapter depends on this module for teaching; it is the plumbing between them.
"""
import dataclasses
from typing import Any

import numpy as np

from ._checks import (
    array_module,
    as_float_array,
    check_flag,
    check_ndim,
    check_positive_int,
    check_scale,
)
from ._nonfinite import band_backward_inputs, mark_band_backward, mark_band_forward, scan, zero_rows
from .bands import integer_band, mask_band

DEFAULT_BLOCK = 64  # the default query and key tile of every flash path
CAUSAL_ALIGNS = ("top_left", "bottom_right")


@dataclasses.dataclass(frozen=True)
class TilePlan:
    """The tile sizes asked for and the ones a kernel runs.

    ``requested`` is ``(block_q, block_k)`` as passed; ``used`` is what the kernel runs:
    the same on the NumPy and Numba paths, possibly different on the CUDA path (fixed
    tensor-core tiles, or tiles reduced to what one thread block holds), with ``note``
    saying why. ``kernel`` names the kernel.
    """

    requested: tuple[int, int]
    used: tuple[int, int]
    kernel: str = "tiled"
    note: str = ""

    @property
    def block_q(self):
        """Query rows per tile, as run."""
        return self.used[0]

    @property
    def block_k(self):
        """Keys per tile, as run."""
        return self.used[1]


@dataclasses.dataclass(frozen=True)
class AttentionArgs:
    """The validated arguments of one attention call, in the kernel layout.

    Attributes
    ----------
    q, k, v : arrays (NumPy or CuPy)
        ``(N, Hkv, G, L, E)``, ``(N, Hkv, 1, S, E)``, ``(N, Hkv, 1, S, Ev)``, views of the
        inputs where possible; rows holding NaN or ±inf are zeroed (``nonfinite`` says which).
    scale : float
        The score scale (``1/sqrt(E)`` by default, 1 for ``E = 0``).
    band : (int, int)
        The mask as an integer band ``lo <= j - i <= hi``
        (:func:`attention_scratch.bands.integer_band`).
    dtype, acc_dtype : numpy.dtype
        The dtype of the results and the one the arithmetic runs in (float32 for float16).
    lead : tuple of int
        The caller's leading (batch) axes, restored on the way out.
    heads : int
        ``Hq``, the query heads.
    nonfinite : tuple or None
        ``None`` when every input is finite, else the rows holding NaN or ±inf: ``(bad_q (N, Hkv, G,
        L), bad_kv (N, Hkv, 1, S))`` (:func:`attention_scratch._nonfinite.scan`).
    plan : TilePlan
        The tile sizes requested (and, on this path, used).

    Shapes
    ------
    ``output_shape`` is ``lead + (Hq, L, Ev)``, ``lse_shape`` ``lead + (Hq, L)``.
    """

    q: Any
    k: Any
    v: Any
    scale: float
    band: tuple[int, int]
    dtype: np.dtype
    acc_dtype: np.dtype
    lead: tuple[int, ...]
    heads: int
    nonfinite: tuple | None
    plan: TilePlan

    @property
    def L(self):
        """Query length."""
        return self.q.shape[-2]

    @property
    def S(self):
        """Key length."""
        return self.k.shape[-2]

    @property
    def E(self):
        """Query/key head dim."""
        return self.q.shape[-1]

    @property
    def Ev(self):
        """Value head dim."""
        return self.v.shape[-1]

    @property
    def kv_heads(self):
        """``Hkv``, the key/value heads."""
        return self.k.shape[1]

    @property
    def group(self):
        """``G = Hq / Hkv``, query heads per key/value head."""
        return self.q.shape[2]

    @property
    def output_shape(self):
        """``(..., Hq, L, Ev)``: the caller's shape of the output and of ``grad_out``."""
        return self.lead + (self.heads, self.L, self.Ev)

    @property
    def lse_shape(self):
        """``(..., Hq, L)``: the caller's shape of the log-sum-exp."""
        return self.lead + (self.heads, self.L)

    def folded(self, x, dtype=None):
        """``x`` in the kernel layout with the three head axes folded into one, C-contiguous.

        ``(N, Hkv, G, n, d) -> (N·Hkv·G, n, d)`` and ``(N, Hkv, 1, n, d) -> (N·Hkv, n, d)``:
        the layout of the Numba and CUDA kernels, where query head ``h`` reads key/value
        head ``h // G``. ``dtype`` converts on the way (no copy when nothing changes).
        """
        xp = array_module(x)
        heads = int(np.prod(x.shape[:-2], dtype=np.int64))
        return xp.ascontiguousarray(x.reshape((heads,) + tuple(x.shape[-2:])), dtype=dtype)

    def finish_forward(self, out, lse, return_lse=False):
        """The rows the rule makes NaN marked, the caller's shapes restored.

        ``out`` and ``lse`` in the kernel layout (N, Hkv, G, L, Ev) and (N, Hkv, G, L), or any
        layout of the same size (the folded one); returns ``out`` (..., Hq, L, Ev) [and ``lse``
        (..., Hq, L) with ``return_lse``].
        """
        layout = self.q.shape[:-1]  # (N, Hkv, G, L)
        out, lse = mark_band_forward(self.nonfinite, self.band, out.reshape(layout + (self.Ev,)),
                                     lse.reshape(layout))  # (N, Hkv, G, L, Ev), (N, Hkv, G, L)
        out = out.reshape(self.output_shape)  # (..., Hq, L, Ev)
        return (out, lse.reshape(self.lse_shape)) if return_lse else out

    def backward_inputs(self, grad_out, out, lse, convert=True):
        """Check ``grad_out``, ``out``, ``lse`` against this call's shapes;
        return them in the kernel layout.

        Returns ``(rows, grad_out, out, lse)`` shaped (N, Hkv, G, L, Ev), (N, Hkv, G, L, Ev),
        (N, Hkv, G, L), with the rows whose backward inputs are not finite cleaned and listed
        in ``rows`` (``None`` when there are none;
        :func:`attention_scratch._nonfinite.band_backward_inputs`). ``convert=False`` keeps
        the arrays' storage dtype (the CUDA path's bfloat16 bits). A wrong shape raises
        ``ValueError`` naming the argument.
        """
        expected = {"grad_out": self.output_shape, "out": self.output_shape, "lse": self.lse_shape}
        arrays = {}
        for name, arr in (("grad_out", grad_out), ("out", out), ("lse", lse)):
            arr = as_float_array(arr, name) if convert else array_module(arr).asarray(arr)
            if tuple(arr.shape) != expected[name]:
                raise ValueError(f"{name} must have shape {expected[name]} "
                                 f"for query {self.lead + (self.heads, self.L, self.E)} "
                                 f"and value {self.lead + (self.kv_heads, self.S, self.Ev)}; "
                                 f"got {tuple(arr.shape)}")
            arrays[name] = arr
        layout = self.q.shape[:-1]  # (N, Hkv, G, L)
        return band_backward_inputs(self.nonfinite, self.band,
                                    arrays["grad_out"].reshape(layout + (self.Ev,)),
                                    arrays["out"].reshape(layout + (self.Ev,)),
                                    arrays["lse"].reshape(layout))

    def finish_backward(self, rows, dq, dk, dv):
        """NaN where the rule puts it, the caller's shapes restored.

        ``dq`` (N, Hkv, G, L, E), ``dk`` (N, Hkv, 1, S, E), ``dv`` (N, Hkv, 1, S, Ev), or any
        layout of the same sizes; ``rows`` from :meth:`backward_inputs`. Returns
        ``(..., Hq, L, E)``, ``(..., Hkv, S, E)``, ``(..., Hkv, S, Ev)``.
        """
        dq, dk, dv = dq.reshape(self.q.shape), dk.reshape(self.k.shape), dv.reshape(self.v.shape)
        dq, dk, dv = mark_band_backward(rows, self.band, dq, dk, dv)
        kv_lead = self.lead + (self.kv_heads,)
        return (dq.reshape(self.lead + (self.heads, self.L, self.E)),  # (..., Hq, L, E)
                dk.reshape(kv_lead + (self.S, self.E)),  # (..., Hkv, S, E)
                dv.reshape(kv_lead + (self.S, self.Ev)))  # (..., Hkv, S, Ev)

    def with_plan(self, plan):
        """The same arguments with another :class:`TilePlan` (a backend's own tiles)."""
        return dataclasses.replace(self, plan=plan)


def default_scale(E):
    """``1/sqrt(E)``; 1 for ``E = 0``, where every score is an empty dot product,
    0 whatever the scale."""
    return float(1.0 / np.sqrt(E)) if E > 0 else 1.0


def acc_dtype_of(dtype):
    """The dtype the arithmetic runs in: float32 for float16, the dtype itself otherwise."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.float16 else np.dtype(dtype)


def check_window(window):
    """``window`` as ``None`` or a pair of ``None``/non-negative ints; ``ValueError`` otherwise."""
    if window is None:
        return None
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise ValueError(f"window must be None or a pair (left, right); got {window!r}")
    for side, value in zip(("left", "right"), window, strict=True):
        if value is not None and (isinstance(value, (bool, np.bool_))
                                  or not isinstance(value, (int, np.integer)) or value < 0):
            raise ValueError(f"window {side} must be None or a non-negative int; got {value!r}")
    return tuple(None if w is None else int(w) for w in window)


def check_causal_align(causal_align):
    """``causal_align`` if it is ``"top_left"`` or ``"bottom_right"``; ``ValueError`` otherwise."""
    if not isinstance(causal_align, str) or causal_align not in CAUSAL_ALIGNS:
        raise ValueError(f"causal_align must be 'top_left' or 'bottom_right'; got {causal_align!r}")
    return causal_align


def _check_shapes(q, k, v, enable_gqa):
    """Raise ``ValueError`` naming the arguments unless q, k, v form one attention problem."""
    for a, n in ((q, "query"), (k, "key"), (v, "value")):
        check_ndim(a, n, 3, "(..., heads, length, head_dim)")
    shapes = tuple(tuple(a.shape) for a in (q, k, v))
    if not shapes[0][:-3] == shapes[1][:-3] == shapes[2][:-3]:
        raise ValueError(f"query, key and value must share their leading (batch) axes; got shapes "
                         f"{shapes[0]}, {shapes[1]}, {shapes[2]}")
    (hq, _, E), (hkv, S, Ek), (hv, Sv, _) = shapes[0][-3:], shapes[1][-3:], shapes[2][-3:]
    if (hv, Sv) != (hkv, S):
        raise ValueError(f"key (..., Hkv, S, E) and value (..., Hkv, S, Ev) disagree on Hkv or S; "
                         f"got shapes {shapes[1]} and {shapes[2]}")
    if Ek != E:
        raise ValueError(f"query and key must have the same head dim E; got shapes {shapes[0]} and "
                         f"{shapes[1]}")
    if hq != hkv and not enable_gqa:
        raise ValueError(f"query has {hq} heads and key/value {hkv}: pass enable_gqa=True for "
                         f"grouped-query attention")
    if (hkv == 0 and hq > 0) or (hkv > 0 and hq % hkv):
        raise ValueError(f"the query heads ({hq}) must be a multiple of the key/value heads "
                         f"({hkv}); got shapes {shapes[0]} and {shapes[1]}")


def attention_args(query, key, value, is_causal=False, scale=None, enable_gqa=False, *,
                   causal_align="top_left", window=None, block_q=DEFAULT_BLOCK,
                   block_k=DEFAULT_BLOCK, convert=True):
    """Validate the arguments of an attention call; return them as :class:`AttentionArgs`.

    Parameters
    ----------
    query, key, value, is_causal, scale, enable_gqa, causal_align, window, block_q, block_k
        As in :func:`attention_scratch.flash_attention`.
    convert : bool
        ``True``: the inputs become floating-point arrays (integers and bools float64;
        complex, object or string input raises ``TypeError``). ``False``: they are taken as
        they are, arrays in a kernel's storage dtype (the CUDA path passes bfloat16 as its
        uint16 bits); the caller has checked the dtype.

    Returns
    -------
    AttentionArgs
        With the rows that hold NaN or ±inf zeroed in ``q``, ``k``, ``v`` and listed in
        ``nonfinite``, so that no kernel ever meets a non-finite number.

    Shapes
    ------
    ``(..., Hq, L, E), (..., Hkv, S, E), (..., Hkv, S, Ev)`` (NumPy or CuPy) in; the kernel
    layout ``(N, Hkv, G, L, E), (N, Hkv, 1, S, E), (N, Hkv, 1, S, Ev)`` out.
    """
    scale = check_scale(scale)
    is_causal, enable_gqa = check_flag(is_causal, "is_causal"), check_flag(enable_gqa, "enable_gqa")
    causal_align = check_causal_align(causal_align)
    window = check_window(window)
    block_q, block_k = check_positive_int(block_q, "block_q"), check_positive_int(block_k,
                                                                                  "block_k")
    if convert:
        q, k, v = (as_float_array(a, n) for a, n in ((query, "query"), (key, "key"),
                                                     (value, "value")))
    else:
        q, k, v = (array_module(a).asarray(a) for a in (query, key, value))
    _check_shapes(q, k, v, enable_gqa)
    (hq, L, E), (hkv, S, _), Ev = q.shape[-3:], k.shape[-3:], v.shape[-1]
    lead = tuple(q.shape[:-3])
    n = int(np.prod(lead, dtype=np.int64))
    q = q.reshape((n, hkv, hq // max(hkv, 1), L,
                   E))  # (N, Hkv, G, L, E): head h reads kv head h // G
    k, v = k.reshape((n, hkv, 1, S, E)), v.reshape((n, hkv, 1, S, Ev))  # (N, Hkv, 1, S, ·)
    nonfinite = scan(q, k, v)  # None when all is finite
    if nonfinite is not None:
        q, k, v = zero_rows(q, nonfinite[0]), zero_rows(k, nonfinite[1]), zero_rows(v, nonfinite[1])
    dtype = np.result_type(q.dtype, k.dtype, v.dtype)
    return AttentionArgs(
        q=q, k=k, v=v, scale=default_scale(E) if scale is None else scale,
        band=integer_band(mask_band(L, S, is_causal, causal_align, window), L, S),
        dtype=dtype, acc_dtype=acc_dtype_of(dtype), lead=lead, heads=hq,
        nonfinite=nonfinite, plan=TilePlan((block_q, block_k), (block_q, block_k)))
