"""The register tile of the Numba kernels (backends/numba/register_tile.py): its product, its
packing, and the promise the backward pass relies on, the same bits wherever a score is computed.
"""
import numpy as np
import pytest

from attention_scratch.backends import unavailable_reason

if unavailable_reason("numba") is not None:
    pytest.skip(unavailable_reason("numba"), allow_module_level=True)

from numba import njit

from attention_scratch.backends.numba.register_tile import (
    TILE_ROWS,
    make_register_tile,
    pack_columns,
    pack_heads,
    packed_rows,
    register_tile_set,
    row_dots,
    strip_scores,
    tile_cols,
    tile_product,
    tile_scores,
)

DTYPES = [np.float32, np.float64]


def _caller(tile):
    @njit
    def call(a, a_row, b, b_row, b_col, c, c_row, c_col, depth):
        tile(a, a_row, b, b_row, b_col, c, c_row, c_col, depth)

    return call


CALL = _caller(register_tile_set)
CALL_WIDE = _caller(make_register_tile(vector_bytes=64))  # the AVX-512 form, on any machine


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wide", [False, True])
def test_one_tile_is_the_product_of_its_rows_and_columns_and_writes_nothing_else(rng, dtype, wide):
    w = tile_cols(np.dtype(dtype).itemsize, 64 if wide else 32)
    call = CALL_WIDE if wide else CALL
    for depth in (0, 1, 7, 64):
        a = rng.standard_normal((TILE_ROWS + 5, depth + 3)).astype(dtype)
        b = rng.standard_normal((depth + 4, w + 9)).astype(dtype)
        c = np.full((TILE_ROWS + 4, w + 7), np.nan, dtype)
        a_row, b_row, b_col, c_row, c_col = 3, 2, 5, 1, 4
        call(a, a_row, b, b_row, b_col, c, c_row, c_col, depth)
        want = (a[a_row:a_row + TILE_ROWS, :depth].astype(np.float64)
                @ b[b_row:b_row + depth, b_col:b_col + w].astype(np.float64))  # (6, w)
        block = c[c_row:c_row + TILE_ROWS, c_col:c_col + w]
        eps = np.finfo(dtype).eps
        bound = depth * eps * (np.abs(a[a_row:a_row + TILE_ROWS, :depth]).astype(np.float64)
                               @ np.abs(b[b_row:b_row + depth, b_col:b_col + w]))
        assert np.all(np.abs(block - want) <= bound), (depth, np.abs(block - want).max())
        outside = np.ones(c.shape, bool)
        outside[c_row:c_row + TILE_ROWS, c_col:c_col + w] = False
        assert np.isnan(c[outside]).all(), "the tile wrote outside its block"


@pytest.mark.parametrize("dtype", DTYPES)
def test_each_entry_is_a_chain_of_fused_multiply_adds_in_order(rng, dtype):
    """The first step rounds a·b once (0 + a·b), each later one rounds a·b + acc once: with a
    single nonzero term the result is that product rounded, exactly; and a chain whose exact
    value needs no rounding (small integers) comes out exact."""
    w = tile_cols(np.dtype(dtype).itemsize)
    a = rng.integers(-8, 9, (TILE_ROWS, 33)).astype(dtype)
    b = rng.integers(-8, 9, (33, w)).astype(dtype)
    c = np.empty((TILE_ROWS, w), dtype)
    CALL(a, 0, b, 0, 0, c, 0, 0, 33)
    assert np.array_equal(c, a.astype(np.float64) @ b.astype(np.float64))
    x = dtype(1) + np.finfo(dtype).eps  # x·x = 1 + 2 eps + eps^2: rounds to 1 + 2 eps
    a, b = np.full((TILE_ROWS, 1), x, dtype), np.full((1, w), x, dtype)
    CALL(a, 0, b, 0, 0, c, 0, 0, 1)
    assert (c == x * x).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("S,E,block_k", [(100, 64, 48), (37, 5, 16), (512, 64, 128), (3, 2, 7)])
def test_packed_keys_are_the_transposed_blocks_padded_with_zeros(rng, dtype, S, E, block_k):
    k = rng.standard_normal((2, S, E)).astype(dtype)
    w = tile_cols(np.dtype(dtype).itemsize)
    kp = pack_heads(k, block_k)
    assert kp.shape == (2, packed_rows(S, block_k, E, w), w) and kp.dtype == dtype
    n = -(-block_k // w)
    for kb in range(-(-S // block_k)):
        for c in range(n):
            first = kb * block_k + c * w
            keys = np.arange(first, first + w)  # (w,)
            real = (keys < min(S, (kb + 1) * block_k))  # keys of this block that exist
            got = kp[:, (kb * n + c) * E:(kb * n + c + 1) * E]  # (2, E, w)
            want = np.zeros((2, E, w), dtype)
            want[:, :, real] = k[:, keys[real]].transpose(0, 2, 1)
            assert np.array_equal(got, want), (kb, c)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("L,S,E,block_k", [(13, 100, 64, 48), (60, 512, 64, 128), (7, 37, 5, 16),
                                           (12, 64, 16, 64)])
def test_tile_scores_are_the_products_and_the_same_bits_as_strips_anywhere(rng, dtype, L, S, E,
                                                                         block_k):
    """Any tile shape (a last short strip, a ragged last key block, whole blocks of columns
    written in place or through a strip) gives the bits of a six-row strip computed on its
    own, at any row: what the forward computes and the backward recomputes."""
    q = rng.standard_normal((L + TILE_ROWS, E)).astype(dtype)
    k = rng.standard_normal((1, S, E)).astype(dtype)
    kp = pack_heads(k, block_k)[0]
    w = tile_cols(np.dtype(dtype).itemsize)
    eps = np.finfo(dtype).eps
    for kb in range(-(-S // block_k)):
        j0, j1 = kb * block_k, min(S, (kb + 1) * block_k)
        for i0, i1 in ((0, L), (1, min(L, 5)), (2, L)):
            t = np.empty((i1 - i0, j1 - j0), dtype)
            tile_scores(q, i0, i1, kp, kb, block_k, t)
            exact = q[i0:i1].astype(np.float64) @ k[0, j0:j1].T.astype(np.float64)
            bound = E * eps * (np.abs(q[i0:i1]).astype(np.float64) @ np.abs(k[0, j0:j1]).T)
            assert np.all(np.abs(t - exact) <= bound)
            for r in range(i1 - i0):  # row r of the tile from a strip that starts at it
                strip = np.empty((TILE_ROWS, -(-(j1 - j0) // w) * w), dtype)
                strip_scores(q, i0 + r, kp, kb, block_k, j1 - j0, strip, 0)
                assert np.array_equal(strip[0, :j1 - j0], t[r]), (kb, i0, i1, r)


@pytest.mark.parametrize("dtype", DTYPES)
def test_row_dots_sum_in_the_tiles_order(rng, dtype):
    """D = rowsum(dO ∘ O) has the bits of the tile's product dO_i · V_j when O_i = V_j (a one-hot
    row of P): so dP - D is exactly 0 there, and the gradient of a one-hot row is exactly 0."""
    E = 40
    a = rng.standard_normal((2, 7, E)).astype(dtype)
    b = a[:, ::-1].copy()
    d = np.empty((2, 7), dtype)
    row_dots(a, b, d)
    exact = (a.astype(np.float64) * b).sum(-1)  # (2, 7)
    assert np.allclose(d, exact, rtol=0, atol=E * np.finfo(dtype).eps * 20)
    for h in range(2):
        bp = pack_heads(b[h:h + 1], 7)[0]  # the rows of b as the keys of one block
        t = np.empty((7, 7), dtype)
        tile_scores(a[h], 0, 7, bp, 0, 7, t)  # t[i, j] = a[h, i] · b[h, j]
        assert np.array_equal(np.diag(t), d[h])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("Ev", [64, 5, 40])
def test_values_in_blocks_of_columns_padded_with_zeros(rng, dtype, Ev):
    v = rng.standard_normal((3, 11, Ev)).astype(dtype)
    w = tile_cols(np.dtype(dtype).itemsize)
    vp = pack_columns(v)
    m = -(-Ev // w)
    assert vp.shape == (3, m, 11, w) and vp.dtype == dtype
    padded = np.zeros((3, 11, m * w), dtype)
    padded[..., :Ev] = v
    assert np.array_equal(vp, padded.reshape(3, 11, m, w).transpose(0, 2, 1, 3))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("n_rows,depth,width", [(13, 40, 64), (6, 1, 5), (25, 7, 16)])
def test_tile_product_is_the_product_for_its_rows(rng, dtype, transposed, n_rows, depth, width):
    """tile_product computes whole strips: the first n_rows rows of c are A @ B, with A read
    directly or transposed, and B from blocks of columns starting at any row."""
    rows = -(-n_rows // TILE_ROWS) * TILE_ROWS
    a_shape = (depth, rows + 1) if transposed else (rows + 1, depth)  # slack past n_rows
    a = rng.standard_normal(a_shape).astype(dtype)
    b = rng.standard_normal((1, depth + 3, width)).astype(dtype)
    bp = pack_columns(b)[0]  # (m, depth + 3, w)
    c = np.empty((rows, bp.shape[0] * bp.shape[2]), dtype)
    tile_product(a, transposed, n_rows, bp, 2, depth, c)
    a_rows = a.T[:n_rows] if transposed else a[:n_rows]  # (n_rows, depth)
    want = a_rows.astype(np.float64) @ b[0, 2:2 + depth].astype(np.float64)  # (n_rows, width)
    size = np.abs(a_rows).astype(np.float64) @ np.abs(b[0, 2:2 + depth])  # (n_rows, width)
    bound = depth * np.finfo(dtype).eps * size
    assert np.all(np.abs(c[:n_rows, :width] - want) <= bound + np.finfo(dtype).tiny)
