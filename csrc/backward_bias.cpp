// dL/dbias: grad_y summed over batch and output pixels, per filter. Sums run
// in double (also for float32) in a fixed order, per filter in one task.
#include "kernels.h"

namespace fastconv {

template <class T>
void conv_backward_bias(const ConvShape& p, const T* grad_y, T* grad_bias) {
    const int64_t pixels = p.out_h * p.out_w;
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < p.k; ++k) {
        double total = 0.0;
        for (int64_t n = 0; n < p.n; ++n) {
            const T* src = grad_y + (n * p.k + k) * pixels;
            double plane = 0.0;
            for (int64_t i = 0; i < pixels; ++i) plane += static_cast<double>(src[i]);
            total += plane;
        }
        grad_bias[k] = static_cast<T>(total);
    }
}

template void conv_backward_bias<float>(const ConvShape&, const float*, float*);
template void conv_backward_bias<double>(const ConvShape&, const double*, double*);

}  // namespace fastconv
