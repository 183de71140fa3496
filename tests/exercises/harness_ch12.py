"""Helpers of the chapter 12 graded tests that run beside the student's code.

Compiling a student's function with Numba has to happen in the process that
holds it, so the tests ask that process to run these helpers
(``ch.harness("tests/exercises/harness_ch12.py:name", ch.function, ...)``). They
compile as the library does and return plain data (arrays, strings, counts,
lists of calls); every judgement stays in the test. The proxy's check that an
argument is left unchanged does not apply here, so these helpers report which
inputs the student's code changed.
"""
import re
import types
import warnings

import numba
import numpy as np
from numba.core.errors import TypingError
from numba.core.registry import CPUDispatcher

from attention_scratch.backends.numba.exp import EXP_FLAGS, LOOP_FLAGS
from attention_scratch.backends.numba.forward import forward_query_block
from attention_scratch.backends.numba.register_tile import pack_columns, pack_heads

_compiled = {}


def compiled(fn, **options):
    """The student's function compiled by Numba (as it is, if it is already compiled), once per options."""
    key = (id(fn), repr(sorted(options.items())))
    if key not in _compiled:
        _compiled[key] = fn if isinstance(fn, CPUDispatcher) else numba.njit(**options)(fn)
    return _compiled[key]


def _call(fn, name, dtype, *args):
    """Call a compiled function; a typing error says, first, that Numba could not compile it for ``dtype``."""
    try:
        return fn(*args)
    except TypingError as error:
        lines = str(error).strip().splitlines()
        raise TypeError(f"Numba could not compile {name} for {np.dtype(dtype).name} arrays (do all the "
                        f"buffers you create have the dtype of q, dtype=q.dtype?): "
                        + " / ".join(line.strip() for line in lines[:6] if line.strip())) from None


def _changed(named, before):
    """Names of the arrays in ``named`` that differ from their copies in ``before`` (NaN equals NaN)."""
    return [name for name, a in named.items() if not np.array_equal(a, before[name], equal_nan=True)]


def _exp_loop(exp_f32):
    f = compiled(exp_f32, fastmath=EXP_FLAGS)
    f(np.float32(0.5))  # an untouched stub raises NotImplementedError here, before the loop is typed
    if ("loop", id(f)) not in _compiled:
        @numba.njit(fastmath=LOOP_FLAGS)
        def loop(x, out):
            for i in range(x.shape[0]):
                out[i] = f(x[i])
            return out

        _compiled[("loop", id(f))] = loop
    return f, _compiled[("loop", id(f))]


def exp_values(exp_f32, x):
    """The student's exp of every entry of the float32 array ``x``, in a compiled loop."""
    _, loop = _exp_loop(exp_f32)
    return loop(x, np.empty_like(x))


def exp_code_facts(exp_f32):
    """What the compiled code shows: the return type for float32, libm calls, vector FMAs."""
    f, loop = _exp_loop(exp_f32)
    loop(np.ones(8, np.float32), np.empty(8, np.float32))
    asm = loop.inspect_asm(loop.signatures[0])
    return {"return_type": str(f.nopython_signatures[0].return_type),
            "calls_libm_exp": "expf" in asm or "exp@" in asm,
            "vector_fma": bool(re.search(r"vfmadd\w+\s+%[yz]mm", asm))}


def forward(forward_parallel, q, k, v, scale, lo, hi, block_q, block_k):
    """``(out, lse, parallel loops Numba found, inputs changed)`` of the student's parallel forward loop.

    ``out`` and ``lse`` start as NaN in the dtype of ``q``, so rows never written stay NaN. The
    keys and values are packed as the library packs them (``pack_heads``, ``pack_columns``).
    """
    fp = compiled(forward_parallel, parallel=True, fastmath=LOOP_FLAGS)
    out = np.full(q.shape[:2] + (v.shape[2],), np.nan, dtype=q.dtype)  # (Hq', L, Ev)
    lse = np.full(q.shape[:2], np.nan, dtype=q.dtype)  # (Hq', L)
    kp, vp = pack_heads(k, block_k), pack_columns(v)  # (Hkv', R, w), (Hkv', m, S, w)
    inputs = {"q": q, "k": kp, "v": vp}
    before = {name: a.copy() for name, a in inputs.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", numba.NumbaPerformanceWarning)
        _call(fp, "forward_parallel", q.dtype, q, kp, vp, out, lse, q.dtype.type(scale), lo, hi, block_q, block_k)
    diagnostics = fp.get_metadata(fp.signatures[0])["parfor_diagnostics"]
    return out, lse, len(diagnostics.initial_parfors), _changed(inputs, before)


def _index_in(view, whole):
    """Which entry of ``whole``'s first axis ``view`` is (a view ``whole[h]``), or None."""
    if not isinstance(view, np.ndarray) or view.shape != whole.shape[1:]:
        return None
    offset = view.__array_interface__["data"][0] - whole.__array_interface__["data"][0]
    h, rest = divmod(offset, whole.strides[0])
    return int(h) if rest == 0 and 0 <= h < whole.shape[0] else None


class _Module:
    """A stand-in for a module with some of its attributes replaced (``numba.prange`` written in full)."""

    def __init__(self, module, **replaced):
        self._module, self._replaced = module, replaced

    def __getattr__(self, name):
        return self._replaced[name] if name in self._replaced else getattr(self._module, name)


def forward_calls(forward_parallel, q, k, v, scale, lo, hi, block_q, block_k):
    """The calls the student's loop makes to ``forward_query_block``, in the loop's order.

    The function runs as plain Python (``prange`` is ``range`` there, so the order
    is the order of the work items) with ``forward_query_block`` replaced by a
    recorder and ``prange`` by a range that notes which of its iterations is
    running. Each call is ``[q head, k head, v head, out head, lse head, i0, i1,
    scale, lo, hi, block_k, region, item]``, heads found from the views passed
    (None if an argument is not a head of the array); ``region`` numbers the
    ``prange`` loops as they start and ``item`` is the iteration of that loop
    the call ran in (both None outside any ``prange``). Numba hands each thread a
    contiguous run of one ``prange``'s iterations; a ``prange`` inside another
    runs serially, inside its outer iteration.
    """
    fn = forward_parallel.py_func if isinstance(forward_parallel, CPUDispatcher) else forward_parallel
    out = np.zeros(q.shape[:2] + (v.shape[2],), dtype=q.dtype)
    k, v = pack_heads(k, block_k), pack_columns(v)  # what the library passes
    lse = np.zeros(q.shape[:2], dtype=q.dtype)
    calls = []
    running = {"region": None, "item": None}
    regions = [0]

    def recorder(q_h, k_h, v_h, out_h, lse_h, i0, i1, scale_, lo_, hi_, block_k_):
        calls.append([_index_in(q_h, q), _index_in(k_h, k), _index_in(v_h, v), _index_in(out_h, out),
                      _index_in(lse_h, lse), int(i0), int(i1), float(scale_), int(lo_), int(hi_), int(block_k_),
                      running["region"], running["item"]])

    def noting_prange(*bounds):
        regions[0] += 1
        region, outer = regions[0], dict(running)
        try:
            for i in range(*bounds):
                if outer["region"] is None:  # an inner prange runs inside its outer iteration
                    running.update(region=region, item=int(i))
                yield i
        finally:
            running.update(outer)

    names = dict(fn.__globals__)
    for name, value in fn.__globals__.items():
        if value is forward_query_block or getattr(value, "py_func", None) is getattr(forward_query_block, "py_func"):
            names[name] = recorder
        elif value is numba.prange:
            names[name] = noting_prange
        elif value is numba:
            names[name] = _Module(numba, prange=noting_prange)
    plain = types.FunctionType(fn.__code__, names, fn.__name__, fn.__defaults__, fn.__closure__)
    plain(q, k, v, out, lse, q.dtype.type(scale), lo, hi, block_q, block_k)
    return calls


def dq_blocks(dq_query_block, q, k, v, d_out, lse, d, scale, lo, hi, block_q, block_k):
    """``(dq, rows written outside the block, inputs changed)`` of the student's dQ pass for one head.

    ``dq`` starts as NaN in the dtype of ``q``; the blocks of ``block_q`` rows are
    called last one first, and after each call every row outside ``i0..i1-1`` is
    compared with what it held before: ``outside`` lists ``(i0, i1, row)`` of rows
    that a call changed although they are not its own.
    """
    fn = compiled(dq_query_block, fastmath=LOOP_FLAGS)
    L = q.shape[0]
    dq = np.full(q.shape, np.nan, dtype=q.dtype)  # (L, E)
    kp = pack_heads(k[None], block_k)[0]  # (R, w): the keys packed as the library packs them
    inputs = {"q": q, "k": k, "kp": kp, "v": v, "d_out": d_out, "lse": lse, "d": d}
    before = {name: a.copy() for name, a in inputs.items()}
    outside = []
    for i0 in reversed(range(0, L, block_q)):
        i1 = min(i0 + block_q, L)
        old = dq.copy()
        _call(fn, "dq_query_block", q.dtype, q, k, kp, v, d_out, lse, d, dq, i0, i1, q.dtype.type(scale), lo,
              hi, block_k)
        rows = np.ones(L, dtype=bool)
        rows[i0:i1] = False
        moved = ~np.all((dq == old) | (np.isnan(dq) & np.isnan(old)), axis=1) & rows  # (L,)
        outside.extend((i0, i1, int(r)) for r in np.flatnonzero(moved)[:3])
    return dq, outside, _changed(inputs, before)
