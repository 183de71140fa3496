"""NaN and infinities: "masked means absent", one rule for every attention path (CONVENTIONS.md).

The rule. Query row ``i`` *sees* key ``j`` when the mask lets it (causal, sliding window,
boolean mask, a float mask entry other than ``-inf``, padding). Then

* a row that sees no key has output 0, log-sum-exp ``+inf`` and gradient 0, whatever it holds;
* a row that sees a key holding NaN or ±inf (in ``K`` or ``V``), or whose own query holds one,
  or whose float mask holds NaN or ``+inf`` where it sees, is *poisoned*: its output and its
  log-sum-exp are NaN (PyTorch gives NaN there too, or ±inf, depending on the arithmetic);
* NaN or ±inf in a key or value a row does not see never reaches that row, forward or backward;
* backward: a poisoned row, or a row whose ``grad_out`` (or ``out``) holds NaN or ±inf, gets
  ``dq`` NaN, and every key it sees gets ``dk`` and ``dv`` NaN; every other gradient is that of
  the finite problem.

How. No kernel ever sees a non-finite number. :func:`scan` finds the rows of ``Q``, ``K`` and
``V`` holding one (one cheap pass, nothing more when everything is finite); the front end
zeroes them (:func:`zero_rows`), runs its kernel, and writes NaN where the rule says. The
rows and keys concerned come from the mask band with prefix sums on the flash paths
(:func:`band_sees`, :func:`band_seen_by`: O(L + S) per head, no (L, S) array) or from the
dense mask in scaled dot-product attention (:func:`dense_sees`, :func:`dense_seen_by`).
Every function works on NumPy and CuPy arrays, and on bfloat16 stored as uint16 bits.
"""
import numpy as np

from ._checks import array_module
from .bands import integer_band


def finite(x):
    """Elementwise "is finite", also for bfloat16 stored as its uint16 bits
    (exponent not all ones)."""
    xp = array_module(x)
    if x.dtype == np.uint16:
        return (x & 0x7F80) != 0x7F80
    return xp.isfinite(x)


def _all_finite(x):
    """True when every entry of ``x`` is finite: a maximum and a minimum, no temporary of
    ``x``'s size.

    NumPy's (and CuPy's) maximum is NaN when an entry is, ``+inf`` when one is; the minimum
    catches ``-inf``. Both reductions run in SIMD lanes: for (8, 2048, 64) float32 they took
    0.16 ms together where the float32 sum used before took 0.31 ms (2-core AMD EPYC), and
    they cannot overflow.
    """
    if x.size == 0:
        return True
    if x.dtype == np.uint16:
        return not bool((~finite(x)).any())
    xp = array_module(x)
    return bool(xp.isfinite(x.max())) and bool(xp.isfinite(x.min()))


def bad_rows(x):
    """``(..., n, d) -> (..., n)``: True where a row holds NaN or ±inf."""
    if x.shape[-1] == 0:
        return array_module(x).zeros(x.shape[:-1], dtype=bool)
    return ~finite(x).all(axis=-1)


def scan(q, k, v):
    """``None`` when ``q``, ``k``, ``v`` are finite, else ``(bad_q, bad_kv)``.

    Shapes: ``q`` (..., Lq, E), ``k`` (..., S, E), ``v`` (..., S, Ev) (any leading axes, e.g. the
    kernel layout (N, Hkv, G, L, E) and (N, Hkv, 1, S, ·)) -> ``bad_q`` (..., L),
    ``bad_kv`` (..., S).
    """
    if _all_finite(q) and _all_finite(k) and _all_finite(v):
        return None
    bad_q, bad_kv = bad_rows(q), bad_rows(k) | bad_rows(v)
    return (bad_q, bad_kv) if bool(bad_q.any()) or bool(bad_kv.any()) else None


def zero_rows(x, rows):
    """``x`` with the rows flagged in ``rows`` (..., n) set to 0 (``x`` itself when none is)."""
    if rows is None or not bool(rows.any()):
        return x
    return array_module(x).where(rows[..., None], 0, x).astype(x.dtype)


def nan_rows(x, rows):
    """``x`` (..., n, d) with the rows flagged in ``rows`` (..., n) set to NaN
    (``x`` itself when none is)."""
    if rows is None or not bool(rows.any()):
        return x
    nan = np.uint16(0x7FC0) if x.dtype == np.uint16 else np.nan  # bfloat16 stored as its bits
    return array_module(x).where(rows[..., None], nan, x).astype(x.dtype)


def _window(n_out, n_in, first, last):
    """For each of ``n_out`` positions the range ``first .. last``
    (inclusive) of ``n_in``, clipped; as arrays."""
    start = np.clip(first, 0, n_in)  # (n_out,)
    stop = np.clip(last + 1, 0, n_in)  # (n_out,): exclusive
    return start, np.maximum(stop, start)


def _count_in_ranges(flags, start, stop):
    """``flags`` (..., n) bool; for each range ``start[r] .. stop[r]-1`` whether a flag lies
    in it: (..., R)."""
    xp = array_module(flags)
    csum = xp.concatenate([xp.zeros(flags.shape[:-1] + (1,), dtype=np.int64),
                           xp.cumsum(flags, axis=-1, dtype=np.int64)], axis=-1)  # (..., n + 1)
    return (csum[..., xp.asarray(stop)] - csum[..., xp.asarray(start)]) > 0  # (..., R)


def _row_ranges(L, S, band):
    """The keys ``start[i] .. stop[i] - 1`` row ``i`` sees under the band ``lo <= j - i <= hi``."""
    lo, hi = integer_band(band, L, S)
    i = np.arange(L)  # (L,)
    return _window(L, S, i + lo, i + hi)


def band_has_key(L, S, band):
    """(L,) NumPy bool: which rows see at least one key."""
    start, stop = _row_ranges(L, S, band)
    return stop > start


def band_sees(bad_kv, L, S, band):
    """Which of ``L`` rows see any key, and which see a key flagged in ``bad_kv`` (..., S).

    The mask is the band ``lo <= j - i <= hi`` of :func:`attention_scratch.bands.mask_band`
    (``None`` or integer bounds).
    Returns ``has_key`` (L,) NumPy bool and ``sees_bad`` (..., L).
    """
    start, stop = _row_ranges(L, S, band)
    return stop > start, _count_in_ranges(bad_kv, start, stop)


def band_seen_by(rows, L, S, band):
    """Keys seen by any flagged row: ``rows`` (..., G, L) -> (..., 1, S)
    (any over the group axis G)."""
    lo, hi = integer_band(band, L, S)
    j = np.arange(S)  # (S,)
    start, stop = _window(S, L, j - hi, j - lo)
    return _count_in_ranges(rows.any(axis=-2, keepdims=True), start, stop)  # (..., 1, S)


def poisoned_band_rows(found, L, S, band):
    """The poisoned rows of a band-masked problem, ``(..., L)``, or ``None``;
    ``found`` from :func:`scan`."""
    if found is None:
        return None
    bad_q, bad_kv = found
    has_key, sees_bad = band_sees(bad_kv, L, S, band)
    xp = array_module(bad_q)
    return xp.asarray(has_key) & (bad_q | sees_bad)  # (..., L)


def dense_sees(visible, bad_kv):
    """``visible`` (..., L, S) bool, ``bad_kv`` (..., S) -> ``has_key``
    (..., L), ``sees_bad`` (..., L)."""
    return visible.any(axis=-1), (visible & bad_kv[..., None, :]).any(axis=-1)


def dense_seen_by(rows, visible):
    """Keys seen by any flagged row: ``rows`` (..., G, L), ``visible``
    (..., G, L, S) -> (..., 1, S)."""
    return (visible & rows[..., None]).any(axis=(-3, -2))[..., None, :]


def backward_rows(poisoned, grad_out, out, lse):
    """The rows whose backward inputs are not finite: poisoned in the forward, or a non-finite
    ``grad_out`` or ``out`` row, or a NaN ``lse``. ``(..., L)`` or ``None``; the arrays
    (..., L, ·)."""
    nan_lse = array_module(lse).isnan(lse)  # (..., L)
    if poisoned is None and _all_finite(grad_out) and _all_finite(out):  # the common case, fast
        return nan_lse if bool(nan_lse.any()) else None
    rows = bad_rows(grad_out) | bad_rows(out) | nan_lse  # (..., L)
    if poisoned is not None:
        rows = rows | poisoned
    return rows if bool(rows.any()) else None


def clean_backward_inputs(rows, grad_out, out, lse):
    """Zero ``grad_out`` and ``out`` and set ``lse = +inf`` on ``rows``: the kernel then treats them
    as rows without keys (no contribution, no NaN), and the caller writes NaN into their
    gradients."""
    if rows is None:
        return grad_out, out, lse
    xp = array_module(lse)
    return zero_rows(grad_out, rows), zero_rows(out, rows), xp.where(rows, np.inf,
                                                                     lse).astype(lse.dtype)


# The flash paths: a band mask, the kernel layout (N, Hkv, G, L, ·) for queries and
# (N, Hkv, 1, S, ·) for keys and values.

def mark_band_forward(found, band, out, lse):
    """``out`` (N, Hkv, G, L, Ev) and ``lse`` (N, Hkv, G, L) with the poisoned rows set to NaN.

    ``found`` is :func:`scan` of the inputs (``None``: nothing to do)."""
    if found is None:
        return out, lse
    L, S = out.shape[-2], found[1].shape[-1]
    rows = poisoned_band_rows(found, L, S, band)  # (N, Hkv, G, L)
    return nan_rows(out, rows), nan_rows(lse[..., None], rows)[..., 0]


def band_backward_inputs(found, band, grad_out, out, lse):
    """``(rows, grad_out, out, lse)``: the rows whose backward inputs are not finite (or ``None``)
    and the inputs with those rows cleaned (:func:`clean_backward_inputs`). Kernel layout."""
    L, S = out.shape[-2], (0 if found is None else found[1].shape[-1])
    poisoned = poisoned_band_rows(found, L, S, band) if found is not None else None
    rows = backward_rows(poisoned, grad_out, out, lse)  # (N, Hkv, G, L) or None
    return (rows,) + clean_backward_inputs(rows, grad_out, out, lse)


def mark_band_backward(rows, band, dq, dk, dv):
    """NaN into ``dq`` of the flagged rows that see a key and into ``dk``,
    ``dv`` of every key they see."""
    if rows is None:
        return dq, dk, dv
    L, S = dq.shape[-2], dk.shape[-2]
    rows = rows & array_module(rows).asarray(band_has_key(L, S, band))  # (N, Hkv, G, L)
    keys = band_seen_by(rows, L, S, band)  # (N, Hkv, 1, S)
    return nan_rows(dq, rows), nan_rows(dk, keys), nan_rows(dv, keys)
