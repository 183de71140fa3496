// Shared pieces of the flash attention kernels (chapter 13).
//
// Layout seen by every kernel (the Python driver makes the arrays contiguous):
//   q, out, dq : (N*Hq, L, E or Ev)   one "bh" index per (batch, query head)
//   k, v, dk, dv : (N*Hkv, S, E or Ev) query head bh reads key/value head bh / G
//   lse : (N*Hq, L), natural log-sum-exp, +inf on rows with nothing to attend to.
// The mask is a diagonal band: key j is kept for query i exactly when
//   lo <= j - i <= hi
// (causal in either alignment, sliding windows, or both; see flash_tiles.py).
// The driver clamps lo to >= -L and hi to <= S, so "unlimited" fits in an int.
//
// The same source compiles three ways: with NVRTC (CuPy RawModule), with nvcc
// (the compile check), and with g++ for the CPU emulation, where
// FLASH_EMULATION is defined and cuda_emulation.h supplies threadIdx,
// __syncthreads, warp shuffles, half types, WMMA fragments, and mma.sync,
// ldmatrix and cp.async (the helpers of mma_sm80.cuh).
#pragma once

#ifndef FLASH_EMULATION
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#define FLASH_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#endif

// Accumulation type: float for float/half/bfloat16 input, double for double input.
template <typename T> struct AccOf { typedef float type; };
template <> struct AccOf<double> { typedef double type; };

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_acc(float x);
template <> __device__ __forceinline__ float from_acc<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_acc<__half>(float x) { return __float2half(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) {
    return __float2bfloat16(x);
}
template <typename T> __device__ __forceinline__ T from_acc(double x);
template <> __device__ __forceinline__ double from_acc<double>(double x) { return x; }

__device__ __forceinline__ float acc_exp2(float x) { return exp2f(x); }
__device__ __forceinline__ double acc_exp2(double x) { return exp2(x); }
__device__ __forceinline__ float acc_log2(float x) { return log2f(x); }
__device__ __forceinline__ double acc_log2(double x) { return log2(x); }
__device__ __forceinline__ float acc_max(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double acc_max(double a, double b) { return fmax(a, b); }

// +inf without <cmath> (NVRTC has none): the bit patterns of IEEE infinity.
template <typename A> __device__ __forceinline__ A acc_inf();
template <> __device__ __forceinline__ float acc_inf<float>() { return __int_as_float(0x7f800000); }
template <> __device__ __forceinline__ double acc_inf<double>() {
    return __longlong_as_double(0x7ff0000000000000LL);
}

#define FLASH_LOG2E 1.4426950408889634
#define FLASH_LN2 0.6931471805599453

__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }

// Is key j kept for query i?  lo <= j - i <= hi.
__device__ __forceinline__ bool band_keep(int i, int j, int lo, int hi) {
    const int d = j - i;
    return d >= lo && d <= hi;
}

// Sum of x over the TPR consecutive lanes of a row group (TPR divides 32).
// Every lane of the warp must call it: the shuffles are collective.
template <int TPR, typename A> __device__ __forceinline__ A group_sum(A x) {
#pragma unroll
    for (int off = TPR / 2; off > 0; off /= 2) x += __shfl_xor_sync(0xffffffffu, x, off);
    return x;
}

// Key blocks a query block of rows i0..i1-1 must visit (flash_tiles.key_block_range).
__device__ __forceinline__ void key_block_range(int i0, int i1, int S, int bk, int lo, int hi,
                                                int* kb_first, int* kb_end) {
    const int first = imax(0, i0 + lo), last = imin(S - 1, i1 - 1 + hi);
    *kb_first = first <= last ? first / bk : 0;
    *kb_end = first <= last ? last / bk + 1 : 0;
}

// Query blocks a key block j0..j1-1 contributes to (flash_tiles.query_block_range).
__device__ __forceinline__ void query_block_range(int j0, int j1, int L, int bq, int lo, int hi,
                                                  int* qb_first, int* qb_end) {
    const int first = imax(0, j0 - hi), last = imin(L - 1, j1 - 1 - lo);
    *qb_first = first <= last ? first / bq : 0;
    *qb_end = first <= last ? last / bq + 1 : 0;
}
