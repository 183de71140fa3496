// The numbers the CUDA kernels and the Python launch planning share, written once.
// The kernels include this file; attention_scratch/backends/cuda/constants.py reads its
// "#define NAME <integer>" lines, so the launch planning, the CPU emulation and the NumPy
// model of the kernel (kernel_model.py) use the very same values. Keep every value a
// plain integer literal.
#pragma once

#define FLASH_MAX_THREADS 256  // threads per block of the scalar kernels: 256 x 255 registers fit an SM's 65536
#define FLASH_KC 16            // flash_fwd_scalar: keys per register chunk of scores
#define FLASH_BWD_ROWS 8       // flash_bwd_preprocess: rows per block, one warp per row
#define MMA_WARPS 4            // flash_fwd_mma: warps per block
#define MMA_MT 2               // flash_fwd_mma: 16-row m-tiles per warp
#define MMA_BQ 128             // flash_fwd_mma: query rows per block, 16 * MMA_MT * MMA_WARPS
#define MMA_BK_SMALL_D 64      // flash_fwd_mma: keys per tile for head dims D <= 64
#define MMA_BK_LARGE_D 32      // flash_fwd_mma: keys per tile for D > 64 (O and S stay in 255 registers)
#define WMMA_WARPS 4           // flash_fwd_wmma: warps per block
#define WMMA_BQ 64             // flash_fwd_wmma: query rows per block
#define WMMA_BK 64             // flash_fwd_wmma: keys per tile
