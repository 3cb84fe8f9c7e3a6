// dL/dx, portable C++. Gather form: each task owns one input row (n, group,
// ih) and sums, over the kernel rows kr that reach it from an existing output
// row, the filter taps times grad_y. No scatter, so no races and a fixed
// summation order. Stride > 1 skips the kernel rows that land between
// output rows.
#include <algorithm>
#include <vector>

#include "generic.h"
#include "im2col.h"
#include "parallel.h"

namespace fastconv::generic {

template <class T>
void conv_backward_data(const ConvShape& p, const T* grad_y, const T* weight, T* grad_x) {
    const int64_t cg = p.c_per_group(), kg = p.k_per_group();

    // weight_t[g][kr][c][kk][ks] = weight[g*kg + kk][c][kr][ks]: for a fixed
    // kernel row and input channel, the taps over (filter, ks) are contiguous.
    std::vector<T> weight_t(static_cast<size_t>(p.k * cg * p.r * p.s));
    for (int64_t g = 0; g < p.groups; ++g)
        for (int64_t kk = 0; kk < kg; ++kk)
            for (int64_t c = 0; c < cg; ++c)
                for (int64_t kr = 0; kr < p.r; ++kr)
                    for (int64_t ks = 0; ks < p.s; ++ks)
                        weight_t[(((g * p.r + kr) * cg + c) * kg + kk) * p.s + ks] =
                            weight[(((g * kg + kk) * cg + c) * p.r + kr) * p.s + ks];

    const int64_t rows = kg * p.s;  // tile rows: (filter, ks)
    const int64_t cols = tile_columns(rows, p.w);
    const int64_t tasks = p.n * p.groups * p.h;

    PerThread<T> tile_mem(rows * cols);
    PerThread<T> sums_mem(cg * p.w);  // the task's input row, every channel of the group
    parallel_region(worth_parallel(conv_flops(p)), [&] {
        T* const tile = tile_mem.get();
        T* const sums = sums_mem.get();
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tasks; ++t) {
            const int64_t ih = t % p.h;
            const int64_t g = (t / p.h) % p.groups;
            const int64_t n = t / (p.h * p.groups);
            std::fill(sums, sums + cg * p.w, T(0));

            for (int64_t kr = 0; kr < p.r; ++kr) {
                // Output row oh reaches input row ih through kernel row kr iff
                // oh * stride_h - pad_top + kr * dil_h == ih.
                const int64_t num = ih + p.pad_top - kr * p.dil_h;
                if (num < 0 || num % p.stride_h != 0 || num / p.stride_h >= p.out_h) continue;
                const int64_t oh = num / p.stride_h;
                const T* w_row = weight_t.data() + (g * p.r + kr) * cg * rows;

                for (int64_t iw0 = 0; iw0 < p.w; iw0 += cols) {
                    const int64_t m = std::min(cols, p.w - iw0);
                    // tile[(kk, ks)][i] = grad_y[n, k, oh, ow] where
                    // ow * stride_w - pad_left + ks * dil_w == iw0 + i, else 0.
                    for (int64_t kk = 0; kk < kg; ++kk) {
                        const T* gy_row = grad_y + n * p.ys.n + (g * kg + kk) * p.ys.c + oh * p.ys.h;
                        for (int64_t ks = 0; ks < p.s; ++ks) {
                            T* dst = tile + (kk * p.s + ks) * m;
                            std::fill(dst, dst + m, T(0));
                            const int64_t start = ks * p.dil_w - p.pad_left - iw0;
                            int64_t lo, hi;
                            valid_range(start, p.stride_w, p.out_w, m, lo, hi);
                            for (int64_t ow = lo; ow < hi; ++ow) dst[start + ow * p.stride_w] = gy_row[ow * p.ys.w];
                        }
                    }
                    for (int64_t c = 0; c < cg; ++c) {
                        T* out = sums + c * p.w + iw0;
                        const T* wc = w_row + c * rows;
                        for (int64_t j = 0; j < rows; ++j) {
                            const T wv = wc[j];
                            const T* tj = tile + j * m;
                            for (int64_t i = 0; i < m; ++i) out[i] += wv * tj[i];
                        }
                    }
                }
            }
            T* gx_row = grad_x + n * p.xs.n + g * cg * p.xs.c + ih * p.xs.h;
            for (int64_t c = 0; c < cg; ++c)
                for (int64_t iw = 0; iw < p.w; ++iw) gx_row[c * p.xs.c + iw * p.xs.w] = sums[static_cast<size_t>(c * p.w + iw)];
        }
    });
}

template void conv_backward_data<float>(const ConvShape&, const float*, const float*, float*);
template void conv_backward_data<double>(const ConvShape&, const double*, const double*, double*);

}  // namespace fastconv::generic
