// The vectorised kernels built for AVX2 + FMA (16 vector registers: 6 x 2
// accumulators in the GEMM micro-kernel, 3 x 4 in the dot-product one).
// Compiled with -mavx2 -mfma; only called when the CPU reports both.
#define FASTCONV_ISA avx2
#define FASTCONV_VECTOR_BYTES 32
#define FASTCONV_MR 6
#define FASTCONV_NV 2
#define FASTCONV_DOT_MK 3
#define FASTCONV_DIRECT_NP 6
#define FASTCONV_BW_NJ 6
#define FASTCONV_BW_NK 2
#define FASTCONV_DOT_NJ 4
#include "simd_kernels_impl.h"
