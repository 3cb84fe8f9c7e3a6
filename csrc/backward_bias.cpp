// dL/dbias: grad_y summed over batch and output pixels, per filter. Sums run
// in double (also for float32) in a fixed order -- image after image, each
// plane's pixels in turn into eight independent partial sums, so that the
// adds are not latency-bound -- whichever thread sums which filter.
#include <vector>

#include "kernels.h"
#include "parallel.h"

namespace fastconv {

template <class T>
void conv_backward_bias(const ConvShape& p, const T* grad_y, T* grad_bias) {
    const int64_t pixels = p.out_h * p.out_w;
    const bool dense = p.ys.w == 1 && p.ys.h == p.out_w;
    std::vector<double> parts(static_cast<size_t>(8 * p.k), 0.0);  // filter k's partial sums at 8 * k
    parallel_region(worth_parallel(static_cast<double>(p.n * p.k * pixels)), [&] {
        // Each thread sums its range of filters image by image: in NCHW its
        // filters' planes of an image are one run of memory. Filter by
        // filter instead, the planes it read were a batch apart, runs too
        // short for the prefetcher: 2.2 GB/s, 19 % of a one-channel layer's
        // backward.
        const auto [k0, k1] = thread_share(p.k);
        for (int64_t n = 0; n < p.n; ++n) {
            if (dense) {
                for (int64_t k = k0; k < k1; ++k) {
                    const T* plane = grad_y + n * p.ys.n + k * p.ys.c;
                    double* part = parts.data() + 8 * k;
                    int64_t i = 0;
                    for (; i + 8 <= pixels; i += 8)
                        for (int l = 0; l < 8; ++l) part[l] += static_cast<double>(plane[i + l]);
                    for (; i < pixels; ++i) part[i % 8] += static_cast<double>(plane[i]);
                }
            } else {  // channels last, say: pixel by pixel, its filters side by side
                for (int64_t i = 0; i < pixels; ++i) {
                    const T* at = grad_y + n * p.ys.n + (i / p.out_w) * p.ys.h + (i % p.out_w) * p.ys.w;
                    for (int64_t k = k0; k < k1; ++k) parts[static_cast<size_t>(8 * k + i % 8)] += static_cast<double>(at[k * p.ys.c]);
                }
            }
        }
        for (int64_t k = k0; k < k1; ++k) {
            const double* part = parts.data() + 8 * k;
            grad_bias[k] = static_cast<T>(((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7])));
        }
    });
}

template void conv_backward_bias<float>(const ConvShape&, const float*, float*);
template void conv_backward_bias<double>(const ConvShape&, const double*, double*);

}  // namespace fastconv
