// The vectorised kernels built for AVX-512 (32 vector registers: 12 x 2
// accumulators in the GEMM micro-kernel, 4 x 6 in the dot-product one).
// Compiled with -mavx512f -mavx512dq -mavx512bw -mavx512vl -mfma; only called
// when the CPU reports those features.
#define FASTCONV_ISA avx512
#define FASTCONV_VECTOR_BYTES 64
#define FASTCONV_MR 8
#define FASTCONV_NV 3
#define FASTCONV_DOT_MK 4
#define FASTCONV_DIRECT_NP 12
#define FASTCONV_BW_NJ 6
#define FASTCONV_BW_NK 4
#define FASTCONV_DOT_NJ 6
#include "simd_kernels_impl.h"
