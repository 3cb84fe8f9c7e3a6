// Convolutions in which every output channel reads a single input channel
// (C / groups == 1: depthwise layers, or a one-channel input): there is no
// channel sum to turn into a GEMM, so these kernels work plane by plane on a
// zero-padded copy of one input plane, vectorised along output columns.
// Included by simd_kernels_impl.h inside the instruction set's namespace.
#pragma once

#include <algorithm>
#include <cstdint>

#include "implicit_gemm.h"

namespace fastconv::FASTCONV_ISA {

// Output rows are computed in whole vector blocks: `row_width` columns, the
// output width rounded up (the extra columns are computed and dropped).
template <class T>
constexpr int kRowBlock = 2 * kLanes<T>;
template <class T>
int64_t row_width(const ConvShape& p) {
    return (p.out_w + kRowBlock<T> - 1) / kRowBlock<T> * kRowBlock<T>;
}

// Rows/columns of the zero-padded plane that any tap can read, the rounded-up
// output row included.
struct PaddedPlane {
    int64_t rows, cols;
    template <class T>
    PaddedPlane(const ConvShape& p, const T*)
        : rows(std::max(p.h + p.pad_top, (p.out_h - 1) * p.stride_h + (p.r - 1) * p.dil_h + 1)),
          cols(std::max(p.w + p.pad_left, (row_width<T>(p) - 1) * p.stride_w + (p.s - 1) * p.dil_w + 1)) {}
};

template <class T>
void pad_plane(const ConvShape& p, const PaddedPlane& pp, const T* plane, T* out) {
    std::fill(out, out + pp.rows * pp.cols, T(0));
    for (int64_t ih = 0; ih < p.h; ++ih)
        std::copy(plane + ih * p.w, plane + (ih + 1) * p.w, out + (ih + p.pad_top) * pp.cols + p.pad_left);
}

template <class T>
void plane_forward(const ConvShape& p, const T* x, const T* weight, const T* bias, T* y) {
    using V = typename Simd<T>::vec;
    constexpr int L = kLanes<T>, NV = kRowBlock<T> / L;
    const int64_t kg = p.k_per_group(), taps = p.r * p.s, tasks = p.n * p.groups;
    const PaddedPlane pp(p, x);
    const int64_t width = row_width<T>(p);
#pragma omp parallel
    {
        Scratch<T> xp(pp.rows * pp.cols), row_out(width);
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tasks; ++t) {
            const int64_t n = t / p.groups, g = t % p.groups;
            pad_plane(p, pp, x + (n * p.c + g) * p.h * p.w, xp.get());
            for (int64_t kk = 0; kk < kg; ++kk) {
                const int64_t k = g * kg + kk;
                const T* w = weight + k * taps;
                const T b = bias ? bias[k] : T(0);
                T* out = y + (n * p.k + k) * p.out_h * p.out_w;
                for (int64_t oh = 0; oh < p.out_h; ++oh) {
                    const T* rows = xp.get() + oh * p.stride_h * pp.cols;
                    T* o = row_out.get();
                    if (p.stride_w == 1) {
                        for (int64_t ow = 0; ow < width; ow += NV * L) {
                            V acc[NV];
                            for (int v = 0; v < NV; ++v) acc[v] = V{} + b;
                            for (int64_t kr = 0; kr < p.r; ++kr) {
                                const T* row = rows + kr * p.dil_h * pp.cols + ow;
                                for (int64_t ks = 0; ks < p.s; ++ks) {
                                    const T wv = w[kr * p.s + ks];
                                    for (int v = 0; v < NV; ++v) acc[v] += wv * load<V>(row + ks * p.dil_w + v * L);
                                }
                            }
                            for (int v = 0; v < NV; ++v) store(o + ow + v * L, acc[v]);
                        }
                    } else {
                        for (int64_t ow = 0; ow < p.out_w; ++ow) {
                            T acc = b;
                            for (int64_t kr = 0; kr < p.r; ++kr)
                                for (int64_t ks = 0; ks < p.s; ++ks)
                                    acc += w[kr * p.s + ks] *
                                           rows[kr * p.dil_h * pp.cols + ow * p.stride_w + ks * p.dil_w];
                            o[ow] = acc;
                        }
                    }
                    std::copy(o, o + p.out_w, out + oh * p.out_w);
                }
            }
        }
    }
}

// dL/dx of one input plane: every filter of its group sends w * grad_y back to
// the padded positions it read (a scatter into a private padded plane, then
// the padding is cut off).
template <class T>
void plane_backward_data(const ConvShape& p, const T* grad_y, const T* weight, T* grad_x) {
    const int64_t kg = p.k_per_group(), taps = p.r * p.s, tasks = p.n * p.groups;
    const PaddedPlane pp(p, grad_x);
#pragma omp parallel
    {
        Scratch<T> dxp(pp.rows * pp.cols);
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tasks; ++t) {
            const int64_t n = t / p.groups, g = t % p.groups;
            std::fill(dxp.get(), dxp.get() + pp.rows * pp.cols, T(0));
            for (int64_t kk = 0; kk < kg; ++kk) {
                const int64_t k = g * kg + kk;
                const T* w = weight + k * taps;
                const T* gy = grad_y + (n * p.k + k) * p.out_h * p.out_w;
                for (int64_t oh = 0; oh < p.out_h; ++oh) {
                    const T* src = gy + oh * p.out_w;
                    for (int64_t kr = 0; kr < p.r; ++kr) {
                        T* row = dxp.get() + (oh * p.stride_h + kr * p.dil_h) * pp.cols;
                        for (int64_t ks = 0; ks < p.s; ++ks) {
                            const T wv = w[kr * p.s + ks];
                            T* d = row + ks * p.dil_w;
                            if (p.stride_w == 1) {
                                for (int64_t ow = 0; ow < p.out_w; ++ow) d[ow] += wv * src[ow];
                            } else {
                                for (int64_t ow = 0; ow < p.out_w; ++ow) d[ow * p.stride_w] += wv * src[ow];
                            }
                        }
                    }
                }
            }
            T* dx = grad_x + (n * p.c + g) * p.h * p.w;
            for (int64_t ih = 0; ih < p.h; ++ih) {
                const T* src = dxp.get() + (ih + p.pad_top) * pp.cols + p.pad_left;
                std::copy(src, src + p.w, dx + ih * p.w);
            }
        }
    }
}

// dL/dweight of the filters of one group: dot products of grad_y planes with
// shifted windows of the padded input plane, images in order (a fixed order,
// whatever the thread count).
template <class T>
void plane_backward_weights(const ConvShape& p, const T* grad_y, const T* x, T* grad_weight) {
    using V = typename Simd<T>::vec;
    constexpr int L = kLanes<T>, NV = kRowBlock<T> / L;
    const int64_t kg = p.k_per_group(), taps = p.r * p.s;
    const PaddedPlane pp(p, x);
    const int64_t width = row_width<T>(p);
#pragma omp parallel
    {
        // grad_y plane with each row zero-extended to `width` columns.
        Scratch<T> xp(pp.rows * pp.cols), gyp(p.out_h * width);
#pragma omp for schedule(static)
        for (int64_t g = 0; g < p.groups; ++g) {
            std::fill(grad_weight + g * kg * taps, grad_weight + (g + 1) * kg * taps, T(0));
            for (int64_t n = 0; n < p.n; ++n) {
                pad_plane(p, pp, x + (n * p.c + g) * p.h * p.w, xp.get());
                for (int64_t kk = 0; kk < kg; ++kk) {
                    const int64_t k = g * kg + kk;
                    const T* gy = grad_y + (n * p.k + k) * p.out_h * p.out_w;
                    for (int64_t oh = 0; oh < p.out_h; ++oh) {
                        T* dst = gyp.get() + oh * width;
                        std::copy(gy + oh * p.out_w, gy + (oh + 1) * p.out_w, dst);
                        std::fill(dst + p.out_w, dst + width, T(0));
                    }
                    for (int64_t kr = 0; kr < p.r; ++kr)
                        for (int64_t ks = 0; ks < p.s; ++ks) {
                            T total = 0;
                            if (p.stride_w == 1) {
                                V acc[NV];
                                for (int v = 0; v < NV; ++v) acc[v] = V{};
                                for (int64_t oh = 0; oh < p.out_h; ++oh) {
                                    const T* d = gyp.get() + oh * width;
                                    const T* src = xp.get() + (oh * p.stride_h + kr * p.dil_h) * pp.cols + ks * p.dil_w;
                                    for (int64_t ow = 0; ow < width; ow += NV * L)
                                        for (int v = 0; v < NV; ++v)
                                            acc[v] += load<V>(d + ow + v * L) * load<V>(src + ow + v * L);
                                }
                                for (int v = 1; v < NV; ++v) acc[0] += acc[v];
                                for (int l = 0; l < L; ++l) total += acc[0][l];
                            } else {
                                for (int64_t oh = 0; oh < p.out_h; ++oh) {
                                    const T* d = gyp.get() + oh * width;
                                    const T* src = xp.get() + (oh * p.stride_h + kr * p.dil_h) * pp.cols + ks * p.dil_w;
                                    for (int64_t ow = 0; ow < p.out_w; ++ow) total += d[ow] * src[ow * p.stride_w];
                                }
                            }
                            grad_weight[k * taps + kr * p.s + ks] += total;
                        }
                }
            }
        }
    }
}

}  // namespace fastconv::FASTCONV_ISA
