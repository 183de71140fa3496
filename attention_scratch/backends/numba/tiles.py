"""Tile helpers shared by the Numba forward and backward kernels (chapter 12).

The mask is the integer band ``lo <= j - i <= hi`` of :mod:`attention_scratch.bands`
(``AttentionArgs.band``), so the compiled code only ever compares integers. The block
ranges and the full-tile test are that module's own functions, compiled here with
``njit``: the NumPy reference and these kernels run the same source. All loops here run
over one tile, which lives in the L1 cache.

A tile of query rows ``i0..`` and keys ``j0..`` is stored either *query-major*,
shape ``(bq, bk)`` with ``t[r, c]`` for query ``i0 + r`` and key ``j0 + c`` (the
NumPy reference's layout), or *key-major*, its transpose ``(bk, bq)``. Which one a
kernel uses is decided by BLAS: OpenBLAS runs some forms of a product more slowly
than others (``P V`` read through a transposed view of a key-major tile was 14%
slower than ``P @ V`` on a query-major one, 256 × 256 tiles, chapter 12), so each
kernel stores its tiles so that its products are of the fast kinds (see the kernels'
docstrings). Every loop below runs along the contiguous axis, which LLVM turns into
SIMD code; reductions along a row use :func:`maximum` and sums that ``reassoc`` lets
LLVM split into vector lanes.
"""
from llvmlite import binding as llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ... import bands
from .exp import LOOP_FLAGS, tile_exp

# The block arithmetic of the NumPy reference, compiled: one source for both paths.
key_blocks = njit(cache=True)(bands.key_blocks)
query_blocks = njit(cache=True)(bands.query_blocks)
tile_is_full = njit(cache=True)(bands.tile_is_full)


# LLVM 20 and later (Numba 0.62 and later) compile llvm.maximum on x86; LLVM 14 and 15 (Numba
# 0.60, 0.61) stop the process with "Cannot select: fmaximum". Those get the same function as a
# compare and a select, correct but not vectorised.
VECTOR_MAXIMUM = llvm.llvm_version_info >= (20,)


@intrinsic
def maximum(typingctx, a, b):
    """The larger of two floats of one type, NaN if either is NaN: LLVM's ``llvm.maximum``
    (IEEE 754-2019 ``maximum``).

    A loop ``m = maximum(m, row[c])`` compiles to a vectorised reduction (8 float32 lanes with
    AVX2). The same loop with ``max`` or ``np.maximum`` stays scalar: both compile to a compare
    and a select, whose result depends on the order of the operands when one is NaN, so LLVM
    may not split the loop into lanes without ``nnan``, a flag our masks and NaN rules forbid.
    Where LLVM is too old for ``llvm.maximum`` (:data:`VECTOR_MAXIMUM` false) it is built from
    a compare and a select instead, and the loop stays scalar.
    """
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, signature, args):
        x, y = args
        if not VECTOR_MAXIMUM:
            larger = builder.select(builder.fcmp_ordered(">", x, y), x, y)
            return builder.select(builder.fcmp_unordered("uno", x, y), builder.fadd(x, y), larger)
        kind = x.type
        name = "llvm.maximum.f32" if kind == ir.FloatType() else "llvm.maximum.f64"
        llvm_max = cgutils.get_or_insert_function(builder.module,
                                                  ir.FunctionType(kind, [kind, kind]), name)
        return builder.call(llvm_max, args)

    return a(a, b), codegen


@njit(fastmath=LOOP_FLAGS, cache=True)
def row_max(row, start):
    """``max(start, row[0], row[1], ...)``, NaN if any of them is NaN; ``row`` 1-d, contiguous."""
    m = start
    for c in range(row.shape[0]):
        m = maximum(m, row[c])
    return m


@njit(cache=True)
def zigzag(t, n):
    """The block that work item ``t`` of ``n`` takes: ``n-1, 0, n-2, 1, ...`` (a permutation of
    ``range(n)``).

    Under a causal mask block ``n-1`` is the longest and block 0 the shortest. The
    parallel loop hands each thread a contiguous run of items, and pairing long
    with short blocks gives every run about the same amount of work.
    """
    return n - 1 - t // 2 if t % 2 == 0 else t // 2


@njit(cache=True)
def tile_view(buffer, rows, cols):
    """The first ``rows·cols`` entries of a flat buffer as a C-contiguous ``(rows, cols)`` tile."""
    return buffer[:rows * cols].reshape((rows, cols))


@njit(fastmath=LOOP_FLAGS, cache=True)
def mask_tile(tile, key_major, i0, j0, lo, hi, value):
    """Write ``value`` where query ``i0 + r`` may not see key ``j0 + c``.

    ``tile`` is (bk, bq) if ``key_major`` else (bq, bk). Along a row of the tile the offset
    ``j - i`` moves by one per entry, so the entries outside the band ``lo <= j - i <= hi``
    are two runs, one at each end of the row: each row fills its two runs with plain stores.
    (A loop that tests every entry and stores where the test holds compiles to a masked store,
    ``vmaskmovps``, which the AMD EPYC of chapter 12 runs far slower than a plain one.)
    """
    rows, cols = tile.shape
    for a in range(rows):
        if key_major:  # entry b: key j0 + a, query i0 + b, so j - i = (j0 + a - i0) - b
            top = j0 + a - i0
            head_end, tail_start = top - hi, top - lo + 1  # j - i > hi before, < lo from
        else:  # entry b: query i0 + a, key j0 + b, so j - i = (j0 - i0 - a) + b
            left = j0 - i0 - a
            head_end, tail_start = lo - left, hi - left + 1  # j - i < lo before, > hi from
        head_end = min(max(head_end, 0), cols)
        for b in range(head_end):  # the run at the start of the row
            tile[a, b] = value
        for b in range(max(min(tail_start, cols), head_end), cols):  # the run at its end
            tile[a, b] = value


@njit(fastmath=LOOP_FLAGS, cache=True)
def probs_from_lse(t, key_major, scale, lse, full, i0, j0, lo, hi):
    """In place: ``t <- exp(t·scale - lse)``, 0 outside the band; ``lse`` (bq,).

    ``t`` is (bk, bq) if ``key_major`` else (bq, bk). A query with ``lse = +inf``
    (nothing to attend to) gets 0 everywhere. Masked entries are overwritten
    after the exponential, so a NaN there cannot leak.
    """
    rows, cols = t.shape
    if key_major:
        for c in range(rows):
            for r in range(cols):
                t[c, r] = tile_exp(t[c, r] * scale - lse[r])
    else:
        for r in range(rows):
            row_lse = lse[r]
            for c in range(cols):
                t[r, c] = tile_exp(t[r, c] * scale - row_lse)
    if not full:
        mask_tile(t, key_major, i0, j0, lo, hi, 0.0)


@njit(fastmath=LOOP_FLAGS, cache=True)
def dscores_in_place(p, dp, key_major, d):
    """In place: ``dp <- p ∘ (dp - d)``, the softmax backward of one tile; ``d`` (bq,).

    ``p`` and ``dp`` are (bk, bq) if ``key_major`` else (bq, bk).
    """
    rows, cols = p.shape
    if key_major:
        for c in range(rows):
            for r in range(cols):
                dp[c, r] = p[c, r] * (dp[c, r] - d[r])
    else:
        for r in range(rows):
            d_r = d[r]
            for c in range(cols):
                dp[r, c] = p[r, c] * (dp[r, c] - d_r)


@njit(fastmath=LOOP_FLAGS, cache=True)
def add_into(acc, x):
    """``acc += x`` for 2-d arrays of the same shape (the BLAS products write to a scratch tile)."""
    for r in range(acc.shape[0]):
        for c in range(acc.shape[1]):
            acc[r, c] += x[r, c]
