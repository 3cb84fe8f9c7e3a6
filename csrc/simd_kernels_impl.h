// Forward, backward-data and backward-weights on top of implicit_gemm.h;
// included once per instruction set by kernels_<isa>.cpp.
//
// Besides the macros implicit_gemm.h needs, the including file defines
//   FASTCONV_DOT_MK, FASTCONV_DOT_NJ   filters x taps per backward-weights micro-kernel
#pragma once

#include <algorithm>
#include <array>
#include <vector>

#include "depthwise_impl.h"
#include "direct_backward_weights_impl.h"
#include "direct_forward_impl.h"
#include "implicit_gemm.h"
#include "simd_kernels.h"

namespace fastconv::FASTCONV_ISA {

// Taps of the forward convolution (and of backward-weights): j = (c, kr, ks)
// reads x[c, oh * stride_h + kr * dil_h - pad_top, ow * stride_w + ks * dil_w - pad_left].
inline std::vector<Tap> forward_taps(const ConvShape& p) {
    std::vector<Tap> taps;
    taps.reserve(static_cast<size_t>(p.c_per_group() * p.r * p.s));
    for (int64_t c = 0; c < p.c_per_group(); ++c)
        for (int64_t kr = 0; kr < p.r; ++kr)
            for (int64_t ks = 0; ks < p.s; ++ks)
                taps.push_back(Tap{c * p.h * p.w, kr * p.dil_h - p.pad_top, ks * p.dil_w - p.pad_left});
    return taps;
}

inline SourceGrid forward_grid(const ConvShape& p) {
    return SourceGrid{p.out_h, p.out_w, p.stride_h, p.stride_w, p.c * p.h * p.w, p.h, p.w};
}

template <class T>
void conv_forward(const ConvShape& p, const T* x, const T* weight, const T* bias, T* y) {
    if (p.c_per_group() == 1) return plane_forward(p, x, weight, bias, y);
    // 1x1 kernels pack plain copies of the input: the GEMM is faster there.
    if (p.r > 1 || p.s > 1) {
        const int64_t kg = p.k_per_group(), ntaps = p.c_per_group() * p.r * p.s;
        return direct_forward(p, x, [&](int64_t g, int64_t m, int64_t j) { return weight[(g * kg + m) * ntaps + j]; },
                              bias, y);
    }
    const int64_t cg = p.c_per_group(), kg = p.k_per_group(), ntaps = cg * p.r * p.s;
    const int64_t out_plane = p.out_h * p.out_w;
    const Destination out{p.k * out_plane, out_plane, p.out_w, 1, 1, 0, 0};
    gather_gemm<T>(p.groups, kg, forward_taps(p), forward_grid(p), p.n, x, cg * p.h * p.w, y, out, kg * out_plane,
                   bias, [&](int64_t g, int64_t m, int64_t j) { return weight[(g * kg + m) * ntaps + j]; });
}

// At stride 1, dL/dx is a forward convolution of grad_y, padded by the kernel
// span minus the forward padding, with the filters flipped and their in/out
// channels swapped. Returns false (nothing done) if that padding would be
// negative (padding wider than the kernel span).
template <class T>
bool backward_data_as_forward(const ConvShape& p, const T* grad_y, const T* weight, T* grad_x) {
    ConvShape q = p;
    q.c = p.k, q.h = p.out_h, q.w = p.out_w;
    q.k = p.c, q.out_h = p.h, q.out_w = p.w;
    q.pad_top = (p.r - 1) * p.dil_h - p.pad_top;
    q.pad_left = (p.s - 1) * p.dil_w - p.pad_left;
    q.pad_bottom = p.h - 1 + (p.r - 1) * p.dil_h + 1 - p.out_h - q.pad_top;
    q.pad_right = p.w - 1 + (p.s - 1) * p.dil_w + 1 - p.out_w - q.pad_left;
    if (q.pad_top < 0 || q.pad_left < 0 || q.pad_bottom < 0 || q.pad_right < 0) return false;
    // One input channel feeding several filters would become a single-filter
    // forward here, which wastes most of each vector: the plane kernel does better.
    if (p.c_per_group() == 1 && p.k_per_group() > 1) return false;
    q.check();
    // The filters of q: filter c of group g, tap (kk, kr', ks') is
    // weight[g*kg + kk][c][R-1-kr'][S-1-ks'] (flipped, channels swapped).
    const int64_t cg = p.c_per_group(), kg = p.k_per_group(), taps = p.r * p.s;
    // source[j] for j = (kk, kr', ks'): offset of weight[kk][0][R-1-kr'][S-1-ks']
    // (tabulated once: this runs for every weight).
    std::vector<int64_t> source(static_cast<size_t>(kg * taps));
    for (int64_t kk = 0; kk < kg; ++kk)
        for (int64_t kr = 0; kr < p.r; ++kr)
            for (int64_t ks = 0; ks < p.s; ++ks)
                source[static_cast<size_t>((kk * p.r + kr) * p.s + ks)] =
                    kk * cg * taps + (p.r - 1 - kr) * p.s + (p.s - 1 - ks);
    auto flipped = [&](int64_t g, int64_t c, int64_t j) {
        return weight[(g * kg * cg + c) * taps + source[static_cast<size_t>(j)]];
    };
    if (q.c_per_group() == 1) {
        // One grad_y channel per group: the plane kernel, with its (small) weights laid out.
        std::vector<T> w(static_cast<size_t>(q.k * taps));
        for (int64_t g = 0; g < q.groups; ++g)
            for (int64_t c = 0; c < cg; ++c)
                for (int64_t j = 0; j < taps; ++j) w[static_cast<size_t>((g * cg + c) * taps + j)] = flipped(g, c, j);
        plane_forward(q, grad_y, w.data(), static_cast<const T*>(nullptr), grad_x);
    } else {
        direct_forward(q, grad_y, flipped, static_cast<const T*>(nullptr), grad_x);
    }
    return true;
}

// dL/dx, split by the phase (ih mod stride_h, iw mod stride_w) of the input
// pixel: within one phase the same kernel taps reach every pixel, so each
// phase is a gather GEMM over exactly the taps that exist (none are skipped
// at run time, none multiply zeros).
template <class T>
void conv_backward_data(const ConvShape& p, const T* grad_y, const T* weight, T* grad_x) {
    if (p.stride_h == 1 && p.stride_w == 1 && (p.r > 1 || p.s > 1) && backward_data_as_forward(p, grad_y, weight, grad_x))
        return;
    if (p.c_per_group() == 1) return plane_backward_data(p, grad_y, weight, grad_x);
    const int64_t cg = p.c_per_group(), kg = p.k_per_group();
    const int64_t out_plane = p.out_h * p.out_w, in_plane = p.h * p.w;
    for (int64_t a = 0; a < p.stride_h && a < p.h; ++a) {
        for (int64_t b = 0; b < p.stride_w && b < p.w; ++b) {
            std::vector<Tap> taps;
            std::vector<std::array<int64_t, 3>> which;  // (filter, kr, ks) of each tap
            for (int64_t k = 0; k < kg; ++k)
                for (int64_t kr = 0; kr < p.r; ++kr) {
                    const int64_t num_r = a + p.pad_top - kr * p.dil_h;
                    if (num_r % p.stride_h != 0) continue;
                    for (int64_t ks = 0; ks < p.s; ++ks) {
                        const int64_t num_c = b + p.pad_left - ks * p.dil_w;
                        if (num_c % p.stride_w != 0) continue;
                        taps.push_back(Tap{k * out_plane, num_r / p.stride_h, num_c / p.stride_w});
                        which.push_back({k, kr, ks});
                    }
                }
            const SourceGrid grid{(p.h - a + p.stride_h - 1) / p.stride_h, (p.w - b + p.stride_w - 1) / p.stride_w,
                                  1, 1, p.k * out_plane, p.out_h, p.out_w};
            const Destination out{p.c * in_plane, in_plane, p.w, p.stride_h, p.stride_w, a, b};
            gather_gemm<T>(p.groups, cg, taps, grid, p.n, grad_y, kg * out_plane, grad_x, out, cg * in_plane,
                           static_cast<const T*>(nullptr), [&](int64_t g, int64_t c, int64_t j) {
                               const auto& w = which[static_cast<size_t>(j)];
                               return weight[(((g * kg + w[0]) * cg + c) * p.r + w[1]) * p.s + w[2]];
                           });
        }
    }
}

// acc[i][jj] += sum over the chunk of dy row i times col row jj, lane-wise.
template <class T, int MK, int NJ>
inline void micro_dot(int64_t steps, int64_t width, const T* __restrict dy, const T* __restrict col,
                      typename Simd<T>::vec* __restrict acc, int64_t ld) {
    using V = typename Simd<T>::vec;
    constexpr int L = kLanes<T>;
    V a[MK][NJ];
#pragma GCC unroll 8
    for (int i = 0; i < MK; ++i)
#pragma GCC unroll 8
        for (int jj = 0; jj < NJ; ++jj) a[i][jj] = acc[i * ld + jj];
    for (int64_t s = 0; s < steps; ++s) {
        V d[MK];
#pragma GCC unroll 8
        for (int i = 0; i < MK; ++i) d[i] = load<V>(dy + i * width + s * L);
#pragma GCC unroll 8
        for (int jj = 0; jj < NJ; ++jj) {
            const V cv = load<V>(col + jj * width + s * L);
#pragma GCC unroll 8
            for (int i = 0; i < MK; ++i) a[i][jj] += d[i] * cv;
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MK; ++i)
#pragma GCC unroll 8
        for (int jj = 0; jj < NJ; ++jj) acc[i * ld + jj] = a[i][jj];
}

// dL/dweight[k, j] = sum over pixels of grad_y[k, pixel] * col[j, pixel]: dot
// products along pixels, vectorised over lanes of pixels. Each task owns a
// block of filters x taps and walks all pixels in a fixed order (lanes summed
// last, in a fixed order too), so no partial results cross threads and the
// result does not depend on the thread count.
template <class T>
void conv_backward_weights(const ConvShape& p, const T* grad_y, const T* x, T* grad_weight) {
    if (p.c_per_group() == 1) return plane_backward_weights(p, grad_y, x, grad_weight);
    // Small output rows make the GEMM's packing runs short: the direct kernel wins there.
    if ((p.r > 1 || p.s > 1) && p.out_w <= 32) return direct_backward_weights(p, grad_y, x, grad_weight);
    using V = typename Simd<T>::vec;
    constexpr int L = kLanes<T>, MK = FASTCONV_DOT_MK, NJ = FASTCONV_DOT_NJ;
    const int64_t cg = p.c_per_group(), kg = p.k_per_group(), ntaps = cg * p.r * p.s;
    const int64_t out_plane = p.out_h * p.out_w;
    const int64_t pixels = p.n * out_plane;
    auto round_up = [](int64_t v, int64_t m) { return (v + m - 1) / m * m; };
    // Filters and taps per task, pixels per packed chunk: at most 64 x 96 x 1024
    // (fp32), less for small layers so that their scratch stays small.
    const int64_t kblock = std::min<int64_t>(16 * MK, round_up(kg, MK));
    const int64_t jblock = std::min<int64_t>(16 * NJ, round_up(ntaps, NJ));
    const int64_t chunk = std::min<int64_t>(4096 / static_cast<int64_t>(sizeof(T)), round_up(std::max<int64_t>(pixels, 1), L));
    const int64_t kblocks = (kg + kblock - 1) / kblock, jblocks = (ntaps + jblock - 1) / jblock;
    const int64_t tasks = p.groups * kblocks * jblocks;

    const std::vector<Tap> taps = forward_taps(p);
    const SourceGrid grid = forward_grid(p);

#pragma omp parallel
    {
        Scratch<T> dy_panel(kblock * chunk + kCopySlack<T>), col_panel(jblock * chunk + kCopySlack<T>);
        std::vector<V> acc(static_cast<size_t>(kblock * jblock));
        std::vector<Segment> segs(static_cast<size_t>(chunk));
#pragma omp for schedule(dynamic)
        for (int64_t t = 0; t < tasks; ++t) {
            const int64_t g = t / (kblocks * jblocks);
            const int64_t k0 = ((t / jblocks) % kblocks) * kblock, j0 = (t % jblocks) * jblock;
            const int64_t krows = std::min(kblock, kg - k0), jrows = std::min(jblock, ntaps - j0);
            const int64_t kpad = (krows + MK - 1) / MK * MK, jpad = (jrows + NJ - 1) / NJ * NJ;
            std::fill(acc.begin(), acc.begin() + kpad * jpad, V{});
            for (int64_t q0 = 0; q0 < pixels; q0 += chunk) {
                const int64_t filled = std::min(chunk, pixels - q0);
                const int64_t width = (filled + L - 1) / L * L;
                const int nsegs = split_segments(grid, q0, filled, segs.data());
                pack_planes(grad_y + (g * kg + k0) * out_plane, out_plane, p.k * out_plane, krows, q0, filled, width,
                            dy_panel.get());
                pack_panel(x + g * cg * p.h * p.w, grid, taps.data() + j0, jrows, segs.data(), nsegs, filled, width,
                           col_panel.get());
                std::fill(dy_panel.get() + krows * width, dy_panel.get() + kpad * width, T(0));
                std::fill(col_panel.get() + jrows * width, col_panel.get() + jpad * width, T(0));
                for (int64_t jj = 0; jj < jpad; jj += NJ)
                    for (int64_t i = 0; i < kpad; i += MK)
                        micro_dot<T, MK, NJ>(width / L, width, dy_panel.get() + i * width,
                                             col_panel.get() + jj * width, acc.data() + i * jpad + jj, jpad);
            }
            for (int64_t i = 0; i < krows; ++i)
                for (int64_t jj = 0; jj < jrows; ++jj) {
                    const V v = acc[static_cast<size_t>(i * jpad + jj)];
                    T sum = 0;
                    for (int l = 0; l < L; ++l) sum += v[l];
                    grad_weight[(g * kg + k0 + i) * ntaps + j0 + jj] = sum;
                }
        }
    }
}

#define FASTCONV_INSTANTIATE(T)                                                                 \
    template void conv_forward<T>(const ConvShape&, const T*, const T*, const T*, T*);         \
    template void conv_backward_data<T>(const ConvShape&, const T*, const T*, T*);             \
    template void conv_backward_weights<T>(const ConvShape&, const T*, const T*, T*);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv::FASTCONV_ISA
