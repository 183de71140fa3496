"""IO counts against independent simulations and the kernel itself; the trace against the oracle."""
import numpy as np
import pytest

import attention_scratch.flash as flash_mod
from attention_scratch.flash import flash_attention
from attention_scratch.io_accounting import (
    dense_io,
    fa1_block_sizes,
    fa1_io,
    fa2_block_size,
    fa2_io,
    flash_trace,
    peak_traced_memory,
    tiled_io,
)
from attention_scratch.testing import assert_close, attention_oracle, reference_mask


def simulate_fa1(N, d, M):
    """Walk FlashAttention's Algorithm 1 loop by loop and count slow-memory element accesses."""
    br, bc = fa1_block_sizes(M, d)
    reads = writes = 0
    writes += N * d + 2 * N  # initialise O, l, m
    for j0 in range(0, N, bc):
        reads += 2 * (min(j0 + bc, N) - j0) * d  # K_j, V_j
        for i0 in range(0, N, br):
            rows = min(i0 + br, N) - i0
            reads += 2 * rows * d + 2 * rows  # Q_i, O_i, l_i, m_i
            writes += rows * d + 2 * rows  # O_i, l_i, m_i
    return reads, writes


@pytest.mark.parametrize("N,d,M", [(256, 64, 100_000), (1000, 32, 20_000), (777, 16, 5_000)])
def test_fa1_io_matches_a_loop_by_loop_count(N, d, M):
    io = fa1_io(N, d, M)
    assert (io["reads"], io["writes"]) == simulate_fa1(N, d, M)


def test_dense_io_is_4nd_plus_4n2():
    assert dense_io(1000, 64)["total"] == 4 * 1000 * 64 + 4 * 1000**2


def test_growth_rates_match_the_flashattention_paper():
    d, M = 64, 100_000
    # Θ(N²d²/M): quadrupling N multiplies the tiled traffic by about 16 once N >> block;
    # dense by 16 as N².
    big = [fa1_io(N, d, M)["total"] / (N * N * d * d / M) for N in (4096, 16384, 65536)]
    assert max(big) / min(big) < 1.15, big
    dense = [dense_io(N, d)["total"] / (N * N) for N in (4096, 16384, 65536)]
    assert all(3.9 < r < 4.1 for r in dense), dense
    # Halving M roughly doubles the tiled traffic.
    assert 1.8 < fa1_io(16384, d, M // 2)["total"] / fa1_io(16384, d, M)["total"] < 2.2
    # Tiled moves fewer elements than dense once N is large.
    assert fa2_io(16384, d, M)["total"] < dense_io(16384, d)["total"] / 5


def test_fa2_block_fits_the_fast_memory():
    for M, d in ((100_000, 64), (4096, 16), (50_000, 128)):
        b = fa2_block_size(M, d)
        assert 4 * b * d + b * b <= M < 4 * (b + 1) * d + (b + 1) ** 2
    with pytest.raises(ValueError):
        fa2_block_size(3, 64)


def test_tiled_io_counts_what_the_kernel_reads(rng, monkeypatch):
    L, S, E, Ev = 37, 45, 6, 4
    q, k, v = rng.standard_normal((1, L, E)), rng.standard_normal((1, S,
                                                                   E)), rng.standard_normal((1, S,
                                                                                             Ev))
    seen = {"kv": 0}
    forward_tile = flash_mod.forward_tile

    def counting(q_blk, k_blk, v_blk, *args):
        seen["kv"] += k_blk.shape[-2] * (k_blk.shape[-1] + v_blk.shape[-1])
        return forward_tile(q_blk, k_blk, v_blk, *args)

    monkeypatch.setattr(flash_mod, "forward_tile", counting)
    for causal in (False, True):
        seen["kv"] = 0
        flash_attention(q, k, v, causal, causal_align="bottom_right", block_q=8, block_k=6)
        io = tiled_io(L, S, E, Ev, 8, 6, causal, "bottom_right")
        assert io["reads"] == L * E + seen["kv"]
        assert io["writes"] == L * Ev + L


def test_causal_halves_the_key_value_traffic():
    full, causal = tiled_io(4096, 4096, 64, 64, 64, 64), tiled_io(4096, 4096, 64, 64, 64, 64, True)
    kv_full, kv_causal = full["reads"] - 4096 * 64, causal["reads"] - 4096 * 64
    assert kv_causal / kv_full == pytest.approx((64 * 65 / 2) / 64**2)


def test_flash_trace_steps_through_to_the_oracle(rng):
    L, S = 12, 20
    q, k, v = rng.standard_normal((L, 4)), rng.standard_normal((S, 4)), rng.standard_normal((S, 3))
    steps = flash_trace(q, k, v, q_block=1, block_q=4, block_k=6, is_causal=True,
                        causal_align="bottom_right")
    assert [s["k_block"] for s in steps] == [0, 1, 2]  # rows 4..7 see keys 0..15
    ref_out, _, _ = attention_oracle(q[None], k[None], v[None], is_causal=True,
                                     causal_align="bottom_right")
    assert_close(steps[-1]["out"], ref_out[0, 4:8], what="trace output after the last key block")
    keep = reference_mask(L, S, is_causal=True, causal_align="bottom_right")[4:8]
    scores = q[4:8] @ k.T / 2.0
    for s in steps:
        stop = min(6 * (s["k_block"] + 1), S)
        seen = np.where(keep[:, :stop], scores[:, :stop], -np.inf)
        assert_close(s["m"], seen.max(axis=1), what=f"running max after key block {s['k_block']}")
        assert_close(s["l"], np.exp(seen - s["m"][:, None]).sum(axis=1), what="running sum")
        part, _, _ = attention_oracle(q[None, 4:8], k[None, :stop], v[None, :stop],
                                      attn_mask=keep[:, :stop])
        assert_close(s["out"], part[0], what=f"output so far after key block {s['k_block']}")
    with pytest.raises(ValueError, match="q_block"):
        flash_trace(q, k, v, q_block=3, block_q=4)


def test_peak_traced_memory_sees_numpy_allocations():
    _, peak = peak_traced_memory(np.ones, (1000, 1000))
    assert peak >= 8_000_000
    _, small = peak_traced_memory(np.ones, 10)
    assert small < 10_000


@pytest.mark.parametrize("call,words", [
    (lambda: dense_io(-1, 64), "N must be a positive integer; got -1"),
    (lambda: fa1_io(100, 64, 0), "M must be a positive integer; got 0"),
    (lambda: fa2_block_size(4096, 0), "d must be a positive integer; got 0"),
    (lambda: tiled_io(10, 10, 4, 4, 0, 4), "block_q must be a positive integer; got 0"),
    (lambda: flash_trace(np.zeros((1, 3, 4)), np.zeros((1, 5, 4)), np.zeros((1, 5, 2))),
     "query must be one head, 2-D (length, head_dim); got shape (1, 3, 4)"),
])
def test_io_functions_name_the_bad_argument(call, words):
    with pytest.raises(ValueError) as err:
        call()
    assert words in str(err.value)
