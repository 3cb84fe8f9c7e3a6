// dL/dweight, portable C++. Each task owns a block of filters of one group
// and sums over batch and output pixels in a fixed order, so no partial sums
// need reducing and the result does not depend on the thread count.
#include <algorithm>
#include <vector>

#include "generic.h"
#include "im2col.h"
#include "parallel.h"

namespace fastconv::generic {

template <class T>
void conv_backward_weights(const ConvShape& p, const T* grad_y, const T* x, T* grad_weight, T* grad_bias) {
    const int64_t cg = p.c_per_group(), kg = p.k_per_group();
    const int64_t taps = cg * p.r * p.s;
    const int64_t block = 4;  // filters per task; a shape-only choice keeps results thread-independent
    const int64_t blocks_per_group = (kg + block - 1) / block;
    const int64_t tasks = p.groups * blocks_per_group;
    const int64_t cols = tile_columns(taps, p.out_w);

    PerThread<T> col_mem(taps * cols), col_t_mem(taps * cols);
    parallel_region(worth_parallel(conv_flops(p)), [&] {
        T* const col = col_mem.get();
        T* const col_t = col_t_mem.get();
#pragma omp for schedule(dynamic)
        for (int64_t t = 0; t < tasks; ++t) {
            const int64_t g = t / blocks_per_group;
            const int64_t k0 = g * kg + (t % blocks_per_group) * block;
            const int64_t k1 = std::min(k0 + block, (g + 1) * kg);
            std::fill(grad_weight + k0 * taps, grad_weight + k1 * taps, T(0));
            for (int64_t n = 0; n < p.n; ++n) {
                const T* x_group = x + n * p.xs.n + g * cg * p.xs.c;
                for (int64_t oh = 0; oh < p.out_h; ++oh) {
                    for (int64_t ow0 = 0; ow0 < p.out_w; ow0 += cols) {
                        const int64_t m = std::min(cols, p.out_w - ow0);
                        im2col_row(p, x_group, cg, oh, ow0, m, col, m);
                        // col_t[i][j]: one output pixel's taps contiguous.
                        for (int64_t j = 0; j < taps; ++j)
                            for (int64_t i = 0; i < m; ++i) col_t[i * taps + j] = col[j * m + i];
                        for (int64_t k = k0; k < k1; ++k) {
                            const T* gy = grad_y + n * p.ys.n + k * p.ys.c + oh * p.ys.h + ow0 * p.ys.w;
                            T* gw = grad_weight + k * taps;
                            for (int64_t i = 0; i < m; ++i) {
                                const T a = gy[i * p.ys.w];
                                const T* ci = col_t + i * taps;
                                for (int64_t j = 0; j < taps; ++j) gw[j] += a * ci[j];
                            }
                        }
                    }
                }
            }
        }
    });
    if (grad_bias) conv_backward_bias(p, grad_y, grad_bias);
}

template void conv_backward_weights<float>(const ConvShape&, const float*, const float*, float*, float*);
template void conv_backward_weights<double>(const ConvShape&, const double*, const double*, double*, double*);

}  // namespace fastconv::generic
