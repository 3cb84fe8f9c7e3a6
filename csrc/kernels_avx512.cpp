// The vectorised kernels built for AVX-512. 32 vector registers hold 24 to 28
// accumulators in each micro-kernel: GEMM 8 filters x 3 vectors of pixels,
// direct forward 14 pixels x 2 vectors of filters (14 divides the rows of
// 56, 28 and 14 outputs that 3x3 layers so often have, where blocks of 12
// left 7-42 % of the accumulators idle), direct backward-weights 6 taps x up
// to 4 vectors of filters, Winograd backward-weights 6 channels x 2 blocks
// of 2 vectors of filters.
// Compiled with -mavx512f -mavx512dq -mavx512bw -mavx512vl -mfma; only called
// when the CPU reports those features.
#define FASTCONV_ISA avx512
#define FASTCONV_VECTOR_BYTES 64
#define FASTCONV_MR 8
#define FASTCONV_NV 3
#define FASTCONV_DIRECT_NP 14
#define FASTCONV_BW_NJ 6
#define FASTCONV_WINOGRAD_BW_BLOCKS 2
#define FASTCONV_BW_NK 4
#include "simd_kernels_impl.h"
