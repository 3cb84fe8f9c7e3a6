// dL/dbias: grad_y summed over batch and output pixels, per filter. Sums run
// in double (also for float32) in a fixed order -- image after image, each
// plane's pixels in turn into kBiasParts independent partial sums, so that the
// adds are not latency-bound -- whichever thread sums which filter. The same
// order on every instruction set, so every one gives the same bits; only the
// width of the conversions and adds differs.
// Included inside namespace fastconv::<isa> by backward_bias_generic.cpp and
// simd_kernels_impl.h.
#pragma once

#include <algorithm>
#include <vector>

#include "conv_shape.h"
#include "parallel.h"

namespace fastconv::FASTCONV_ISA {

// 16 partial sums: two AVX-512 vectors of doubles, four of AVX2.
constexpr int64_t kBiasParts = 16;

// Sums of at least this many values get a team. dL/db reads each value once
// and adds it, 10-20 values per ns on one core, so a team's start (a few us)
// pays off long before worth_parallel's million flops of a convolution: at
// 400 K values (16 x 512 x 7 x 7) one thread took 51 us, PyTorch on two 28.
constexpr int64_t kBiasParallelValues = int64_t{1} << 16;

// Adds a dense plane of `pixels` values of one filter to its kBiasParts
// partial sums `part`: pixel i to part i % kBiasParts.
template <class T>
inline void add_to_bias_parts(const T* __restrict plane, int64_t pixels, double* __restrict part) {
    double sums[kBiasParts];  // in registers
    for (int64_t l = 0; l < kBiasParts; ++l) sums[l] = part[l];
    int64_t i = 0;
    for (; i + kBiasParts <= pixels; i += kBiasParts)
        for (int64_t l = 0; l < kBiasParts; ++l) sums[l] += static_cast<double>(plane[i + l]);
    for (; i < pixels; ++i) sums[i % kBiasParts] += static_cast<double>(plane[i]);
    for (int64_t l = 0; l < kBiasParts; ++l) part[l] = sums[l];
}

// A filter's dL/db from its kBiasParts partial sums, added pairwise in a fixed order.
template <class T>
inline T bias_total(const double* parts) {
    double part[kBiasParts];
    std::copy_n(parts, kBiasParts, part);
    for (int64_t half = kBiasParts / 2; half >= 1; half /= 2)
        for (int64_t l = 0; l < half; ++l) part[l] = part[l] + part[l + half];
    return static_cast<T>(part[0]);
}

// Whether grad_y's planes are dense, as add_to_bias_parts reads them.
inline bool dense_planes(const ConvShape& p) { return p.ys.w == 1 && p.ys.h == p.out_w; }

template <class T>
void conv_backward_bias(const ConvShape& p, const T* grad_y, T* grad_bias) {
    const int64_t pixels = p.out_h * p.out_w;
    const bool dense = dense_planes(p);
    std::vector<double> parts(static_cast<size_t>(kBiasParts * p.k), 0.0);  // filter k's partial sums at kBiasParts * k
    parallel_region(p.k > 1 && p.n * p.k * pixels >= kBiasParallelValues, [&] {
        // Each thread sums its range of filters image by image: in NCHW its
        // filters' planes of an image are one run of memory. Filter by
        // filter instead, the planes it read were a batch apart, runs too
        // short for the prefetcher: 2.2 GB/s, 19 % of a one-channel layer's
        // backward.
        const auto [k0, k1] = thread_share(p.k);
        for (int64_t n = 0; n < p.n; ++n) {
            if (dense) {
                for (int64_t k = k0; k < k1; ++k)
                    add_to_bias_parts(grad_y + n * p.ys.n + k * p.ys.c, pixels, parts.data() + kBiasParts * k);
            } else {  // channels last, say: pixel by pixel, its filters side by side
                for (int64_t i = 0; i < pixels; ++i) {
                    const T* at = grad_y + n * p.ys.n + (i / p.out_w) * p.ys.h + (i % p.out_w) * p.ys.w;
                    for (int64_t k = k0; k < k1; ++k) parts[static_cast<size_t>(kBiasParts * k + i % kBiasParts)] += static_cast<double>(at[k * p.ys.c]);
                }
            }
        }
        for (int64_t k = k0; k < k1; ++k) grad_bias[k] = bias_total<T>(parts.data() + kBiasParts * k);
    });
}

}  // namespace fastconv::FASTCONV_ISA
