// A CPU *emulation* of the small part of CUDA the flash kernels use, so that the
// kernel bodies in ../*.cu can be compiled with g++ and executed on a machine
// without a GPU. It is a test harness, not a GPU: every thread of a block is a
// fiber (ucontext), the fibers of one block run one at a time on one OS thread
// and switch only at __syncthreads, __syncwarp and warp collectives, one warp
// running ahead until it reaches a __syncthreads, and the blocks of a grid run
// one after another. That is enough to check indexing, masking,
// the online softmax, block skipping, shared-memory use and the collective
// operations; it says nothing about speed, memory coalescing, or races that only
// real concurrency would expose.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <type_traits>
#include <utility>
#include <vector>
#include <ucontext.h>

#define FLASH_EMULATION 1
#define __global__
#define __device__ inline
#define __host__
#define __forceinline__
#define __restrict__ __restrict
#define __launch_bounds__(...)

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace emu {
extern dim3 thread_idx, block_idx, block_dim, grid_dim;
extern unsigned char* smem;
void sync_block();
void sync_warp();
void exchange(const void* value, void* result, int size, int src_lane);
void mma_m16n8k16(bool bfloat16, float* d, const unsigned* a, const unsigned* b);
void ldmatrix_x4(bool trans, unsigned* r, const void* row);
void cp_async16(void* dst, const void* src, bool valid);
void cp_async_commit();
void cp_async_wait(int newest_in_flight);
}  // namespace emu

#define threadIdx emu::thread_idx
#define blockIdx emu::block_idx
#define blockDim emu::block_dim
#define gridDim emu::grid_dim
#define FLASH_DYNAMIC_SMEM(name) unsigned char* name = emu::smem

inline void __syncthreads() { emu::sync_block(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::sync_warp(); }

template <typename V> inline V __shfl_xor_sync(unsigned, V value, int lane_mask, int = 32) {
    V result;
    emu::exchange(&value, &result, sizeof(V), (int)(threadIdx.x % 32) ^ lane_mask);
    return result;
}

// One OS thread runs every fiber, so a plain add is atomic here.
inline float atomicAdd(float* p, float x) { float old = *p; *p = old + x; return old; }
inline double atomicAdd(double* p, double x) { double old = *p; *p = old + x; return old; }

inline float __int_as_float(int x) { float f; std::memcpy(&f, &x, 4); return f; }
inline double __longlong_as_double(long long x) { double f; std::memcpy(&f, &x, 8); return f; }

// ---- 16-bit floating-point storage types (round to nearest even) ----
struct __half { uint16_t bits; };
struct __nv_bfloat16 { uint16_t bits; };

inline float __half2float(__half h) {
    const uint32_t sign = (uint32_t)(h.bits & 0x8000u) << 16, exp = (h.bits >> 10) & 0x1f,
                   man = h.bits & 0x3ffu;
    uint32_t f;
    if (exp == 0) {
        if (man == 0) f = sign;
        else {  // subnormal: normalise
            int e = -1;
            uint32_t m = man;
            do { ++e; m <<= 1; } while ((m & 0x400u) == 0);
            f = sign | ((uint32_t)(127 - 15 - e) << 23) | ((m & 0x3ffu) << 13);
        }
    } else if (exp == 31) f = sign | 0x7f800000u | (man << 13);
    else f = sign | ((exp + 127 - 15) << 23) | (man << 13);
    float out;
    std::memcpy(&out, &f, 4);
    return out;
}

inline __half __float2half(float x) {
    uint32_t f;
    std::memcpy(&f, &x, 4);
    const uint16_t sign = (f >> 16) & 0x8000u;
    const float a = std::fabs(x);
    __half h;
    if (std::isnan(x)) { h.bits = sign | 0x7e00u; return h; }
    if (a >= 65520.0f) { h.bits = sign | 0x7c00u; return h; }  // rounds to infinity
    if (a < 6.103515625e-05f) {  // subnormal half: a multiple of 2^-24, round half to even
        const float scaled = a * 16777216.0f;  // exact
        h.bits = sign | (uint16_t)std::nearbyint(scaled);
        return h;
    }
    uint32_t exp = ((f >> 23) & 0xff) - 127 + 15, man = f & 0x7fffffu;
    uint32_t rounded = (exp << 10) | (man >> 13);
    const uint32_t rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (rounded & 1u))) ++rounded;
    h.bits = sign | (uint16_t)rounded;
    return h;
}

inline float __bfloat162float(__nv_bfloat16 b) {
    const uint32_t f = (uint32_t)b.bits << 16;
    float out;
    std::memcpy(&out, &f, 4);
    return out;
}

inline __nv_bfloat16 __float2bfloat16(float x) {
    uint32_t f;
    std::memcpy(&f, &x, 4);
    __nv_bfloat16 b;
    if (std::isnan(x)) { b.bits = (uint16_t)((f >> 16) | 0x40u); return b; }
    f += 0x7fffu + ((f >> 16) & 1u);  // round to nearest even
    b.bits = (uint16_t)(f >> 16);
    return b;
}

// ---- mma_sm80.cuh: the register-fragment MMA and its helpers ----
template <typename T> inline unsigned pack2(float lo, float hi);
template <> inline unsigned pack2<__half>(float lo, float hi) {
    return (unsigned)__float2half(lo).bits | ((unsigned)__float2half(hi).bits << 16);
}
template <> inline unsigned pack2<__nv_bfloat16>(float lo, float hi) {
    return (unsigned)__float2bfloat16(lo).bits | ((unsigned)__float2bfloat16(hi).bits << 16);
}

// d += A B for the warp: a warp collective (every lane must call it), see emulation.cpp.
template <typename T> inline void mma16816(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    static_assert(std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value, "16-bit inputs only");
    emu::mma_m16n8k16(std::is_same<T, __nv_bfloat16>::value, d, a, b);
}

// ldmatrix: a warp collective that gathers the 32 row addresses (see emulation.cpp).
inline void ldmatrix_x4(unsigned (&r)[4], const void* row) { emu::ldmatrix_x4(false, r, row); }
inline void ldmatrix_x4_trans(unsigned (&r)[4], const void* row) { emu::ldmatrix_x4(true, r, row); }

// cp.async: the destination is overwritten with garbage at issue and the copy carried out
// only at cp_async_wait (emulation.cpp), so both a missing wait and a missing barrier show.
inline void cp_async16(void* dst, const void* src, bool valid) { emu::cp_async16(dst, src, valid); }
inline void cp_async_commit() { emu::cp_async_commit(); }
template <int N> inline void cp_async_wait() { emu::cp_async_wait(N); }

// ---- WMMA: every lane holds the whole 16x16 tile; lane 0 stores it ----
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    float x[256];
};

inline float frag_value(float v) { return v; }
inline float frag_value(__half v) { return __half2float(v); }
inline float frag_value(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename Use, typename T, typename Layout, typename P>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const P* p, unsigned ldm) {
    const bool col = std::is_same<Layout, col_major>::value;
    for (int r = 0; r < 16; ++r)
        for (int c = 0; c < 16; ++c) f.x[r * 16 + c] = frag_value(col ? p[c * ldm + r] : p[r * ldm + c]);
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p,
                             unsigned ldm, layout_t layout) {
    for (int r = 0; r < 16; ++r)
        for (int c = 0; c < 16; ++c)
            f.x[r * 16 + c] = layout == mem_col_major ? p[c * ldm + r] : p[r * ldm + c];
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f,
                              unsigned ldm, layout_t layout) {
    emu::sync_warp();  // every lane has finished reading what lane 0 is about to overwrite
    if (threadIdx.x % 32 != 0) return;
    for (int r = 0; r < 16; ++r)
        for (int c = 0; c < 16; ++c)
            (layout == mem_col_major ? p[c * ldm + r] : p[r * ldm + c]) = f.x[r * 16 + c];
}

template <typename Frag> inline void fill_fragment(Frag& f, float value) {
    for (float& e : f.x) e = value;
}

template <typename TA, typename LA, typename TB, typename LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
                     const fragment<matrix_a, 16, 16, 16, TA, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, TB, LB>& b,
                     const fragment<accumulator, 16, 16, 16, float>& c) {
    float tmp[256];
    for (int r = 0; r < 16; ++r)
        for (int n = 0; n < 16; ++n) {
            float s = c.x[r * 16 + n];
            for (int k = 0; k < 16; ++k) s += a.x[r * 16 + k] * b.x[k * 16 + n];
            tmp[r * 16 + n] = s;
        }
    std::memcpy(d.x, tmp, sizeof(tmp));
}
}  // namespace wmma
}  // namespace nvcuda

namespace emu {
// Run `kernel` (a closure calling the kernel) over grid x block threads, block by block.
// `smem_bytes` of dynamic shared memory are followed by a guard zone that is checked
// after every block, so a kernel writing past its shared-memory budget fails loudly.
// Returns 0, or a nonzero code: 1 deadlock at a barrier, 2 shared-memory overrun, 3 bad block
// shape, 4 an ldmatrix or cp.async address not 16-byte aligned (a fault on a GPU).
int launch(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& kernel);
}  // namespace emu
