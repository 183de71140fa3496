// Flash attention forward pass, one CUDA thread block per (batch*head, query tile).
//
// Thread layout: TPR consecutive threads ("a row group") own one query row; thread t
// of the group owns the head dims d = t, t + TPR, t + 2*TPR, ... (C = D / TPR of
// them), so a row's query vector and its running output live in registers, split
// over TPR threads. A dot product q.k is a partial sum per thread plus a
// group_sum over the TPR lanes (warp shuffles).
//
// Per key tile: the block copies K and V rows j0..j1-1 into shared memory (every
// row of the block reads them), then each row group walks the tile in chunks of
// KC keys: scores -> chunk maximum -> rescale the running state once -> add
// exp2(s - m) * v. Scores are kept in log2 units (scale * log2(e) is folded into
// q), so the exponentials are exp2. Tiles the mask band leaves empty are never
// loaded (causal/window block skipping); partial tiles are masked per entry.
#include "flash_common.cuh"
#include "flash_constants.cuh"

template <typename T, int D>
__global__ void __launch_bounds__(FLASH_MAX_THREADS) flash_fwd_scalar(const T* __restrict__ q, const T* __restrict__ k,
                                 const T* __restrict__ v, T* __restrict__ out,
                                 typename AccOf<T>::type* __restrict__ lse,
                                 int G, int L, int S, int E, int Ev, double scale, int lo, int hi,
                                 int bq, int bk, int bh0) {
    typedef typename AccOf<T>::type A;
    constexpr int TPR = D / 16;  // threads per query row: 2, 4, 8 or 16
    constexpr int C = D / TPR;   // head dims per thread: always 16
    constexpr int DP = D + 1;    // padded shared-memory row (fewer bank conflicts)
    FLASH_DYNAMIC_SMEM(smem_raw);
    A* Ks = reinterpret_cast<A*>(smem_raw);  // (bk, DP)
    A* Vs = Ks + bk * DP;                    // (bk, DP)

    const int bh = bh0 + blockIdx.y;  // (batch, query head)
    const int kvh = bh / G;           // its key/value head
    const int q0 = blockIdx.x * bq;   // first query row of this tile
    const int q1 = imin(q0 + bq, L);
    const int r = threadIdx.x / TPR, t = threadIdx.x % TPR;
    const int i = q0 + r;
    const bool row_ok = r < bq && i < L;  // threads past the tile only help load and shuffle

    const T* qg = q + (size_t)bh * L * E;
    const T* kg = k + (size_t)kvh * S * E;
    const T* vg = v + (size_t)kvh * S * Ev;
    const A sl2 = (A)(scale * FLASH_LOG2E);

    A qr[C], o[C];  // this thread's slice of the query row (scaled) and of the output
#pragma unroll
    for (int c = 0; c < C; ++c) {
        const int d = t + TPR * c;
        qr[c] = (row_ok && d < E) ? to_acc(qg[(size_t)i * E + d]) * sl2 : A(0);
        o[c] = A(0);
    }
    A m = -acc_inf<A>(), l = A(0);  // running maximum (log2 units) and running sum

    int kb_first, kb_end;
    key_block_range(q0, q1, S, bk, lo, hi, &kb_first, &kb_end);
    for (int kb = kb_first; kb < kb_end; ++kb) {
        const int j0 = kb * bk, n = imin(bk, S - j0);
        __syncthreads();  // the previous tile is no longer read
        for (int idx = threadIdx.x; idx < n * D; idx += blockDim.x) {
            const int jj = idx / D, d = idx % D;
            Ks[jj * DP + d] = d < E ? to_acc(kg[(size_t)(j0 + jj) * E + d]) : A(0);
            Vs[jj * DP + d] = d < Ev ? to_acc(vg[(size_t)(j0 + jj) * Ev + d]) : A(0);
        }
        __syncthreads();  // the tile is in shared memory

        for (int c0 = 0; c0 < n; c0 += FLASH_KC) {  // uniform over the block: shuffles are safe
            A s[FLASH_KC];
            A mx = m;
#pragma unroll
            for (int u = 0; u < FLASH_KC; ++u) {
                const int jj = c0 + u;
                A dot = A(0);
                if (jj < n) {
#pragma unroll
                    for (int c = 0; c < C; ++c) dot += qr[c] * Ks[jj * DP + t + TPR * c];
                }
                dot = group_sum<TPR>(dot);  // q.k * scale * log2(e), on every lane of the group
                const bool keep = row_ok && jj < n && band_keep(i, j0 + jj, lo, hi);
                s[u] = keep ? dot : -acc_inf<A>();
                mx = acc_max(mx, s[u]);
            }
            if (mx == -acc_inf<A>()) continue;  // nothing kept so far: state stays (-inf, 0, 0)
            const A alpha = acc_exp2(m - mx);  // rescales the old state; 0 when m was -inf
            l *= alpha;
#pragma unroll
            for (int c = 0; c < C; ++c) o[c] *= alpha;
#pragma unroll
            for (int u = 0; u < FLASH_KC; ++u) {
                const int jj = c0 + u;
                if (jj < n) {
                    const A p = acc_exp2(s[u] - mx);  // 0 for masked keys
                    l += p;
#pragma unroll
                    for (int c = 0; c < C; ++c) o[c] += p * Vs[jj * DP + t + TPR * c];
                }
            }
            m = mx;
        }
    }

    if (row_ok) {  // normalise once; empty rows: output 0, lse +inf
        const A inv = l > A(0) ? A(1) / l : A(0);
#pragma unroll
        for (int c = 0; c < C; ++c) {
            const int d = t + TPR * c;
            if (d < Ev) out[((size_t)bh * L + i) * Ev + d] = from_acc<T>(o[c] * inv);
        }
        if (t == 0)
            lse[(size_t)bh * L + i] = l > A(0) ? (m + acc_log2(l)) * (A)FLASH_LN2 : acc_inf<A>();
    }
}

#ifdef FLASH_COMPILE_CHECK  // the nvcc check instantiates every kernel the driver may ask for
#define FLASH_FWD_INST(T, D)                                                                   \
    template __global__ void flash_fwd_scalar<T, D>(const T*, const T*, const T*, T*,          \
                                                    AccOf<T>::type*, int, int, int, int, int,  \
                                                    double, int, int, int, int, int);
#define FLASH_FWD_ALL_D(T) FLASH_FWD_INST(T, 32) FLASH_FWD_INST(T, 64) FLASH_FWD_INST(T, 128) \
    FLASH_FWD_INST(T, 256)
FLASH_FWD_ALL_D(double)
FLASH_FWD_ALL_D(float)
FLASH_FWD_ALL_D(__half)
FLASH_FWD_ALL_D(__nv_bfloat16)
#endif
