// dL/dweight vectorised over filters: for each output pixel, one vector of
// grad_y values (16 float32 filters with AVX-512, grad_y transposed per chunk
// of rows) is multiplied by the broadcast input value of each of NJ kernel
// taps, read from a zero-padded window of input rows as in the direct
// forward. NJ x NK accumulators stay in registers over a chunk of pixels.
// Each task owns a block of filters (and of taps) and walks every pixel in a
// fixed order, so the result does not depend on the thread count.
// Included by simd_kernels_impl.h inside the instruction set's namespace;
// FASTCONV_BW_NJ taps and up to FASTCONV_BW_NK filter vectors per micro-kernel.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "implicit_gemm.h"
#include "input_window.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastconv::FASTCONV_ISA {

inline int64_t max_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// acc[jj][f] += sum over `rows` output rows of `width` pixels of
// x[tap jj at (row, ow)] * gyt[row * width + ow][f]; tap jj of row r, pixel
// ow reads src[jj][r * row_step + ow * sw].
template <class T, int NJ, int NK>
void direct_bw_micro(const T* const* __restrict src, int64_t sw, int64_t row_step, const T* __restrict gyt,
                     int64_t rows, int64_t width, T* __restrict acc_mem) {
    using V = typename Simd<T>::vec;
    constexpr int L = kLanes<T>, F = NK * L;
    V acc[NJ][NK];
#pragma GCC unroll 8
    for (int jj = 0; jj < NJ; ++jj)
#pragma GCC unroll 4
        for (int v = 0; v < NK; ++v) acc[jj][v] = load<V>(acc_mem + jj * F + v * L);
    for (int64_t r = 0; r < rows; ++r) {
        const T* s[NJ];
#pragma GCC unroll 8
        for (int jj = 0; jj < NJ; ++jj) s[jj] = src[jj] + r * row_step;
        const T* d_row = gyt + r * width * F;
        for (int64_t ow = 0; ow < width; ++ow) {
            V d[NK];
#pragma GCC unroll 4
            for (int v = 0; v < NK; ++v) d[v] = load<V>(d_row + ow * F + v * L);
#pragma GCC unroll 8
            for (int jj = 0; jj < NJ; ++jj) {
                const T xv = s[jj][ow * sw];
#pragma GCC unroll 4
                for (int v = 0; v < NK; ++v) acc[jj][v] += xv * d[v];
            }
        }
    }
#pragma GCC unroll 8
    for (int jj = 0; jj < NJ; ++jj)
#pragma GCC unroll 4
        for (int v = 0; v < NK; ++v) store(acc_mem + jj * F + v * L, acc[jj][v]);
}

template <class T>
using DirectBwMicro = void (*)(const T* const*, int64_t, int64_t, const T*, int64_t, int64_t, T*);

template <class T, int NK, int... J>
DirectBwMicro<T> pick_direct_bw(int taps, std::integer_sequence<int, J...>) {
    DirectBwMicro<T> table[] = {&direct_bw_micro<T, J + 1, NK>...};
    return table[taps - 1];
}

template <class T, int NK>
void direct_backward_weights_nk(const ConvShape& p, const T* grad_y, const T* x, T* grad_weight) {
    constexpr int L = kLanes<T>, F = NK * L, NJ = FASTCONV_BW_NJ;
    const int64_t cg = p.c_per_group(), kg = p.k_per_group(), ntaps = cg * p.r * p.s;
    const int64_t kblocks = (kg + F - 1) / F;
    const InputWindow win(p);  // a chunk of pixels = the output rows of one window
    const int64_t row_step = p.stride_h * win.cols;  // window elements between output rows
    // Split the taps too when there are fewer filter blocks than threads (each
    // split transposes grad_y again, so no more than that). Every weight is
    // still summed by one task in pixel order: the split changes no result.
    const int64_t jsplit = std::max<int64_t>(1, std::min<int64_t>((max_threads() + p.groups * kblocks - 1) / (p.groups * kblocks),
                                                                  (ntaps + NJ - 1) / NJ));
    const int64_t jper = ((ntaps + jsplit - 1) / jsplit + NJ - 1) / NJ * NJ;
    const int64_t jblocks = (ntaps + jper - 1) / jper;
    const int64_t tasks = p.groups * kblocks * jblocks;

    const DirectBwMicro<T> full = pick_direct_bw<T, NK>(static_cast<int>(std::min<int64_t>(NJ, ntaps)),
                                                       std::make_integer_sequence<int, NJ>{});

    parallel_region(worth_parallel(conv_flops(p)), [&] {
        Scratch<T> window(win.size()), gyt(win.out_rows * p.out_w * F), acc(jper * F);
        const T* src[NJ];
#pragma omp for schedule(dynamic)
        for (int64_t t = 0; t < tasks; ++t) {
            const int64_t jb = t % jblocks, kb = (t / jblocks) % kblocks, g = t / (jblocks * kblocks);
            const int64_t j0 = jb * jper, j1 = std::min(ntaps, j0 + jper);
            const int64_t k0 = g * kg + kb * F, nk = std::min<int64_t>(F, kg - kb * F);
            std::fill(acc.get(), acc.get() + (j1 - j0) * F, T(0));
            for (int64_t n = 0; n < p.n; ++n) {
                const T* xg = x + n * p.xs.n + g * cg * p.xs.c;
                for (int64_t oh0 = 0; oh0 < p.out_h; oh0 += win.out_rows) {
                    const int64_t oh1 = std::min(p.out_h, oh0 + win.out_rows);
                    const T* base = win.prepare(p, xg, oh0, window.get());
                    // gyt[(oh - oh0) * out_w + ow][f] = grad_y[n, k0 + f, oh, ow], 0 past the block's filters.
                    const int64_t pix = (oh1 - oh0) * p.out_w;
                    for (int64_t f = 0; f < F; ++f) {
                        if (f < nk) {
                            const T* gy = grad_y + n * p.ys.n + (k0 + f) * p.ys.c + oh0 * p.ys.h;
                            if (p.y_dense()) {
                                for (int64_t i = 0; i < pix; ++i) gyt.get()[i * F + f] = gy[i];
                            } else {
                                for (int64_t i = 0; i < pix; ++i)
                                    gyt.get()[i * F + f] = gy[(i / p.out_w) * p.ys.h + (i % p.out_w) * p.ys.w];
                            }
                        } else {
                            for (int64_t i = 0; i < pix; ++i) gyt.get()[i * F + f] = T(0);
                        }
                    }
                    for (int64_t j = j0; j < j1; j += NJ) {
                        const int64_t nj = std::min<int64_t>(NJ, j1 - j);
                        const DirectBwMicro<T> micro =
                            nj == NJ ? full : pick_direct_bw<T, NK>(static_cast<int>(nj), std::make_integer_sequence<int, NJ>{});
                        for (int64_t jj = 0; jj < nj; ++jj) src[jj] = base + win.offset[static_cast<size_t>(j + jj)];
                        if (row_step == p.out_w) {  // rows follow each other in the window: one long row
                            micro(src, 1, 0, gyt.get(), 1, (oh1 - oh0) * p.out_w, acc.get() + (j - j0) * F);
                        } else {
                            micro(src, p.stride_w, row_step, gyt.get(), oh1 - oh0, p.out_w, acc.get() + (j - j0) * F);
                        }
                    }
                }
            }
            for (int64_t f = 0; f < nk; ++f)
                for (int64_t j = j0; j < j1; ++j) grad_weight[(k0 + f) * ntaps + j] = acc.get()[(j - j0) * F + f];
        }
    });
}

template <class T>
void direct_backward_weights(const ConvShape& p, const T* grad_y, const T* x, T* grad_weight) {
    const int64_t vectors = (p.k_per_group() + kLanes<T> - 1) / kLanes<T>;
    if (vectors <= 1) return direct_backward_weights_nk<T, 1>(p, grad_y, x, grad_weight);
    if (vectors == 2 || FASTCONV_BW_NK == 2) return direct_backward_weights_nk<T, 2>(p, grad_y, x, grad_weight);
    if (vectors == 3) return direct_backward_weights_nk<T, 3>(p, grad_y, x, grad_weight);
    direct_backward_weights_nk<T, FASTCONV_BW_NK>(p, grad_y, x, grad_weight);
}

}  // namespace fastconv::FASTCONV_ISA
