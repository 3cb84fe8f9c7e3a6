// Forward, backward-data and backward-weights on top of implicit_gemm.h;
// included once per instruction set by kernels_<isa>.cpp.
//
// Besides the macros implicit_gemm.h needs, the including file defines those
// of direct_forward_impl.h and direct_backward_weights_impl.h.
#pragma once

#include <algorithm>
#include <array>
#include <numeric>
#include <vector>

#include "depthwise_impl.h"
#include "direct_backward_weights_impl.h"
#include "direct_forward_impl.h"
#include "implicit_gemm.h"
#include "row_direct_impl.h"
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
                taps.push_back(Tap{c * p.xs.c, kr * p.dil_h - p.pad_top, ks * p.dil_w - p.pad_left});
    return taps;
}

inline SourceGrid forward_grid(const ConvShape& p) {
    return SourceGrid{p.out_h, p.out_w, p.stride_h, p.stride_w, p.xs.n, p.h, p.w, p.xs.h, p.xs.w};
}

template <class T>
void conv_forward(const ConvShape& p, const T* x, const T* weight, const T* bias, T* y) {
    if (p.c_per_group() == 1) return plane_forward(p, x, weight, bias, y);
    // 1x1 kernels pack plain copies of the input: the GEMM is faster there.
    if (p.r > 1 || p.s > 1) {
        const int64_t kg = p.k_per_group(), ntaps = p.c_per_group() * p.r * p.s;
        return any_direct_forward(p, x, [&](int64_t g, int64_t m, int64_t j) { return weight[(g * kg + m) * ntaps + j]; },
                                  bias, y, OutputPlacement::of_output(p));
    }
    const int64_t cg = p.c_per_group(), kg = p.k_per_group(), ntaps = cg * p.r * p.s;
    const Destination out{p.ys.n, p.ys.c, p.ys.h, 1, p.ys.w, 0, 0};
    gather_gemm<T>(p.groups, kg, forward_taps(p), forward_grid(p), p.n, x, cg * p.xs.c, y, out, kg * p.ys.c,
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
    q.xs = p.ys, q.ys = p.xs;  // reads grad_y, writes grad_x
    q.pad_top = (p.r - 1) * p.dil_h - p.pad_top;
    q.pad_left = (p.s - 1) * p.dil_w - p.pad_left;
    q.pad_bottom = p.h - 1 + (p.r - 1) * p.dil_h + 1 - p.out_h - q.pad_top;
    q.pad_right = p.w - 1 + (p.s - 1) * p.dil_w + 1 - p.out_w - q.pad_left;
    if (q.pad_top < 0 || q.pad_left < 0 || q.pad_bottom < 0 || q.pad_right < 0) return false;
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
        any_direct_forward(q, grad_y, flipped, static_cast<const T*>(nullptr), grad_x, OutputPlacement::of_output(q));
    }
    return true;
}

// The kernel rows (or columns) that reach input positions of phase a
// (position = a + stride * u) from an output row: kr with
// (a + pad - kr * dil) divisible by stride, an arithmetic progression.
struct PhaseTaps {
    int64_t first = 0, step = 1, count = 0;  // kr = first + m * step, m < count
    int64_t dil = 1;                         // grad_y rows between consecutive taps, reversed order
    int64_t pad = 0;                         // rows of zero padding the phase's forward needs before grad_y
    PhaseTaps(int64_t a, int64_t pad_lo, int64_t kernel, int64_t dilation, int64_t stride) {
        const int64_t g = std::gcd(stride, dilation);
        step = stride / g;
        dil = dilation / g;
        first = -1;
        for (int64_t kr = 0; kr < std::min(kernel, step); ++kr)
            if ((a + pad_lo - kr * dilation) % stride == 0) first = kr;
        if (first < 0) return;
        count = (kernel - first + step - 1) / step;
        // The last tap reads grad_y row u + (a + pad_lo - last * dilation) / stride.
        const int64_t last = first + (count - 1) * step;
        pad = -(a + pad_lo - last * dilation) / stride;
    }
};

// At stride > 1, each phase (ih mod stride_h, iw mod stride_w) of dL/dx is a
// stride-1 forward convolution of grad_y with the flipped sub-kernel of the
// taps that reach that phase, written into every stride-th pixel. Returns
// false (nothing done) where a phase would need negative padding.
template <class T>
bool backward_data_by_phase(const ConvShape& p, const T* grad_y, const T* weight, T* grad_x) {
    const int64_t cg = p.c_per_group(), kg = p.k_per_group();
    struct Phase {
        int64_t a, b;
        PhaseTaps rows, cols;
        ConvShape q;
    };
    std::vector<Phase> phases;
    for (int64_t a = 0; a < std::min(p.stride_h, p.h); ++a)
        for (int64_t b = 0; b < std::min(p.stride_w, p.w); ++b) {
            Phase ph{a, b, PhaseTaps(a, p.pad_top, p.r, p.dil_h, p.stride_h),
                     PhaseTaps(b, p.pad_left, p.s, p.dil_w, p.stride_w), p};
            ConvShape& q = ph.q;
            q.c = p.k, q.h = p.out_h, q.w = p.out_w, q.k = p.c;
            q.xs = p.ys, q.ys = p.xs;  // reads grad_y, writes grad_x
            q.out_h = (p.h - a + p.stride_h - 1) / p.stride_h;
            q.out_w = (p.w - b + p.stride_w - 1) / p.stride_w;
            if (ph.rows.count > 0 && ph.cols.count > 0) {
                q.r = ph.rows.count, q.s = ph.cols.count;
                q.stride_h = q.stride_w = 1;
                q.dil_h = ph.rows.dil, q.dil_w = ph.cols.dil;
                q.pad_top = ph.rows.pad, q.pad_left = ph.cols.pad;
                q.pad_bottom = q.out_h - 1 + (q.r - 1) * q.dil_h + 1 - q.h - q.pad_top;
                q.pad_right = q.out_w - 1 + (q.s - 1) * q.dil_w + 1 - q.w - q.pad_left;
                if (q.pad_top < 0 || q.pad_left < 0 || q.pad_bottom < 0 || q.pad_right < 0) return false;
                q.check();
            }
            phases.push_back(ph);
        }
    for (const Phase& ph : phases) {
        const ConvShape& q = ph.q;
        const OutputPlacement place{p.xs.n, p.xs.c, p.stride_h * p.xs.h, p.stride_w * p.xs.w,
                                    ph.a * p.xs.h + ph.b * p.xs.w};
        if (ph.rows.count == 0 || ph.cols.count == 0) {  // no tap reaches this phase: its gradient is 0
            for (int64_t n = 0; n < p.n; ++n)
                for (int64_t c = 0; c < p.c; ++c)
                    for (int64_t u = 0; u < q.out_h; ++u)
                        for (int64_t v = 0; v < q.out_w; ++v)
                            grad_x[n * place.batch + c * place.channel + u * place.row + v * place.col + place.offset] = T(0);
            continue;
        }
        // Filter c of group g, tap (kk, i, j) of the phase's forward is
        // weight[g*kg + kk][c][kr][ks], taps in reverse order.
        std::vector<int64_t> source(static_cast<size_t>(kg * q.r * q.s));
        for (int64_t kk = 0; kk < kg; ++kk)
            for (int64_t i = 0; i < q.r; ++i)
                for (int64_t j = 0; j < q.s; ++j) {
                    const int64_t kr = ph.rows.first + (q.r - 1 - i) * ph.rows.step;
                    const int64_t ks = ph.cols.first + (q.s - 1 - j) * ph.cols.step;
                    source[static_cast<size_t>((kk * q.r + i) * q.s + j)] = (kk * cg * p.r + kr) * p.s + ks;
                }
        auto weight_of = [&](int64_t g, int64_t c, int64_t j) {
            return weight[(g * kg * cg + c) * p.r * p.s + source[static_cast<size_t>(j)]];
        };
        any_direct_forward(q, grad_y, weight_of, static_cast<const T*>(nullptr), grad_x, place);
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
    if ((p.stride_h > 1 || p.stride_w > 1) && backward_data_by_phase(p, grad_y, weight, grad_x)) return;
    const int64_t cg = p.c_per_group(), kg = p.k_per_group();
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
                        taps.push_back(Tap{k * p.ys.c, num_r / p.stride_h, num_c / p.stride_w});
                        which.push_back({k, kr, ks});
                    }
                }
            const SourceGrid grid{(p.h - a + p.stride_h - 1) / p.stride_h, (p.w - b + p.stride_w - 1) / p.stride_w,
                                  1, 1, p.ys.n, p.out_h, p.out_w, p.ys.h, p.ys.w};
            const Destination out{p.xs.n, p.xs.c, p.xs.h, p.stride_h, p.stride_w * p.xs.w, a, b * p.xs.w};
            gather_gemm<T>(p.groups, cg, taps, grid, p.n, grad_y, kg * p.ys.c, grad_x, out, cg * p.xs.c,
                           static_cast<const T*>(nullptr), [&](int64_t g, int64_t c, int64_t j) {
                               const auto& w = which[static_cast<size_t>(j)];
                               return weight[(((g * kg + w[0]) * cg + c) * p.r + w[1]) * p.s + w[2]];
                           });
        }
    }
}

// dL/dweight: plane by plane where each filter reads one input channel, else
// the direct kernel vectorised over filters (direct_backward_weights_impl.h).
template <class T>
void conv_backward_weights(const ConvShape& p, const T* grad_y, const T* x, T* grad_weight) {
    if (p.c_per_group() == 1) return plane_backward_weights(p, grad_y, x, grad_weight);
    direct_backward_weights(p, grad_y, x, grad_weight);
}

#define FASTCONV_INSTANTIATE(T)                                                                 \
    template void conv_forward<T>(const ConvShape&, const T*, const T*, const T*, T*);         \
    template void conv_backward_data<T>(const ConvShape&, const T*, const T*, T*);             \
    template void conv_backward_weights<T>(const ConvShape&, const T*, const T*, T*);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv::FASTCONV_ISA
