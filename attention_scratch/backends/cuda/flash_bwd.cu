// Flash attention backward pass (FlashAttention-2 order: key blocks outer).
//
// 1. flash_bwd_preprocess: per query row, D_i = sum_v dO_iv * O_iv and the
//    log-sum-exp converted to log2 units (one warp per row).
// 2. flash_bwd_dkdv: one thread block per (batch*kv head, key tile). A row group
//    of TPR threads owns one key row j and keeps k_j, v_j, dk_j and dv_j in
//    registers. The block walks every query head of its group (GQA) and every
//    query tile the mask band lets see the key tile; per tile it stages Q, dO,
//    lse and D in shared memory and, for each query row i,
//        p  = exp2(q_i.k_j * scale*log2(e) - lse2_i)      (recomputed, never stored)
//        dv_j += p dO_i,   dp = dO_i.v_j,   ds = p (dp - D_i),   dk_j += ds q_i
//    and writes ds into a shared (bq, bk) tile, from which the block adds
//    dQ_tile += dS K * scale to a float accumulator with one atomicAdd per entry.
#include "flash_common.cuh"
#include "flash_constants.cuh"

template <typename T>
__global__ void __launch_bounds__(32 * FLASH_BWD_ROWS) flash_bwd_preprocess(const T* __restrict__ grad_out, const T* __restrict__ out,
                                     const typename AccOf<T>::type* __restrict__ lse,
                                     typename AccOf<T>::type* __restrict__ big_d,
                                     typename AccOf<T>::type* __restrict__ lse2,
                                     long long rows, int Ev) {
    typedef typename AccOf<T>::type A;
    const long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    A acc = A(0);
    if (row < rows)
        for (int d = lane; d < Ev; d += 32)
            acc += to_acc(grad_out[row * Ev + d]) * to_acc(out[row * Ev + d]);
#pragma unroll
    for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (row < rows && lane == 0) {
        big_d[row] = acc;
        lse2[row] = lse[row] * (A)FLASH_LOG2E;  // +inf stays +inf: exp2(s - inf) = 0
    }
}

template <typename T, int D>
__global__ void __launch_bounds__(FLASH_MAX_THREADS) flash_bwd_dkdv(const T* __restrict__ q, const T* __restrict__ k,
                               const T* __restrict__ v, const T* __restrict__ grad_out,
                               const typename AccOf<T>::type* __restrict__ lse2,
                               const typename AccOf<T>::type* __restrict__ big_d,
                               typename AccOf<T>::type* __restrict__ dq_acc,
                               T* __restrict__ dk, T* __restrict__ dv,
                               int G, int L, int S, int E, int Ev, double scale, int lo, int hi,
                               int bq, int bk, int bh0) {
    typedef typename AccOf<T>::type A;
    constexpr int TPR = D / 16;
    constexpr int C = D / TPR;
    constexpr int DP = D + 1;
    FLASH_DYNAMIC_SMEM(smem_raw);
    A* Ks = reinterpret_cast<A*>(smem_raw);  // (bk, DP): this block's keys, for dQ
    A* Qs = Ks + bk * DP;                    // (bq, DP)
    A* dOs = Qs + bq * DP;                   // (bq, DP)
    A* Ls = dOs + bq * DP;                   // (bq): lse in log2 units
    A* Ds = Ls + bq;                         // (bq)
    A* dSs = Ds + bq;                        // (bq, bk + 1)
    const int SP = bk + 1;

    const int kvh = bh0 + blockIdx.y;  // (batch, kv head)
    const int j0 = blockIdx.x * bk;
    const int j1 = imin(j0 + bk, S), n = j1 - j0;
    const int r = threadIdx.x / TPR, t = threadIdx.x % TPR;
    const int j = j0 + r;
    const bool key_ok = r < bk && j < S;
    const A scl = (A)scale, sl2 = (A)(scale * FLASH_LOG2E);

    const T* kg = k + (size_t)kvh * S * E;
    const T* vg = v + (size_t)kvh * S * Ev;
    A kr[C], vr[C], dkr[C], dvr[C];
#pragma unroll
    for (int c = 0; c < C; ++c) {
        const int d = t + TPR * c;
        kr[c] = (key_ok && d < E) ? to_acc(kg[(size_t)j * E + d]) : A(0);
        vr[c] = (key_ok && d < Ev) ? to_acc(vg[(size_t)j * Ev + d]) : A(0);
        dkr[c] = A(0);
        dvr[c] = A(0);
    }
    for (int idx = threadIdx.x; idx < n * E; idx += blockDim.x)
        Ks[(idx / E) * DP + idx % E] = to_acc(kg[(size_t)(j0 + idx / E) * E + idx % E]);

    int qb_first, qb_end;
    query_block_range(j0, j1, L, bq, lo, hi, &qb_first, &qb_end);
    for (int g = 0; g < G; ++g) {
        const size_t bh = (size_t)kvh * G + g;  // query head of this group
        const T* qg = q + bh * L * E;
        const T* dog = grad_out + bh * L * Ev;
        for (int qb = qb_first; qb < qb_end; ++qb) {
            const int i0 = qb * bq, m = imin(bq, L - i0);
            __syncthreads();  // previous tile's Q, dO and dS are no longer read
            for (int idx = threadIdx.x; idx < m * D; idx += blockDim.x) {
                const int ii = idx / D, d = idx % D;
                Qs[ii * DP + d] = d < E ? to_acc(qg[(size_t)(i0 + ii) * E + d]) : A(0);
                dOs[ii * DP + d] = d < Ev ? to_acc(dog[(size_t)(i0 + ii) * Ev + d]) : A(0);
            }
            for (int ii = threadIdx.x; ii < m; ii += blockDim.x) {
                Ls[ii] = lse2[bh * L + i0 + ii];
                Ds[ii] = big_d[bh * L + i0 + ii];
            }
            __syncthreads();

            for (int ii = 0; ii < m; ++ii) {  // uniform over the block: shuffles are safe
                const int i = i0 + ii;
                A qk = A(0), dp = A(0);
#pragma unroll
                for (int c = 0; c < C; ++c) {
                    qk += kr[c] * Qs[ii * DP + t + TPR * c];
                    dp += vr[c] * dOs[ii * DP + t + TPR * c];
                }
                qk = group_sum<TPR>(qk);
                dp = group_sum<TPR>(dp);
                const bool keep = key_ok && band_keep(i, j, lo, hi);
                const A p = keep ? acc_exp2(qk * sl2 - Ls[ii]) : A(0);  // 0 on empty rows too
                const A ds = p * (dp - Ds[ii]);
#pragma unroll
                for (int c = 0; c < C; ++c) {
                    dvr[c] += p * dOs[ii * DP + t + TPR * c];
                    dkr[c] += ds * Qs[ii * DP + t + TPR * c];
                }
                if (t == 0 && r < bk) dSs[ii * SP + r] = ds;
            }
            __syncthreads();  // the dS tile is complete

            A* dqg = dq_acc + bh * L * E;
            for (int idx = threadIdx.x; idx < m * E; idx += blockDim.x) {
                const int ii = idx / E, d = idx % E;
                A acc = A(0);
                for (int jj = 0; jj < n; ++jj) acc += dSs[ii * SP + jj] * Ks[jj * DP + d];
                atomicAdd(&dqg[(size_t)(i0 + ii) * E + d], acc * scl);
            }
        }
    }

    if (key_ok) {
#pragma unroll
        for (int c = 0; c < C; ++c) {
            const int d = t + TPR * c;
            if (d < E) dk[((size_t)kvh * S + j) * E + d] = from_acc<T>(dkr[c] * scl);
            if (d < Ev) dv[((size_t)kvh * S + j) * Ev + d] = from_acc<T>(dvr[c]);
        }
    }
}

#ifdef FLASH_COMPILE_CHECK
#define FLASH_BWD_INST(T, D)                                                                   \
    template __global__ void flash_bwd_dkdv<T, D>(                                              \
        const T*, const T*, const T*, const T*, const AccOf<T>::type*, const AccOf<T>::type*,   \
        AccOf<T>::type*, T*, T*, int, int, int, int, int, double, int, int, int, int, int);
#define FLASH_BWD_ALL(T)                                                                       \
    template __global__ void flash_bwd_preprocess<T>(const T*, const T*, const AccOf<T>::type*, \
                                                     AccOf<T>::type*, AccOf<T>::type*,         \
                                                     long long, int);                          \
    FLASH_BWD_INST(T, 32) FLASH_BWD_INST(T, 64) FLASH_BWD_INST(T, 128) FLASH_BWD_INST(T, 256)
FLASH_BWD_ALL(double)
FLASH_BWD_ALL(float)
FLASH_BWD_ALL(__half)
FLASH_BWD_ALL(__nv_bfloat16)
#endif
