"""Our own tile product for the Numba kernels: a block of the output held in vector registers
(chapter 12).

BLAS reaches its speed by computing ``C = A B`` in small blocks of ``C`` that stay in the
processor's vector registers for the whole sum over the shared dimension (Goto and van de
Geijn, 2008): each step loads one short row of ``B`` into two vectors, broadcasts one entry
of ``A`` per row of the block, and does one fused multiply-add per (row, vector). With AVX2's
16 vector registers a block of 6 rows by 2 vectors (6 × 16 float32) fits: 12 accumulators, 2
loaded vectors, 1 broadcast; BLIS's kernel for these processors uses the same shape (Van Zee
and van de Geijn, 2015). :func:`register_tile_set` is that block, written as LLVM vector
instructions that Numba places inline (an ``@intrinsic``): a Numba loop cannot keep twelve
vectors in registers from one step to the next, and LLVM's loop vectoriser does not.

Why not BLAS, which the kernels called before: their score product ``Q_i K_jᵀ`` sums over
only ``E = 64`` terms, and a BLAS call packs both operands first, zeroes ``C`` because
``np.dot`` asks for ``C = A B`` (beta 0), and writes a whole ``(bq, bk)`` tile that the
softmax then reads back from a far cache. Here the keys are packed once per call
(:func:`pack_heads`), six rows of scores at a time are computed, turned into probabilities
while they are in the first-level cache, and multiplied by ``V_j`` at once (:mod:`.forward`).

**Layout.** ``a``, ``b`` and ``c`` are C-contiguous 2-d arrays, read and written in place;
each step of the sum reads one row of ``b``, ``w`` = :func:`tile_cols` contiguous entries.
``V`` (S, Ev) serves as ``b`` as it is. ``Kᵀ`` does not exist in memory, so
:func:`pack_blocks` writes it, per key block, as blocks of ``w`` columns, zero-padded, so that
a strip of scores may always compute whole blocks of columns; the caller uses only the
columns that exist.

**Same order, same bits.** Each output entry is ``fma(a[r, d], b[d, x], acc)`` for
``d = 0, 1, ...`` in order, starting from 0: its rounding does not depend on where the block
sits or what is computed beside it. So the backward pass gets the forward pass's scores bit
for bit by calling the same function (:func:`tile_scores`), and :func:`row_dots` sums
``D = rowsum(dO ∘ O)`` in that order too.
"""
import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .exp import EXP_FLAGS, LOOP_FLAGS

TILE_ROWS = 6  # rows of the block in registers
VECTORS_PER_ROW = 2  # vectors per row: 12 accumulators, 2 loads, 1 broadcast of 16 registers


def _host_vector_bytes():
    """32 bytes (AVX2: 8 float32 per register) or 64 with AVX-512 (16 float32, and 32 registers,
    so the same 6 × 2 block uses wider vectors)."""
    features = llvm.get_host_cpu_features()
    return 64 if features.get("avx512f", False) else 32


VECTOR_BYTES = _host_vector_bytes()


def tile_cols(itemsize, vector_bytes=VECTOR_BYTES):
    """Columns of the block in registers for entries of ``itemsize`` bytes: 16 float32 (or 8
    float64) with AVX2, twice as many with AVX-512. Packed operands have this many columns."""
    return VECTORS_PER_ROW * vector_bytes // itemsize


@njit(cache=True)
def tile_cols_of(a):
    """:func:`tile_cols` for the dtype of the array ``a``, inside compiled code."""
    return VECTORS_PER_ROW * VECTOR_BYTES // a.itemsize


def make_register_tile(vector_bytes=VECTOR_BYTES, rows=TILE_ROWS, vectors=VECTORS_PER_ROW,
                       a_transposed=False):
    """An intrinsic ``tile(a, a_row, b, b_row, b_col, c, c_row, c_col, depth)`` computing, for
    ``w = vectors · lanes`` columns (``lanes`` entries of ``vector_bytes`` bytes)::

        c[c_row:+rows, c_col:+w] = a[a_row:+rows, :depth] @ b[b_row:+depth, b_col:+w]

    or, with ``a_transposed``, ``aᵀ[a_row:+rows, :depth]``, read from ``a[:depth, a_row:+rows]``
    (six neighbours of one row of ``a`` per step). ``a``, ``b`` and ``c`` are C-contiguous 2-d
    arrays of one dtype, float32 or float64. Nothing is checked at run time: the callers keep
    every index inside the arrays. Vectors wider than the machine's are split by LLVM (slower,
    same bits): the tests build the AVX-512 form here.
    """

    @intrinsic
    def register_tile(typingctx, a, a_row, b, b_row, b_col, c, c_row, c_col, depth):
        arrays = (a, b, c)
        if not all(isinstance(x, types.Array) and x.ndim == 2 and x.layout == "C"
                   and x.dtype == a.dtype for x in arrays):
            return None
        if a.dtype not in (types.float32, types.float64):
            return None
        lanes = vector_bytes * 8 // a.dtype.bitwidth

        def codegen(context, builder, signature, args):
            a_arr, b_arr, c_arr = (context.make_array(signature.args[i])(context, builder, args[i])
                                   for i in (0, 2, 5))
            a_row_, b_row_, b_col_, c_row_, c_col_, depth_ = (
                context.cast(builder, args[i], signature.args[i], types.intp)
                for i in (1, 3, 4, 6, 7, 8))
            index = ir.IntType(64)
            scalar = context.get_value_type(a.dtype)
            vec = ir.VectorType(scalar, lanes)
            vec_ptr = vec.as_pointer()

            def row_length(arr):
                return cgutils.unpack_tuple(builder, arr.shape, 2)[1]

            a_ld, b_ld, c_ld = row_length(a_arr), row_length(b_arr), row_length(c_arr)
            a_first = a_row_ if a_transposed else builder.mul(a_row_, a_ld)
            a_base = builder.gep(a_arr.data, [a_first])  # a[a_row, 0], or a[0, a_row] if transposed
            b_base = builder.gep(b_arr.data, [builder.add(builder.mul(b_row_, b_ld), b_col_)])
            c_base = builder.gep(c_arr.data, [builder.add(builder.mul(c_row_, c_ld), c_col_)])
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vec, [vec, vec, vec]),
                f"llvm.fma.v{lanes}f{a.dtype.bitwidth}")
            c_ptrs = [[builder.bitcast(
                builder.gep(c_base, [builder.add(builder.mul(ir.Constant(index, r), c_ld),
                                                 ir.Constant(index, lanes * v))]), vec_ptr)
                for v in range(vectors)] for r in range(rows)]
            start = [ir.Constant(vec, [0.0] * lanes)] * (rows * vectors)
            entry = builder.block
            has_steps = builder.icmp_signed(">", depth_, ir.Constant(index, 0))
            loop = builder.append_basic_block("register_tile.loop")
            done = builder.append_basic_block("register_tile.done")
            builder.cbranch(has_steps, loop, done)

            builder.position_at_end(loop)  # one step d of the sum: 2 loads, 6 broadcasts, 12 FMAs
            d = builder.phi(index)
            d.add_incoming(ir.Constant(index, 0), entry)
            acc = []
            for value in start:
                phi = builder.phi(vec)
                phi.add_incoming(value, entry)
                acc.append(phi)
            b_step = builder.gep(b_base, [builder.mul(d, b_ld)])  # b[b_row + d, b_col]
            b_vecs = [builder.load(builder.bitcast(
                builder.gep(b_step, [ir.Constant(index, lanes * v)]), vec_ptr), align=1)
                for v in range(vectors)]
            splat = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
            new = []
            for r in range(rows):
                a_at = (builder.add(builder.mul(d, a_ld), ir.Constant(index, r)) if a_transposed
                        else builder.add(builder.mul(ir.Constant(index, r), a_ld), d))
                a_entry = builder.load(builder.gep(a_base, [a_at]))
                broadcast = builder.shuffle_vector(
                    builder.insert_element(ir.Constant(vec, ir.Undefined), a_entry,
                                           ir.Constant(index, 0)),
                    ir.Constant(vec, ir.Undefined), splat)
                for v in range(vectors):
                    new.append(builder.call(fma, [broadcast, b_vecs[v], acc[r * vectors + v]]))
            d_next = builder.add(d, ir.Constant(index, 1))
            d.add_incoming(d_next, loop)
            for phi, value in zip(acc, new, strict=True):
                phi.add_incoming(value, loop)
            builder.cbranch(builder.icmp_signed("<", d_next, depth_), loop, done)

            builder.position_at_end(done)
            final = []
            for i, value in enumerate(start):
                phi = builder.phi(vec)
                phi.add_incoming(value, entry)
                phi.add_incoming(new[i], loop)
                final.append(phi)
            for r in range(rows):
                for v in range(vectors):
                    builder.store(final[r * vectors + v], c_ptrs[r][v], align=1)
            return context.get_dummy_value()

        return types.none(a, a_row, b, b_row, b_col, c, c_row, c_col, depth), codegen

    return register_tile


register_tile_set = make_register_tile()
register_tile_set_at = make_register_tile(a_transposed=True)


@njit(cache=True)
def chunks(n, w):
    """How many blocks of ``w`` columns cover ``n`` columns."""
    return (n + w - 1) // w


@njit(cache=True)
def pack_blocks(k, block_k, out):
    """Pack the rows of ``k`` (one head's keys, say) as columns for the register tile:
    ``out[(kb·n + c)·E + e, x] = k[j, e]`` for row ``j = kb·block_k + c·w + x`` of block ``kb``,
    and 0 past the block's or the sequence's end.

    Read as ``b`` by the register tile, rows ``(kb·n + c)·E`` to ``+E`` are columns
    ``c·w .. c·w + w - 1`` of ``K_jᵀ``: step ``e`` of the sum reads one contiguous row.
    ``k`` (S, E); ``out`` (n_blocks · n · E, w), ``w`` = :func:`tile_cols`,
    ``n = chunks(block_k, w)``.
    """
    S, E = k.shape
    w = out.shape[1]
    n = chunks(block_k, w)
    for kb in range((S + block_k - 1) // block_k):
        for c in range(n):
            j0 = kb * block_k + c * w  # the first key of this block of columns
            n_x = max(0, min(w, min(S, (kb + 1) * block_k) - j0))  # of them, keys that exist
            row0 = (kb * n + c) * E
            for x in range(n_x):  # key j0 + x: its row of k, read in order, into column x
                for e in range(E):
                    out[row0 + e, x] = k[j0 + x, e]
            for x in range(n_x, w):
                for e in range(E):
                    out[row0 + e, x] = 0.0


def packed_rows(n_rows, block_k, depth, w):
    """Rows of :func:`pack_blocks`'s output for ``n_rows`` rows of length ``depth`` in blocks of
    ``block_k``: ``depth`` rows per block of ``w`` columns, ``chunks(block_k, w)`` of those per
    block."""
    return -(-n_rows // block_k) * -(-block_k // w) * depth


@njit(fastmath=LOOP_FLAGS, cache=True)
def strip_scores(q, row, kp, kb, block_k, n_keys, s, s_row):
    """``s[s_row:s_row+6, :n'] = q[row:row+6] @ K_jᵀ``: six rows of scores against key block
    ``kb``, whose ``n_keys`` keys are rounded up to ``n'``, whole blocks of columns (the extra
    scores are 0).

    ``q`` (>= row + 6, E); ``kp`` the packed keys (:func:`pack_blocks` with ``block_k``);
    ``s`` (>= s_row + 6, >= n').
    """
    E, w = q.shape[1], tile_cols_of(q)
    first = kb * chunks(block_k, w)  # the key block's first block of columns
    for c in range(chunks(n_keys, w)):
        register_tile_set(q, row, kp, (first + c) * E, 0, s, s_row, c * w, E)  # (6,E) @ (E,w)


@njit(fastmath=LOOP_FLAGS, cache=True)
def tile_scores(q, i0, i1, kp, kb, block_k, t):
    """``t = q[i0:i1] @ K_jᵀ`` for key block ``kb``, into a C-contiguous tile ``t`` (i1 - i0,
    n_keys): :func:`strip_scores`'s products, bit for bit, whatever the tile's shape.

    Six rows at a time; straight into ``t`` when its rows hold whole blocks of columns, else
    through a strip with room for them. A last group of fewer than six rows is first copied
    into six rows padded with zeros. ``q`` (L, E); ``kp`` the head's keys packed for
    ``block_k``.
    """
    nr, E, n_keys = i1 - i0, q.shape[1], t.shape[1]
    w = tile_cols_of(q)
    direct = n_keys % w == 0
    strip = np.empty((TILE_ROWS, chunks(n_keys, w) * w), dtype=q.dtype)  # (6, n')
    last = np.zeros((TILE_ROWS, E), dtype=q.dtype)  # (6, E): the rows of a last, short strip
    for r0 in range(0, nr, TILE_ROWS):
        n_rows = min(TILE_ROWS, nr - r0)
        if n_rows == TILE_ROWS and direct:
            strip_scores(q, i0 + r0, kp, kb, block_k, n_keys, t, r0)  # (6, E) @ (E, n_keys)
            continue
        if n_rows == TILE_ROWS:
            strip_scores(q, i0 + r0, kp, kb, block_k, n_keys, strip, 0)  # (6, E) @ (E, n')
        else:
            for r in range(n_rows):
                for e in range(E):
                    last[r, e] = q[i0 + r0 + r, e]
            strip_scores(last, 0, kp, kb, block_k, n_keys, strip, 0)
        for r in range(n_rows):
            for c in range(n_keys):
                t[r0 + r, c] = strip[r, c]


@njit(fastmath=LOOP_FLAGS, cache=True)
def tile_product(a, a_transposed, n_rows, bp, b_row, depth, c):
    """``c[:n', :m·w] = A @ B`` by register tiles, six rows at a time, ``n'`` = ``n_rows`` rounded
    up to whole strips: ``A = a[:n', :depth]``, or ``a[:depth, :n']ᵀ`` with ``a_transposed``;
    ``B`` rows ``b_row .. b_row + depth`` of the packed columns ``bp`` (m, R, w)
    (:func:`pack_columns`).

    The rows past ``n_rows`` are garbage: ``c`` needs room for them and ``a`` must be readable
    there (the callers' buffers have a strip's worth of slack), and the callers use only the
    first ``n_rows`` rows of ``c``.
    """
    w = bp.shape[2]
    for r0 in range(0, n_rows, TILE_ROWS):
        for col in range(bp.shape[0]):
            if a_transposed:
                register_tile_set_at(a, r0, bp[col], b_row, 0, c, r0, col * w, depth)
            else:
                register_tile_set(a, r0, bp[col], b_row, 0, c, r0, col * w, depth)


@njit(fastmath=EXP_FLAGS, parallel=True, cache=True)
def row_dots(a, b, out):
    """``out[h, i] = a[h, i] · b[h, i]``, each a chain of fused multiply-adds from 0 in the order
    of the register tile (``contract`` without ``reassoc``: no reordering), so a row dotted with
    itself here and in a tile product gives the same bits. ``a``, ``b`` (H, L, E); ``out`` (H, L).
    """
    for h in prange(a.shape[0]):
        for i in range(a.shape[1]):
            out[h, i] = 0.0
            total = out[h, i]  # a zero of out's dtype
            for e in range(a.shape[2]):
                total += a[h, i, e] * b[h, i, e]
            out[h, i] = total


@njit(parallel=True, cache=True)
def _pack_columns(v, out):
    for h in prange(v.shape[0]):
        S, Ev = v.shape[1], v.shape[2]
        w = out.shape[3]
        for c in range(out.shape[1]):
            n_x = min(w, Ev - c * w)  # columns of this block that exist
            out[h, c, :, n_x:] = 0.0
            for j in range(S):
                out[h, c, j, :n_x] = v[h, j, c * w:c * w + n_x]


def packed_columns_shape(v):
    """The shape of :func:`pack_columns`'s result for ``v`` (H, S, Ev): (H, m, S, w)."""
    w = tile_cols(v.itemsize)
    return (v.shape[0], -(-v.shape[2] // w), v.shape[1], w)


def pack_columns(v, out=None):
    """The values of every head as blocks of ``w`` = :func:`tile_cols` columns, zero-padded:
    ``v`` (H, S, Ev) -> (H, chunks(Ev, w), S, w), ``out[h, c, j, x] = v[h, j, c·w + x]``, into
    ``out`` if given.

    ``V_j`` could be read where it is (rows of ``Ev`` entries); in blocks of columns each step of
    the product ``P V_j`` reads one contiguous row of ``w`` entries instead of a quarter of a
    longer one: 100 against 86 GFLOP/s for 6 × 256 @ 256 × 64 on one core of the AMD EPYC of
    chapter 12 (``benchmarks/profile_forward.py``)."""
    out = np.empty(packed_columns_shape(v), v.dtype) if out is None else out
    _pack_columns(v, out)
    return out  # (H, m, S, w)


@njit(parallel=True, cache=True)
def _pack_heads(x, block_k, out):
    for h in prange(x.shape[0]):
        pack_blocks(x[h], block_k, out[h])


def packed_heads_shape(x, block_k):
    """The shape of :func:`pack_heads`'s result for ``x`` (H, S, E): (H, R, w)."""
    w = tile_cols(x.itemsize)
    return (x.shape[0], packed_rows(x.shape[1], block_k, x.shape[2], w), w)


def pack_heads(x, block_k, out=None):
    """:func:`pack_blocks` for every head: ``x`` (H, S, E) -> (H, R, w), with
    ``R = packed_rows(S, block_k, E, w)`` and ``w = tile_cols(itemsize)``, into ``out`` if
    given."""
    out = np.empty(packed_heads_shape(x, block_k), x.dtype) if out is None else out
    _pack_heads(x, block_k, out)
    return out  # (H, R, w)
