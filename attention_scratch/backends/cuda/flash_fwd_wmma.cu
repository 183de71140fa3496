// Flash attention forward on tensor cores (float16 / bfloat16 input, float32 accumulation).
//
// One thread block of 4 warps per (batch*head, 64-row query tile); warp w owns
// query rows 16w..16w+15. Key/value tiles of 64 rows are staged in shared memory
// as T. Per key tile each warp
//   1. computes its 16x64 score tile S = Q K^T with WMMA 16x16x16 fragments
//      (float accumulators) and stores it to a per-warp shared buffer;
//   2. runs the online softmax on it: two lanes per row, 32 columns each,
//      mask -> row max (one shuffle) -> alpha = exp2(m_old - m_new) ->
//      P = exp2(S - m_new) written as T, row sum (one shuffle); the running
//      output, kept in shared memory as float, is rescaled by alpha;
//   3. accumulates O += P V with WMMA, loading and storing the float output tile.
// The query fragments stay in registers for the whole kernel. Head dims are
// zero-padded to D (a multiple of 16); rows and keys past L and S are zero and masked.
#include "flash_common.cuh"
#ifndef FLASH_EMULATION
#include <mma.h>
#endif

#include "flash_constants.cuh"

static_assert(WMMA_BQ == 16 * WMMA_WARPS, "WMMA_BQ: each warp owns 16 query rows");

template <typename T, int D>
__global__ void __launch_bounds__(32 * WMMA_WARPS)
flash_fwd_wmma(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
               T* __restrict__ out, float* __restrict__ lse, int G, int L, int S, int E, int Ev,
               double scale, int lo, int hi, int bh0) {
    using namespace nvcuda;
    constexpr int BQ = WMMA_BQ, BK = WMMA_BK, NK = D / 16;
    constexpr int DP = D + 8;   // T row pitch of Q, K, V tiles (a multiple of 8, as WMMA needs)
    constexpr int SP = BK + 4;  // float row pitch of a warp's score tile
    constexpr int PP = BK + 8;  // T row pitch of a warp's probability tile
    constexpr int OP = D + 4;   // float row pitch of a warp's output tile
    constexpr int QBYTES = BQ * DP * (int)sizeof(T), SBYTES = 4 * 16 * SP * 4;
    FLASH_DYNAMIC_SMEM(smem_raw);
    T* Qs = reinterpret_cast<T*>(smem_raw);  // (BQ, DP); reused as the score tiles below
    float* Sf = reinterpret_cast<float*>(smem_raw);
    T* Ks = reinterpret_cast<T*>(smem_raw + (QBYTES > SBYTES ? QBYTES : SBYTES));  // (BK, DP)
    T* Vs = Ks + BK * DP;                                                          // (BK, DP)
    T* Ps = Vs + BK * DP;                                   // 4 x (16, PP)
    float* Of = reinterpret_cast<float*>(Ps + 4 * 16 * PP);  // 4 x (16, OP)

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int bh = bh0 + blockIdx.y, kvh = bh / G;
    const int q0 = blockIdx.x * BQ, q1 = imin(q0 + BQ, L);
    const T* qg = q + (size_t)bh * L * E;
    const T* kg = k + (size_t)kvh * S * E;
    const T* vg = v + (size_t)kvh * S * Ev;
    const T zero = from_acc<T>(0.0f);

    for (int idx = threadIdx.x; idx < BQ * D; idx += blockDim.x) {
        const int rr = idx / D, d = idx % D, i = q0 + rr;
        Qs[rr * DP + d] = (i < L && d < E) ? qg[(size_t)i * E + d] : zero;
    }
    float* Sw = Sf + warp * 16 * SP;
    T* Pw = Ps + warp * 16 * PP;
    float* Ow = Of + warp * 16 * OP;
    for (int idx = lane; idx < 16 * D; idx += 32) Ow[(idx / D) * OP + idx % D] = 0.0f;
    __syncthreads();
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> qa[NK];
#pragma unroll
    for (int kk = 0; kk < NK; ++kk) wmma::load_matrix_sync(qa[kk], Qs + warp * 16 * DP + kk * 16, DP);
    __syncthreads();  // Q is in registers: its shared memory becomes the score tiles

    const int rr = lane / 2, half = lane % 2;  // this lane's row of the warp tile, and column half
    const int i = q0 + warp * 16 + rr;
    const bool row_ok = i < L;
    const float sl2 = (float)(scale * FLASH_LOG2E);
    float m = -acc_inf<float>(), l = 0.0f;

    int kb_first, kb_end;
    key_block_range(q0, q1, S, BK, lo, hi, &kb_first, &kb_end);
    for (int kb = kb_first; kb < kb_end; ++kb) {
        const int j0 = kb * BK;
        __syncthreads();
        for (int idx = threadIdx.x; idx < BK * D; idx += blockDim.x) {
            const int jj = idx / D, d = idx % D, j = j0 + jj;
            Ks[jj * DP + d] = (j < S && d < E) ? kg[(size_t)j * E + d] : zero;
            Vs[jj * DP + d] = (j < S && d < Ev) ? vg[(size_t)j * Ev + d] : zero;
        }
        __syncthreads();

        // 1. S = Q K^T for this warp's 16 rows: 4 column fragments of 16 keys.
#pragma unroll
        for (int nf = 0; nf < BK / 16; ++nf) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> sacc;
            wmma::fill_fragment(sacc, 0.0f);
#pragma unroll
            for (int kk = 0; kk < NK; ++kk) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> kf;  // K^T
                wmma::load_matrix_sync(kf, Ks + nf * 16 * DP + kk * 16, DP);
                wmma::mma_sync(sacc, qa[kk], kf, sacc);
            }
            wmma::store_matrix_sync(Sw + nf * 16, sacc, SP, wmma::mem_row_major);
        }
        __syncwarp();

        // 2. Online softmax, two lanes per row.
        float mx = -acc_inf<float>();
        for (int c = 0; c < BK / 2; ++c) {
            const int cc = half * (BK / 2) + c, j = j0 + cc;
            const bool keep = row_ok && j < S && band_keep(i, j, lo, hi);
            const float s = keep ? Sw[rr * SP + cc] * sl2 : -acc_inf<float>();
            Sw[rr * SP + cc] = s;
            mx = fmaxf(mx, s);
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        const float m_new = fmaxf(m, mx);
        const float base = m_new == -acc_inf<float>() ? 0.0f : m_new;  // no -inf - -inf
        const float alpha = exp2f(m - base);
        float rowsum = 0.0f;
        for (int c = 0; c < BK / 2; ++c) {
            const int cc = half * (BK / 2) + c;
            const float p = exp2f(Sw[rr * SP + cc] - base);
            Pw[rr * PP + cc] = from_acc<T>(p);
            rowsum += p;
        }
        rowsum += __shfl_xor_sync(0xffffffffu, rowsum, 1);
        l = l * alpha + rowsum;
        m = m_new;
        for (int c = 0; c < D / 2; ++c) Ow[rr * OP + half * (D / 2) + c] *= alpha;
        __syncwarp();

        // 3. O += P V: D/16 output fragments, 4 steps of 16 keys each.
#pragma unroll
        for (int nf = 0; nf < NK; ++nf) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> oacc;
            wmma::load_matrix_sync(oacc, Ow + nf * 16, OP, wmma::mem_row_major);
#pragma unroll
            for (int kk = 0; kk < BK / 16; ++kk) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> pf;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> vf;
                wmma::load_matrix_sync(pf, Pw + kk * 16, PP);
                wmma::load_matrix_sync(vf, Vs + kk * 16 * DP + nf * 16, DP);
                wmma::mma_sync(oacc, pf, vf, oacc);
            }
            wmma::store_matrix_sync(Ow + nf * 16, oacc, OP, wmma::mem_row_major);
        }
        __syncwarp();
    }

    if (row_ok) {
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        for (int c = 0; c < D / 2; ++c) {
            const int d = half * (D / 2) + c;
            if (d < Ev) out[((size_t)bh * L + i) * Ev + d] = from_acc<T>(Ow[rr * OP + d] * inv);
        }
        if (half == 0)
            lse[(size_t)bh * L + i] = l > 0.0f ? (m + log2f(l)) * (float)FLASH_LN2 : acc_inf<float>();
    }
}

#ifdef FLASH_COMPILE_CHECK
#define FLASH_WMMA_INST(T, D)                                                                 \
    template __global__ void flash_fwd_wmma<T, D>(const T*, const T*, const T*, T*, float*,   \
                                                  int, int, int, int, int, double, int, int, int);
FLASH_WMMA_INST(__half, 32)
FLASH_WMMA_INST(__half, 64)
FLASH_WMMA_INST(__half, 128)
FLASH_WMMA_INST(__nv_bfloat16, 32)
FLASH_WMMA_INST(__nv_bfloat16, 64)
FLASH_WMMA_INST(__nv_bfloat16, 128)
#endif
