// Forward, backward-data and backward-weights on top of implicit_gemm.h;
// included once per instruction set by kernels_<isa>.cpp.
//
// Besides the macros implicit_gemm.h needs, the including file defines those
// of direct_forward_impl.h and direct_backward_weights_impl.h.
#pragma once

#include <algorithm>
#include <numeric>
#include <vector>

#include "backward_bias_impl.h"
#include "backward_data_col2im_impl.h"
#include "backward_weights_im2col_impl.h"
#include "depthwise_impl.h"
#include "direct_backward_weights_impl.h"
#include "direct_forward_impl.h"
#include "implicit_gemm.h"
#include "row_direct_impl.h"
#include "simd_kernels.h"
#include "winograd_backward_weights_impl.h"
#include "winograd_forward_impl.h"

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

// A forward convolution of R x S > 1 kernels: by Winograd's F(2x2, 3x3)
// (a dilated layer as its undilated phases) where it suits and every output
// comes out finite, else directly.
template <class T, class WeightOf>
void spatial_forward(const ConvShape& p, const T* x, WeightOf weight_of, const T* bias, T* y) {
    if (winograd_suits<T>(p) && winograd_forward({DilationPhase{p, 0, 0}}, x, weight_of, bias, y)) return;
    if (winograd_forward_dilated(p, x, weight_of, bias, y)) return;
    any_direct_forward(p, x, weight_of, bias, y);
}

inline SourceGrid forward_grid(const ConvShape& p) {
    return SourceGrid{p.out_h, p.out_w, p.stride_h, p.stride_w, p.xs.n, p.h, p.w, p.xs.h, p.xs.w};
}

template <class T>
void conv_forward(const ConvShape& p, const T* x, const T* weight, const T* bias, T* y) {
    // Plane by plane where each filter reads one input channel, except a
    // strided one-channel input with 16 or more filters: the direct kernel,
    // vectorised over filters, beat the plane kernel's strided rows there
    // (Zen 4, 3x3 at stride 2 with 16 filters: 0.59-0.76 of the time; 5x5
    // with 32 filters 0.53-0.59; 1x1 0.67-0.85; AVX2 too). At stride 1 the
    // plane kernel's shared rows did better (one_channel 1.8x slower direct).
    const bool strided = p.stride_h > 1 || p.stride_w > 1;
    if (p.c_per_group() == 1 && !(p.groups == 1 && p.k >= 16 && strided)) return plane_forward(p, x, weight, bias, y);
    const int64_t cg = p.c_per_group(), kg = p.k_per_group();
    const WeightRows<T> weights{weight, kg, cg * p.r * p.s};
    // 1x1 kernels pack plain copies of the input: the GEMM is faster there.
    if (p.r > 1 || p.s > 1) return spatial_forward(p, x, weights, bias, y);
    const Destination out{p.ys.n, p.ys.c, p.ys.h, 1, p.ys.w, 0, 0};
    gather_gemm<T>(p.groups, kg, forward_taps(p), forward_grid(p), p.n, x, cg * p.xs.c, y, out, kg * p.ys.c,
                   bias, weights);
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

// A bias-free forward convolution of x into y with weights given by
// weight_of(g, m, j), by whichever kernel suits q.
template <class T, class WeightOf>
void forward_with(const ConvShape& q, const T* x, WeightOf weight_of, T* y) {
    if (q.c_per_group() == 1) {  // the plane kernel, with the (small) weights laid out
        const int64_t taps = q.r * q.s, kg = q.k_per_group();
        std::vector<T> w(static_cast<size_t>(q.k * taps));
        for (int64_t g = 0; g < q.groups; ++g)
            for (int64_t m = 0; m < kg; ++m)
                for (int64_t j = 0; j < taps; ++j) w[static_cast<size_t>((g * kg + m) * taps + j)] = weight_of(g, m, j);
        return plane_forward(q, x, w.data(), static_cast<const T*>(nullptr), y);
    }
    spatial_forward(q, x, weight_of, static_cast<const T*>(nullptr), y);
}

// Each phase (ih mod stride_h, iw mod stride_w) of dL/dx is a stride-1
// forward convolution of grad_y -- padded by the taps' span minus the forward
// padding -- with the flipped sub-kernel of the taps that reach that phase,
// their in/out channels swapped, written into every stride-th pixel. At
// stride 1 there is one phase: all of dL/dx. Returns false (nothing done)
// where a phase would need negative padding (padding wider than the kernel).
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
            // Reads grad_y; writes the phase's pixels of grad_x, every stride-th one.
            q.xs = p.ys, q.ys = Strides{p.xs.n, p.xs.c, p.stride_h * p.xs.h, p.stride_w * p.xs.w};
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
        T* out = grad_x + ph.a * p.xs.h + ph.b * p.xs.w;
        if (ph.rows.count == 0 || ph.cols.count == 0) {  // no tap reaches this phase: its gradient is 0
            for (int64_t n = 0; n < p.n; ++n)
                for (int64_t c = 0; c < p.c; ++c)
                    for (int64_t u = 0; u < q.out_h; ++u)
                        for (int64_t v = 0; v < q.out_w; ++v) out[n * q.ys.n + c * q.ys.c + u * q.ys.h + v * q.ys.w] = T(0);
            continue;
        }
        // Filter c of group g, tap (kk, i, j) of the phase's forward is
        // weight[g*kg + kk][c][kr][ks], taps in reverse order.
        std::vector<int64_t> source(static_cast<size_t>(q.r * q.s));
        for (int64_t i = 0; i < q.r; ++i)
            for (int64_t j = 0; j < q.s; ++j) {
                const int64_t kr = ph.rows.first + (q.r - 1 - i) * ph.rows.step;
                const int64_t ks = ph.cols.first + (q.s - 1 - j) * ph.cols.step;
                source[static_cast<size_t>(i * q.s + j)] = kr * p.s + ks;
            }
        forward_with(q, grad_y, PhaseWeights<T>{weight, kg, cg, p.r * p.s, q.r * q.s, source.data()}, out);
    }
    return true;
}

// dL/dx, split by the phase (ih mod stride_h, iw mod stride_w) of the input
// pixel: within one phase the same kernel taps reach every pixel, so each
// phase is a gather GEMM over exactly the taps that exist (none are skipped
// at run time, none multiply zeros).
template <class T>
void conv_backward_data(const ConvShape& p, const T* grad_y, const T* weight, T* grad_x) {
    // One to three input channels and filters enough: a GEMM and a col2im
    // (backward_data_col2im_impl.h). Else:
    if (col2im_backward_data_suits<T>(p)) return col2im_backward_data(p, grad_y, weight, grad_x);
    const bool strided = p.stride_h > 1 || p.stride_w > 1, one_channel = p.c_per_group() == 1;
    // By phase, except at stride 1 for 1x1 kernels (the GEMM reads their
    // planes in place), and at a stride for one input channel per group where
    // the plane scatter does better: a one-channel input (its phases' forward
    // has one filter; 3x3 stride 2, 8 filters over 64 x 56 x 56, Zen 4: the
    // scatter 2.4-2.9x as fast as a plain one that was 6 % ahead of the
    // phases), or a depthwise layer whose dL/dx outgrows half the L3 cache.
    // A depthwise phase is a register-blocked plane forward, where the
    // scatter of one filter loads and stores dL/dx once per tap and kernel
    // row; but the phases go over grad_y and dL/dx once each, from memory
    // when they do not stay in L3. Zen 5 (32 MiB L3), 3x3 stride 2, 128
    // channels of 56 x 56, backward: float32 8 images (12.8 MB of dL/dx) 4.91
    // -> 3.98 ms by phase, 4 images 2.51 -> 2.06; float64 2 images 1.69 ->
    // 1.38; but float64 8 images (25.7 MB) 7.1 -> 10.5 ms and float32 8 of
    // 112 x 112 (51 MB) 23.0 -> 27.8 ms.
    const bool fits = p.n * p.c * p.h * p.w * static_cast<int64_t>(sizeof(T)) <= l3_or_fallback() / 2;
    // At stride 1, a one-channel input's plane scatter beat its phase forward
    // (one filter) with AVX2's 16 registers and lost with AVX-512 (Zen 4,
    // LeNet's first layer: AVX2 float32 0.28 -> 0.23 ms, float64 0.51 -> 0.44,
    // 8 filters 3x3 over 56 x 56 1.35 -> 1.09 ms; AVX-512 0.27 -> 0.34 ms and
    // 5 % slower). Depthwise layers lost by 1.3-3x.
    const bool scatter = one_channel && (p.groups == 1 || !fits);
    const bool scatter_at_stride_1 = one_channel && p.groups == 1 && FASTCONV_VECTOR_BYTES == 32;
    const bool by_phase = strided ? !scatter : (p.r > 1 || p.s > 1) && !scatter_at_stride_1;
    if (by_phase && backward_data_by_phase(p, grad_y, weight, grad_x)) return;
    if (one_channel) return plane_backward_data(p, grad_y, weight, grad_x);
    const int64_t cg = p.c_per_group(), kg = p.k_per_group();
    for (int64_t a = 0; a < p.stride_h && a < p.h; ++a) {
        for (int64_t b = 0; b < p.stride_w && b < p.w; ++b) {
            std::vector<Tap> taps;
            struct Which {
                int64_t filter, kr, ks;
            };
            std::vector<Which> which;  // of each tap
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
                               return weight[(((g * kg + w.filter) * cg + c) * p.r + w.kr) * p.s + w.ks];
                           });
        }
    }
}

// dL/dweight: for a one-channel input and filters enough, with AVX-512 in
// float32 or for 1x1 kernels, dots of grad_y planes with im2col columns
// (backward_weights_im2col_impl.h); plane by plane where each filter reads
// one input channel, summing dL/db from each grad_y plane the dots have just
// read; else the direct kernel vectorised over filters
// (direct_backward_weights_impl.h). dL/db, where wanted, in a pass of its
// own but for the plane kernel.
template <class T>
void conv_backward_weights(const ConvShape& p, const T* grad_y, const T* x, T* grad_weight, T* grad_bias) {
    if constexpr (kIm2colDots)  // not instantiated where never taken
        if (im2col_backward_weights_suits<T>(p)) {
            im2col_backward_weights(p, grad_y, x, grad_weight);
            if (grad_bias) conv_backward_bias(p, grad_y, grad_bias);
            return;
        }
    if (p.c_per_group() == 1) return plane_backward_weights(p, grad_y, x, grad_weight, grad_bias);
    // Winograd's F(3x3, 2x2) where the forward's F(2x2, 3x3) suits, unless some gradient came out non-finite.
    if (!(winograd_backward_weights_suits<T>(p) && winograd_backward_weights(p, grad_y, x, grad_weight)))
        direct_backward_weights(p, grad_y, x, grad_weight);
    if (grad_bias) conv_backward_bias(p, grad_y, grad_bias);
}

#define FASTCONV_INSTANTIATE(T)                                                                 \
    template void conv_forward<T>(const ConvShape&, const T*, const T*, const T*, T*);         \
    template void conv_backward_data<T>(const ConvShape&, const T*, const T*, T*);             \
    template void conv_backward_weights<T>(const ConvShape&, const T*, const T*, T*, T*);      \
    template void conv_backward_bias<T>(const ConvShape&, const T*, T*);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv::FASTCONV_ISA
