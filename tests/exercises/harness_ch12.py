"""Helpers of the chapter 12 graded tests that run beside the student's code.

Compiling a student's function with Numba has to happen in the process that
holds it, so the tests ask that process to run these helpers
(``ch.harness("tests/exercises/harness_ch12.py:name", ch.function, ...)``). They
compile as the library does and return plain data (arrays, strings, counts);
every judgement stays in the test.
"""
import re
import warnings

import numba
import numpy as np
from numba.core.registry import CPUDispatcher

from attention_scratch.backends.numba_exp import EXP_FLAGS, LOOP_FLAGS

_compiled = {}


def compiled(fn, **options):
    """The student's function compiled by Numba (as it is, if it is already compiled), once per options."""
    key = (id(fn), repr(sorted(options.items())))
    if key not in _compiled:
        _compiled[key] = fn if isinstance(fn, CPUDispatcher) else numba.njit(**options)(fn)
    return _compiled[key]


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
    """``(out, lse, number of parallel loops Numba found)`` of the student's parallel forward loop."""
    fp = compiled(forward_parallel, parallel=True, fastmath=LOOP_FLAGS)
    out = np.full(q.shape[:2] + (v.shape[2],), np.nan)
    lse = np.full(q.shape[:2], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", numba.NumbaPerformanceWarning)
        fp(q, k, v, out, lse, scale, lo, hi, block_q, block_k)
    diagnostics = fp.get_metadata(fp.signatures[0])["parfor_diagnostics"]
    return out, lse, len(diagnostics.initial_parfors)


def dq_blocks(dq_query_block, q, k, v, d_out, lse, d, scale, lo, hi, block_q, block_k):
    """dQ of one head written by the student's dQ pass, called block by block of ``block_q`` rows."""
    fn = compiled(dq_query_block, fastmath=LOOP_FLAGS)
    L = q.shape[0]
    dq = np.full(q.shape, np.nan)
    for i0 in range(0, L, block_q):
        fn(q, k, v, d_out, lse, d, dq, i0, min(i0 + block_q, L), scale, lo, hi, block_k)
    return dq
