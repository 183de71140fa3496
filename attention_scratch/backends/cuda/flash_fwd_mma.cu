// Flash attention forward with the scores, probabilities and output in registers
// (float16 / bfloat16 input, float32 accumulation; sm_80 and newer).
//
// The structure of FlashAttention-2 (Dao, 2023): one thread block of 4 warps per
// (batch*head, 128-row query tile); warp w owns query rows 32w..32w+31 as two
// 16-row m-tiles. K and V tiles of BK = 64 keys (32 when D = 128) are double-buffered in shared
// memory: while the block works on tile kb, cp.async copies tile kb+1 into the
// other buffer. Per key tile:
//   1. S = Q K^T with mma.m16n8k16: the A fragments of Q and the B fragments of
//      K^T come from shared memory by ldmatrix (four 8x8 matrices per instruction);
//      S stays in the float accumulator registers (BK / 2 per m-tile).
//   2. The online softmax runs on those registers. The accumulator layout gives
//      every lane two rows (g and g+8) and a quarter of their BK columns, so a row's
//      maximum takes two shuffles among the 4 lanes that share it; the row sum is
//      kept per lane and reduced once, at the end.
//   3. O += P V: the accumulator layout of two adjacent 8-key column tiles of P is
//      exactly the A-fragment layout of one 16-key slice, so P goes from float
//      registers to 16-bit A fragments without touching shared memory. V's B
//      fragments come by ldmatrix.trans, which transposes the row-major V tile.
// Nothing but the Q, K and V tiles passes through shared memory. Head dims are
// zero-padded to D (a multiple of 16); keys past S are zero and masked; query rows
// past L are computed and never written.
#include "flash_common.cuh"
#include "mma_sm80.cuh"

#include "flash_constants.cuh"

#define MMA_BK(D) ((D) > 64 ? MMA_BK_LARGE_D : MMA_BK_SMALL_D)  // keys per tile
static_assert(MMA_BQ == 16 * MMA_MT * MMA_WARPS, "MMA_BQ: 16-row m-tiles times warps");

// Rows row0.. of a (rows, E) matrix in global memory -> a (ROWS, D) tile of pitch P in
// shared memory, zero past `valid` rows and past E columns. With `vec` (E a multiple of
// 8 and a 16-byte aligned matrix, so every row starts 16-byte aligned) by asynchronous
// 16-byte copies that the caller commits and waits for; otherwise element by element,
// synchronously.
template <typename T, int ROWS, int D, int P>
__device__ __forceinline__ void stage_rows(T* tile, const T* src, int row0, int valid, int E, bool vec) {
    constexpr int CH = D / 8;  // 8-element chunks per row
    const T zero = from_acc<T>(0.0f);
    for (int idx = threadIdx.x; idx < ROWS * CH; idx += blockDim.x) {
        const int r = idx / CH, c = (idx % CH) * 8;
        T* dst = tile + r * P + c;
        const bool inside = r < valid && c < E;
        if (vec) {
            cp_async16(dst, inside ? src + (size_t)(row0 + r) * E + c : src, inside);
        } else {
            const T* s = src + (size_t)(row0 + r) * E + c;
#pragma unroll
            for (int e = 0; e < 8; ++e) dst[e] = (r < valid && c + e < E) ? s[e] : zero;
        }
    }
}

__device__ __forceinline__ bool aligned16(const void* p) { return ((size_t)p & 15) == 0; }

template <typename T, int D>
__global__ void __launch_bounds__(32 * MMA_WARPS)
flash_fwd_mma(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
              T* __restrict__ out, float* __restrict__ lse, int G, int L, int S, int E, int Ev,
              double scale, int lo, int hi, int bh0) {
    constexpr int BQ = MMA_BQ, BK = MMA_BK(D), MT = MMA_MT;
    constexpr int NT = BK / 8;   // 8-key column tiles of S
    constexpr int DT = D / 8;    // 8-dim column tiles of O
    constexpr int DP = D + 8;    // row pitch (in T) of every tile: the 8 rows of an ldmatrix hit 8 bank groups
    FLASH_DYNAMIC_SMEM(smem_raw);
    T* Qs = reinterpret_cast<T*>(smem_raw);  // (BQ, DP)
    T* Ks = Qs + BQ * DP;                    // 2 x (BK, DP): double buffer
    T* Vs = Ks + 2 * BK * DP;                // 2 x (BK, DP)

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, t = lane % 4;  // fragment coordinates (see mma_sm80.cuh)
    const int bh = bh0 + blockIdx.y, kvh = bh / G;
    const int q0 = blockIdx.x * BQ, q1 = imin(q0 + BQ, L);
    const T* qg = q + (size_t)bh * L * E;
    const T* kg = k + (size_t)kvh * S * E;
    const T* vg = v + (size_t)kvh * S * Ev;
    const bool vec_q = E % 8 == 0 && aligned16(qg), vec_k = E % 8 == 0 && aligned16(kg),
               vec_v = Ev % 8 == 0 && aligned16(vg);
    const float sl2 = (float)(scale * FLASH_LOG2E);
    const int wrow = warp * 16 * MT;  // this warp's first row in the tile
    // ldmatrix row addresses: lane gives row (lane % 8) of matrix (lane / 8) of an x4 load
    const int lm_row = (lane / 8 % 2) * 8 + lane % 8, lm_col = (lane / 16) * 8;

    int kb_first, kb_end;
    key_block_range(q0, q1, S, BK, lo, hi, &kb_first, &kb_end);
    stage_rows<T, BQ, D, DP>(Qs, qg, q0, q1 - q0, E, vec_q);
    if (kb_first < kb_end) {
        stage_rows<T, BK, D, DP>(Ks, kg, kb_first * BK, S - kb_first * BK, E, vec_k);
        stage_rows<T, BK, D, DP>(Vs, vg, kb_first * BK, S - kb_first * BK, Ev, vec_v);
    }
    cp_async_commit();

    float o[MT][DT][4];                 // output accumulators: rows (g, g+8) of each m-tile
    float m[MT][2], l[MT][2];           // running max (log2 units) and this lane's part of the sum
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int dt = 0; dt < DT; ++dt)
#pragma unroll
            for (int r = 0; r < 4; ++r) o[mt][dt][r] = 0.0f;
        m[mt][0] = m[mt][1] = -acc_inf<float>();
        l[mt][0] = l[mt][1] = 0.0f;
    }

    for (int kb = kb_first; kb < kb_end; ++kb) {
        const int j0 = kb * BK, buf = (kb - kb_first) % 2;
        if (kb + 1 < kb_end) {  // prefetch the next tile into the other buffer
            stage_rows<T, BK, D, DP>(Ks + (1 - buf) * BK * DP, kg, j0 + BK, S - j0 - BK, E, vec_k);
            stage_rows<T, BK, D, DP>(Vs + (1 - buf) * BK * DP, vg, j0 + BK, S - j0 - BK, Ev, vec_v);
        }
        cp_async_commit();
        cp_async_wait<1>();  // everything but the prefetch has landed: Q (first time) and tile kb
        __syncthreads();
        const T* Kb = Ks + buf * BK * DP;
        const T* Vb = Vs + buf * BK * DP;

        // 1. S = Q K^T: s[mt][nt] is the 16x8 accumulator of m-tile mt, keys j0 + 8nt ...
        float s[MT][NT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                for (int r = 0; r < 4; ++r) s[mt][nt][r] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            unsigned a[MT][4];  // matrices: rows 0-7 | 8-15 of the m-tile x dims 0-7 | 8-15 of the slice
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
                ldmatrix_x4(a[mt], Qs + (wrow + mt * 16 + lm_row) * DP + kk * 16 + lm_col);
#pragma unroll
            for (int nt = 0; nt < NT; nt += 2) {
                // B = K^T: b[0..1] for keys 8nt.., b[2..3] for keys 8(nt+1)..; K rows are B's columns
                unsigned b[4];
                ldmatrix_x4(b, Kb + (nt * 8 + (lane / 16) * 8 + lane % 8) * DP + kk * 16 + (lane / 8 % 2) * 8);
                const unsigned b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma16816<T>(s[mt][nt], a[mt], b0);
                    mma16816<T>(s[mt][nt + 1], a[mt], b1);
                }
            }
        }

        // 2. Mask, online softmax. A tile wholly inside the band and inside S needs no mask.
        const bool whole = j0 + BK <= S && j0 - (q1 - 1) >= lo && j0 + BK - 1 - q0 <= hi;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {  // rows g and g + 8 of the m-tile
                const int i = q0 + wrow + mt * 16 + g + 8 * h;
                float mx = -acc_inf<float>();
#pragma unroll
                for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                    for (int c = 0; c < 2; ++c) {
                        const int j = j0 + nt * 8 + 2 * t + c;
                        float x = s[mt][nt][2 * h + c] * sl2;
                        if (!whole && !(j < S && band_keep(i, j, lo, hi))) x = -acc_inf<float>();
                        s[mt][nt][2 * h + c] = x;
                        mx = fmaxf(mx, x);
                    }
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));  // the 4 lanes of the row
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                const float m_new = fmaxf(m[mt][h], mx);
                const float base = m_new == -acc_inf<float>() ? 0.0f : m_new;  // no -inf - -inf
                const float alpha = exp2f(m[mt][h] - base);
                float rowsum = 0.0f;
#pragma unroll
                for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                    for (int c = 0; c < 2; ++c) {
                        const float p = exp2f(s[mt][nt][2 * h + c] - base);
                        s[mt][nt][2 * h + c] = p;
                        rowsum += p;
                    }
                l[mt][h] = l[mt][h] * alpha + rowsum;
                m[mt][h] = m_new;
#pragma unroll
                for (int dt = 0; dt < DT; ++dt) {
                    o[mt][dt][2 * h] *= alpha;
                    o[mt][dt][2 * h + 1] *= alpha;
                }
            }
        }

        // 3. O += P V, 16 keys at a time; P's A fragment is two adjacent S accumulators.
#pragma unroll
        for (int kc = 0; kc < BK / 16; ++kc) {
            unsigned pa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                const float* lo8 = s[mt][2 * kc];      // keys 16kc + 2t, +1
                const float* hi8 = s[mt][2 * kc + 1];  // keys 16kc + 8 + 2t, +1
                pa[mt][0] = pack2<T>(lo8[0], lo8[1]);
                pa[mt][1] = pack2<T>(lo8[2], lo8[3]);
                pa[mt][2] = pack2<T>(hi8[0], hi8[1]);
                pa[mt][3] = pack2<T>(hi8[2], hi8[3]);
            }
#pragma unroll
            for (int dt = 0; dt < DT; dt += 2) {
                // B = V (keys x dims), transposed on load: b[0..1] for dims 8dt.., b[2..3] for 8(dt+1)..
                unsigned b[4];
                ldmatrix_x4_trans(b, Vb + (kc * 16 + lm_row) * DP + dt * 8 + lm_col);
                const unsigned b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma16816<T>(o[mt][dt], pa[mt], b0);
                    mma16816<T>(o[mt][dt + 1], pa[mt], b1);
                }
            }
        }
        __syncthreads();  // every warp is done with this buffer before the next prefetch refills it
    }
    cp_async_wait<0>();  // no copy outlives the block (only the empty-range case leaves one)

    // Epilogue: finish the row sums across the 4 lanes of each row, normalise, write.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float sum = l[mt][h];
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            const int i = q0 + wrow + mt * 16 + g + 8 * h;
            if (i >= L) continue;
            const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
            T* orow = out + ((size_t)bh * L + i) * Ev;
#pragma unroll
            for (int dt = 0; dt < DT; ++dt)
#pragma unroll
                for (int c = 0; c < 2; ++c) {
                    const int d = dt * 8 + 2 * t + c;
                    if (d < Ev) orow[d] = from_acc<T>(o[mt][dt][2 * h + c] * inv);
                }
            if (t == 0)
                lse[(size_t)bh * L + i] = sum > 0.0f ? (m[mt][h] + log2f(sum)) * (float)FLASH_LN2
                                                     : acc_inf<float>();
        }
    }
}

#ifdef FLASH_COMPILE_CHECK
#define FLASH_MMA_INST(T, D)                                                                  \
    template __global__ void flash_fwd_mma<T, D>(const T*, const T*, const T*, T*, float*,    \
                                                 int, int, int, int, int, double, int, int, int);
FLASH_MMA_INST(__half, 32)
FLASH_MMA_INST(__half, 64)
FLASH_MMA_INST(__half, 128)
FLASH_MMA_INST(__nv_bfloat16, 32)
FLASH_MMA_INST(__nv_bfloat16, 64)
FLASH_MMA_INST(__nv_bfloat16, 128)
#endif
