// dL/dbias: grad_y summed over batch and output pixels, per filter. Sums run
// in double (also for float32) in a fixed order, per filter in one task, with
// eight independent partial sums so that the adds are not latency-bound.
#include "kernels.h"
#include "parallel.h"

namespace fastconv {

template <class T>
void conv_backward_bias(const ConvShape& p, const T* grad_y, T* grad_bias) {
    const int64_t pixels = p.out_h * p.out_w;
    parallel_region(worth_parallel(static_cast<double>(p.n * p.k * pixels)), [&] {
#pragma omp for schedule(static)
    for (int64_t k = 0; k < p.k; ++k) {
        double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int64_t n = 0; n < p.n; ++n) {
            const T* plane = grad_y + n * p.ys.n + k * p.ys.c;
            if (p.ys.w == 1 && p.ys.h == p.out_w) {  // a dense plane
                int64_t i = 0;
                for (; i + 8 <= pixels; i += 8)
                    for (int l = 0; l < 8; ++l) part[l] += static_cast<double>(plane[i + l]);
                for (; i < pixels; ++i) part[i % 8] += static_cast<double>(plane[i]);
            } else {  // channels last, say: the same order, strided
                for (int64_t i = 0; i < pixels; ++i)
                    part[i % 8] += static_cast<double>(plane[(i / p.out_w) * p.ys.h + (i % p.out_w) * p.ys.w]);
            }
        }
        grad_bias[k] = static_cast<T>(((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7])));
    }
    });
}

template void conv_backward_bias<float>(const ConvShape&, const float*, float*);
template void conv_backward_bias<double>(const ConvShape&, const double*, double*);

}  // namespace fastconv
