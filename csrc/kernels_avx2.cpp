// The vectorised kernels built for AVX2 + FMA. 16 vector registers hold 12
// accumulators in each micro-kernel: GEMM 6 filters x 2 vectors of pixels,
// direct forward 6 pixels x 2 vectors of filters, direct backward-weights
// 6 taps x up to 2 vectors of filters, Winograd backward-weights 6 channels
// x 1 block of 2 vectors of filters.
// Compiled with -mavx2 -mfma; only called when the CPU reports both.
#define FASTCONV_ISA avx2
#define FASTCONV_VECTOR_BYTES 32
#define FASTCONV_MR 6
#define FASTCONV_NV 2
#define FASTCONV_DIRECT_NP 6
#define FASTCONV_BW_NJ 6
#define FASTCONV_WINOGRAD_BW_BLOCKS 1
#define FASTCONV_BW_NK 2
#include "simd_kernels_impl.h"
