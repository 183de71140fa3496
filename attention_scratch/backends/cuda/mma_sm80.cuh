// Warp-level tensor-core helpers for flash_fwd_mma.cu (sm_80 and newer): the MMA, the
// fragment loads from shared memory (ldmatrix) and asynchronous copies (cp.async).
//
// mma16816<T>(d, a, b): d += A B for one warp, A 16x16 and B 16x8 in T (half or
// bfloat16), d 16x8 in float. Every lane holds a fragment (PTX ISA, "Matrix
// Fragments for mma.m16n8k16 with floating point type"); with
// g = lane / 4 and t = lane % 4:
//   A (4 registers of two T):  a[0] = A[g][2t..2t+1]      a[1] = A[g+8][2t..2t+1]
//                              a[2] = A[g][2t+8..2t+9]    a[3] = A[g+8][2t+8..2t+9]
//   B (2 registers of two T):  b[0] = B[2t..2t+1][g]      b[1] = B[2t+8..2t+9][g]
//   D (4 floats):              d[0..1] = D[g][2t..2t+1]   d[2..3] = D[g+8][2t..2t+1]
// The first element of a pair sits in the low 16 bits. On a GPU the helpers are
// inline PTX and CUDA intrinsics; in the CPU emulation (FLASH_EMULATION) the same
// names come from cuda_emulation.h, where the MMA is a warp collective that
// rebuilds A and B from all 32 lanes' registers by exactly these rules.
#pragma once

#ifndef FLASH_EMULATION
// Two floats rounded to T and packed as one register: lo in bits 0-15, hi in bits 16-31.
template <typename T> __device__ __forceinline__ unsigned pack2(float lo, float hi);
template <> __device__ __forceinline__ unsigned pack2<__half>(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&h);
}
template <> __device__ __forceinline__ unsigned pack2<__nv_bfloat16>(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&h);
}

template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]);
template <>
__device__ __forceinline__ void mma16816<__half>(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&d)[4], const unsigned (&a)[4],
                                                        const unsigned (&b)[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

#ifndef FLASH_EMULATION
// Four 8x8 matrices of 16-bit values from shared memory into registers, one warp: lanes
// 8i .. 8i+7 give the addresses of the 8 rows (16 bytes each) of matrix i, and r[i] receives
// matrix i in the layout of an MMA fragment: lane (g, t) gets entries (g, 2t) and (g, 2t+1);
// with ..._trans the matrix is transposed on the way: entries (2t, g) and (2t+1, g).
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* row) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const void* row) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}

// Asynchronous copies global -> shared (sm_80): 16 bytes, or 16 zero bytes when !valid
// (src is then not read). Copies issued between two commits form a group; wait<N> blocks
// until at most the N newest groups are still in flight.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
#endif
