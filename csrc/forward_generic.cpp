// Forward convolution, portable C++: an implicit GEMM that builds the im2col
// tile of one output row at a time (never the whole batch), then accumulates
// filter rows into the output with vectorisable axpy loops.
#include <algorithm>
#include <vector>

#include "generic.h"
#include "im2col.h"
#include "parallel.h"

namespace fastconv::generic {

template <class T>
void conv_forward(const ConvShape& p, const T* x, const T* weight, const T* bias, T* y) {
    const int64_t cg = p.c_per_group(), kg = p.k_per_group();
    const int64_t taps = cg * p.r * p.s;  // reduction length per output value
    const int64_t cols = tile_columns(taps, p.out_w);
    const int64_t tasks = p.n * p.groups * p.out_h;

    PerThread<T> col_mem(taps * cols), sums_mem(cols);
    parallel_region(worth_parallel(conv_flops(p)), [&] {
        T* const col = col_mem.get();
        T* const sums = sums_mem.get();
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tasks; ++t) {
            const int64_t oh = t % p.out_h;
            const int64_t g = (t / p.out_h) % p.groups;
            const int64_t n = t / (p.out_h * p.groups);
            const T* x_group = x + n * p.xs.n + g * cg * p.xs.c;
            for (int64_t ow0 = 0; ow0 < p.out_w; ow0 += cols) {
                const int64_t m = std::min(cols, p.out_w - ow0);
                im2col_row(p, x_group, cg, oh, ow0, m, col, m);
                for (int64_t kk = 0; kk < kg; ++kk) {
                    const int64_t k = g * kg + kk;
                    T* out = y + n * p.ys.n + k * p.ys.c + oh * p.ys.h + ow0 * p.ys.w;
                    const T* wk = weight + k * taps;
                    T* acc = sums;
                    std::fill(acc, acc + m, T(0));
                    for (int64_t j = 0; j < taps; ++j) {
                        const T wv = wk[j];
                        const T* cj = col + j * m;
                        for (int64_t i = 0; i < m; ++i) acc[i] += wv * cj[i];
                    }
                    const T b = bias ? bias[k] : T(0);
                    for (int64_t i = 0; i < m; ++i) out[i * p.ys.w] = acc[i] + b;
                }
            }
        }
    });
}

template void conv_forward<float>(const ConvShape&, const float*, const float*, const float*, float*);
template void conv_forward<double>(const ConvShape&, const double*, const double*, const double*, double*);

}  // namespace fastconv::generic
