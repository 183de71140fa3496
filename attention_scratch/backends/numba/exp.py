"""A vectorisable exponential for the Numba kernels (chapter 12).

``np.exp`` inside a Numba loop compiles to a call of the C library's ``expf``,
one element at a time: LLVM cannot turn a loop with an opaque call into SIMD
code. The flash kernel spends most of its non-BLAS time in that loop, so we
write the exponential ourselves from operations LLVM can vectorise:

1. range reduction: ``x = n·ln 2 + r`` with ``n = round(x / ln 2)`` and
   ``|r| <= ln 2 / 2``, computed as ``r = x - n·ln2_hi - n·ln2_lo``
   (Cody and Waite, 1980) so that ``r`` keeps full precision;
2. a polynomial: ``e^r`` by its Taylor series in Horner form (degree 7 for
   float32, 12 for float64: the first omitted term is below the rounding error; the
   kernels' :func:`tile_exp_f32` uses a minimax polynomial of degree 5 instead);
3. reconstruction: ``e^x = 2^n · e^r``, where ``2^n`` is built from its bits
   (exponent field ``n + bias``), as ``2^(n-1)·2`` so that ``n = 128`` (float32)
   or ``n = 1024`` (float64) still reaches the largest finite numbers.

Inputs below ``XMIN`` (so ``-inf``) give exactly 0 (results that would be
subnormal are flushed to 0), inputs above ``XMAX`` give ``+inf``, NaN stays NaN.
Every step is a compare-and-select, so the loop has no branch.

The fast-math flags are chosen, not blanket: ``fastmath=True`` adds ``nnan``
and ``ninf``, which let LLVM assume no infinities, yet ``-inf`` is how a masked
score is written. :data:`EXP_FLAGS` allows fused multiply-adds (``contract``),
ignoring the sign of zero (``nsz``), approximate reciprocals (``arcp``) and
approximate library functions (``afn``); it leaves out ``reassoc``, which would
let LLVM fold ``x - n·hi - n·lo`` into ``x - n·(hi + lo)`` and undo the
Cody-Waite split. :data:`LOOP_FLAGS` adds ``reassoc`` for the kernels' loops,
where it lets LLVM vectorise the row sums and row maxima.
"""
import math

import numpy as np
from numba import njit, types
from numba.extending import intrinsic, overload

from .kernel_cache import ensure_fresh

# Every kernel module imports this one first: drop cached kernels built from older sources
# before any of them is loaded (Numba checks only each function's own file; see kernel_cache).
ensure_fresh()

EXP_FLAGS = {"nsz", "arcp", "contract", "afn"}
LOOP_FLAGS = EXP_FLAGS | {"reassoc"}

LN2 = math.log(2.0)
LOG2E = 1.0 / LN2
# float32: ln2_hi has 10 significant bits, so n·ln2_hi is exact for |n| <= 2^14.
LN2_HI_F32, LN2_LO_F32 = 0.693359375, -2.12194440e-4
# float64 (fdlibm): ln2_hi has 32 significant bits.
LN2_HI_F64, LN2_LO_F64 = 6.93147180369123816490e-01, 1.90821492927058770002e-10
# n runs from -125 to 128 (float32) and -1021 to 1024 (float64); 2^(n-1) is a normal number.
XMIN_F32, XMAX_F32 = -125.0 * LN2, 128.0 * LN2
XMIN_F64, XMAX_F64 = -1021.0 * LN2, 1024.0 * LN2


@intrinsic
def int_bits_as_float(typingctx, bits):
    """Reinterpret the bits of an int32 as a float32, or of an int64 as a float64 (no
    conversion)."""
    if bits == types.int32:
        result = types.float32
    elif bits == types.int64:
        result = types.float64
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(result))

    return result(bits), codegen


@njit(fastmath=EXP_FLAGS, cache=True)
def pow2_f32(n):
    """``2.0**n`` as float32 for a whole number ``n`` (a float32) in ``[-126, 127]``, from its
    bits."""
    return int_bits_as_float(np.int32((np.int32(n) + 127) << 23))


@njit(fastmath=EXP_FLAGS, cache=True)
def pow2_f64(n):
    """``2.0**n`` as float64 for a whole number ``n`` (a float64) in ``[-1022, 1023]``, from its
    bits."""
    return int_bits_as_float(np.int64((np.int64(n) + 1023) << 52))


# BEGIN EXERCISE 12.1 (3 points): a vectorisable float32 exponential
# uses: from attention_scratch.backends.numba.exp import pow2_f32
def exp_f32(x):
    """``e**x`` for a float32 ``x`` from operations LLVM can vectorise (no call to ``expf``).

    Steps: clamp ``x`` to ``[XMIN, XMAX]`` = ``[-125 ln2, 128 ln2]``;
    ``n = floor(x·log2(e) + 1/2)``;
    ``r = (x - n·ln2_hi) - n·ln2_lo`` with ``ln2_hi = 0.693359375`` and ``ln2_lo = -2.12194440e-4``;
    ``p = Σ_{k=0..7} r^k / k!`` in Horner form; the result is ``p · pow2_f32(n - 1) · 2``.
    Then the special cases, as selects: ``x < XMIN`` (``-inf`` included) gives 0, ``x > XMAX``
    gives ``+inf``, NaN gives NaN; ``x`` equal to an end of the range is inside it. The relative
    error stays within 2 eps of float32 over the whole range, and only rounding may cause it: the
    tests also look for the systematic error that a polynomial of degree 6 leaves. Keep every
    constant a ``np.float32`` so the arithmetic stays in float32 (a Python float would promote it
    to float64 and halve the SIMD width).
    """
    # BEGIN SOLUTION
    xc = min(max(x, np.float32(-86.64339)), np.float32(88.72284))  # [XMIN, XMAX]; NaN: last line
    n = np.floor(xc * np.float32(1.442695) + np.float32(0.5))  # nearest whole number to x / ln2
    r = (xc - n * np.float32(0.693359375)) - n * np.float32(-2.12194440e-4)  # |r| <= ln2 / 2
    p = np.float32(1.0 / 5040.0)  # Horner: 1 + r(1 + r/2(1 + r/3(...)))
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    y = p * pow2_f32(n - np.float32(1.0)) * np.float32(2.0)
    y = np.float32(0.0) if x < np.float32(-86.64339) else y  # -inf, and results below 2^-125
    y = np.float32(np.inf) if x > np.float32(88.72284) else y
    return x if x != x else y  # NaN in, NaN out
    # END SOLUTION


# END EXERCISE


exp_f32 = njit(fastmath=EXP_FLAGS, cache=True)(exp_f32)


@njit(fastmath=EXP_FLAGS, cache=True)
def taylor_exp_f64(r):
    """``e**r`` for ``|r| <= ln2 / 2`` by its Taylor series of degree 12, in Horner form (the
    first omitted term, ``r^13/13!``, is below float64's rounding error)."""
    p = 2.08767569878681e-09  # 1/12!
    p = p * r + 2.505210838544172e-08  # 1/11!
    p = p * r + 2.755731922398589e-07  # 1/10!
    p = p * r + 2.7557319223985893e-06  # 1/9!
    p = p * r + 2.48015873015873e-05  # 1/8!
    p = p * r + 0.0001984126984126984  # 1/7!
    p = p * r + 0.001388888888888889  # 1/6!
    p = p * r + 0.008333333333333333  # 1/5!
    p = p * r + 0.041666666666666664  # 1/4!
    p = p * r + 0.16666666666666666  # 1/3!
    p = p * r + 0.5  # 1/2!
    p = p * r + 1.0  # 1/1!
    p = p * r + 1.0  # 1/0!
    return p


@njit(fastmath=EXP_FLAGS, cache=True)
def exp_f64(x):
    """``e**x`` for a float64 ``x``, vectorisable: :func:`exp_f32`'s steps with a degree-12
    polynomial."""
    xc = min(max(x, XMIN_F64), XMAX_F64)  # NaN -> XMIN
    n = np.floor(xc * LOG2E + 0.5)
    r = (xc - n * LN2_HI_F64) - n * LN2_LO_F64  # |r| <= ln2 / 2
    p = taylor_exp_f64(r)
    y = p * pow2_f64(n - 1.0) * 2.0
    y = 0.0 if x < XMIN_F64 else y
    y = np.inf if x > XMAX_F64 else y
    return x if x != x else y


# The kernels' exponential. Inside a tile loop the three selects of exp_f32 (0 below
# XMIN, +inf above XMAX, NaN kept) cost as much as a third of the polynomial: the loop is
# bound by the vector units, and each select is one or two more instructions per 8 lanes.
# Clamping to a slightly wider range makes them unnecessary: n = -127 (float32) is the
# exponent field 0, so 2^n is the bit pattern of +0.0 and the product is exactly 0, and
# n = 128 is the field 255, the pattern of +inf; NaN fails both comparisons of the clamp,
# passes through, and makes r, p and the product NaN.
TILE_XMIN_F32, TILE_XMAX_F32 = -127.0 * LN2, 128.0 * LN2  # n = -127 .. 128
TILE_XMIN_F64, TILE_XMAX_F64 = -1023.0 * LN2, 1024.0 * LN2  # n = -1023 .. 1024


# The kernels' polynomial for e^r on |r| <= ln2 / 2: degree 5, its coefficients chosen to make the
# largest *relative* error as small as possible (a minimax fit with p(0) = 1 kept exact; chapter 12
# fits it again and checks these numbers). With these float32 coefficients it errs by 9.5e-8 at
# most, 0.80 eps of float32, where the Taylor polynomial of the same degree errs by 3.2e-6; two
# multiply-adds fewer than degree 7 make the tile loop's exponential about a tenth cheaper.
TILE_POLY_F32 = (1.0, 0.9999997019767761, 0.4999915063381195, 0.1666763573884964,
                 0.04189793020486832, 0.008290315046906471)


@njit(fastmath=EXP_FLAGS, cache=True)
def shifted_exp_f32(x):
    """``e**x`` for a float32 ``x <= 0``, a score minus its row's running maximum: the kernels'
    exponential without its upper clamp (:func:`tile_exp_f32`).

    The online softmax of the forward pass only ever asks for ``e^(s - m)`` with ``m`` the
    largest score so far, so ``x <= 0``, ``-inf`` for a masked score, or NaN. Its loop runs one
    compare and one select fewer per 8 lanes than with both clamps, about a fifth faster on
    the AMD EPYC of chapter 12. Above ``127.5·ln2`` the result is meaningless (the exponent
    field overflows): everything else must call :func:`tile_exp_f32`.
    """
    xc = np.float32(TILE_XMIN_F32) if x < np.float32(TILE_XMIN_F32) else x  # NaN passes
    n = np.floor(xc * np.float32(LOG2E) + np.float32(0.5))  # -127 .. 0
    r = (xc - n * np.float32(LN2_HI_F32)) - n * np.float32(LN2_LO_F32)  # |r| <= ln2 / 2
    p = np.float32(TILE_POLY_F32[5])  # Horner form
    p = p * r + np.float32(TILE_POLY_F32[4])
    p = p * r + np.float32(TILE_POLY_F32[3])
    p = p * r + np.float32(TILE_POLY_F32[2])
    p = p * r + np.float32(TILE_POLY_F32[1])
    p = p * r + np.float32(TILE_POLY_F32[0])
    return p * int_bits_as_float(np.int32((np.int32(n) + 127) << 23))  # p·2^n; 0 at n = -127


@njit(fastmath=EXP_FLAGS, cache=True)
def tile_exp_f32(x):
    """``e**x`` for a float32 ``x``: :func:`exp_f32`'s reduction, the minimax polynomial
    :data:`TILE_POLY_F32` of degree 5, and the special cases folded into the clamp (the kernels'
    exponential): :func:`shifted_exp_f32` after an upper clamp.

    Within 2 eps of ``e**x`` wherever the result is a normal float (``exp_f32``: 1 eps), except
    that results between ``2^-126.5`` and ``2^-125`` are kept (subnormal) instead of flushed to 0;
    ``-inf`` gives 0 and NaN gives NaN. Above ``127.5·ln2 ≈ 88.38`` it gives ``+inf``, where
    :func:`exp_f32` still reaches the largest floats: the kernels never ask.
    """
    xc = np.float32(TILE_XMAX_F32) if x > np.float32(TILE_XMAX_F32) else x  # NaN passes
    return shifted_exp_f32(xc)  # n = 128 at the clamp: the bits of +inf


@njit(fastmath=EXP_FLAGS, cache=True)
def shifted_exp_f64(x):
    """``e**x`` for a float64 ``x <= 0``: :func:`tile_exp_f64` without its upper clamp (see
    :func:`shifted_exp_f32`)."""
    xc = TILE_XMIN_F64 if x < TILE_XMIN_F64 else x  # NaN passes
    n = np.floor(xc * LOG2E + 0.5)  # -1023 .. 0
    r = (xc - n * LN2_HI_F64) - n * LN2_LO_F64  # |r| <= ln2 / 2
    p = taylor_exp_f64(r)
    return p * int_bits_as_float(np.int64((np.int64(n) + 1023) << 52))


@njit(fastmath=EXP_FLAGS, cache=True)
def tile_exp_f64(x):
    """``e**x`` for a float64 ``x``: :func:`tile_exp_f32`'s clamp with :func:`exp_f64`'s
    polynomial; ``+inf`` from ``1023.5·ln2``, exactly 0 below ``-1023.5·ln2``."""
    xc = TILE_XMAX_F64 if x > TILE_XMAX_F64 else x  # NaN passes
    return shifted_exp_f64(xc)


def _scalar_exp(name, f32, f64, doc):
    """A function ``name(x)`` for Numba code that runs ``f32`` on a float32 and ``f64`` on a
    float64 (an ``overload``); called from Python it is ``np.exp``."""

    def stand_in(x):
        return np.exp(x)

    stand_in.__name__ = stand_in.__qualname__ = name
    stand_in.__doc__ = doc

    @overload(stand_in, inline="never", fastmath=EXP_FLAGS)
    def _pick(x):
        if x == types.float32:
            return lambda x: f32(x)
        if x == types.float64:
            return lambda x: f64(x)
        return None

    return stand_in


fast_exp = _scalar_exp("fast_exp", exp_f32, exp_f64, """``e**x`` for a float32 or float64 scalar
    inside Numba code (:func:`exp_f32` or :func:`exp_f64`).""")


@njit(fastmath=LOOP_FLAGS, cache=True)
def exp_array(x, out):
    """``out[i] = fast_exp(x[i])`` over 1-d arrays: the loop LLVM vectorises (used to measure
    it)."""
    for i in range(x.shape[0]):
        out[i] = fast_exp(x[i])
    return out


@njit(fastmath=LOOP_FLAGS, cache=True)
def libm_exp_array(x, out):
    """``out[i] = np.exp(x[i])``: the same loop with the C library's exp, one call per element."""
    for i in range(x.shape[0]):
        out[i] = np.exp(x[i])
    return out


tile_exp = _scalar_exp("tile_exp", tile_exp_f32, tile_exp_f64, """``e**x`` inside the kernels'
    tile loops, float32 or float64 (:func:`tile_exp_f32` or :func:`tile_exp_f64`).""")
shifted_exp = _scalar_exp("shifted_exp", shifted_exp_f32, shifted_exp_f64, """``e**x`` for
    ``x <= 0`` (or NaN) in the forward pass's online softmax, float32 or float64
    (:func:`shifted_exp_f32` or :func:`shifted_exp_f64`).""")


@njit(fastmath=LOOP_FLAGS, cache=True)
def tile_exp_array(x, out):
    """``out[i] = tile_exp(x[i])``: :func:`exp_array`'s loop with the kernels' exponential."""
    for i in range(x.shape[0]):
        out[i] = tile_exp(x[i])
    return out


@njit(fastmath=LOOP_FLAGS, cache=True)
def shifted_exp_array(x, out):
    """``out[i] = shifted_exp(x[i])``: :func:`exp_array`'s loop with the forward pass's
    exponential, for ``x <= 0``."""
    for i in range(x.shape[0]):
        out[i] = shifted_exp(x[i])
    return out
