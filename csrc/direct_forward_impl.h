// Forward convolution vectorised over filters: a direct convolution that
// needs no im2col panel at all. For each kernel tap, one vector of weights
// (16 float32 filters with AVX-512) is multiplied by the broadcast input
// value of each of NP output pixels of a row; NP x NK accumulators stay in
// registers. Input rows are copied once per task into a zero-padded window,
// and kernel rows that fall entirely into the padding are skipped. It wins
// over the implicit GEMM where packing dominates: few filters per group,
// small images.
// Included by simd_kernels_impl.h inside the instruction set's namespace;
// FASTCONV_DIRECT_NP is the pixels per micro-kernel with two filter vectors.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "implicit_gemm.h"
#include "input_window.h"
#include "parallel.h"

namespace fastconv::FASTCONV_ISA {

// out[p][f] = sum over taps t of w[tap[t]][f] * in[offset[tap[t]] + p * sw],
// for NP pixels p and NK vectors of filters f.
template <class T, int NP, int NK>
void direct_micro(const T* __restrict in, int64_t sw, const T* __restrict w, const int64_t* __restrict offset,
                  const int32_t* __restrict tap, int64_t ntaps, T* __restrict out) {
    using V = typename Simd<T>::vec;
    constexpr int L = kLanes<T>;
    V acc[NP][NK];
#pragma GCC unroll 32
    for (int p = 0; p < NP; ++p)
#pragma GCC unroll 4
        for (int v = 0; v < NK; ++v) acc[p][v] = V{};
    for (int64_t t = 0; t < ntaps; ++t) {
        const int32_t j = tap[t];
        const T* src = in + offset[j];
        V wv[NK];
#pragma GCC unroll 4
        for (int v = 0; v < NK; ++v) wv[v] = load<V>(w + (static_cast<int64_t>(j) * NK + v) * L);
#pragma GCC unroll 32
        for (int p = 0; p < NP; ++p) {
            const T xv = src[p * sw];
#pragma GCC unroll 4
            for (int v = 0; v < NK; ++v) acc[p][v] += xv * wv[v];
        }
    }
#pragma GCC unroll 32
    for (int p = 0; p < NP; ++p)
#pragma GCC unroll 4
        for (int v = 0; v < NK; ++v) store(out + (p * NK + v) * L, acc[p][v]);
}

template <class T>
using DirectMicro = void (*)(const T*, int64_t, const T*, const int64_t*, const int32_t*, int64_t, T*);

template <class T, int NK, int... P>
DirectMicro<T> pick_direct(int pixels, std::integer_sequence<int, P...>) {
    DirectMicro<T> table[] = {&direct_micro<T, P + 1, NK>...};
    return table[pixels - 1];
}

// Micro-kernels for 1..max pixels with NK filter vectors.
template <class T, int NK>
struct DirectKernels {
    static constexpr int max_pixels = FASTCONV_DIRECT_NP * 2 / NK;
    static DirectMicro<T> for_pixels(int pixels) {
        return pick_direct<T, NK>(pixels, std::make_integer_sequence<int, max_pixels>{});
    }
};

// weight_of(g, m, j): weight of filter m of group g for tap j = (c, kr, ks).
template <class T, int NK, class WeightOf>
void direct_forward_nk(const ConvShape& p, const T* x, WeightOf weight_of, const T* bias, T* y) {
    constexpr int L = kLanes<T>, F = NK * L;  // filters per block
    constexpr int NP = DirectKernels<T, NK>::max_pixels;
    const int64_t cg = p.c_per_group(), kg = p.k_per_group();
    const int64_t ntaps = cg * p.r * p.s;
    const int64_t kblocks = (kg + F - 1) / F;
    const InputWindow win(p);
    const LiveTaps live(p);
    const int64_t row_blocks = (p.out_h + win.out_rows - 1) / win.out_rows;

    // w_packed[g][kb][j][f] = weight[g*kg + kb*F + f][j], zero past the group's filters.
    std::vector<T> w_packed(static_cast<size_t>(p.groups * kblocks * ntaps * F), T(0));
    for (int64_t g = 0; g < p.groups; ++g)
        for (int64_t kb = 0; kb < kblocks; ++kb)
            for (int64_t j = 0; j < ntaps; ++j) {
                T* dst = w_packed.data() + ((g * kblocks + kb) * ntaps + j) * F;
                for (int64_t f = 0; f < std::min<int64_t>(F, kg - kb * F); ++f) dst[f] = weight_of(g, kb * F + f, j);
            }
    const int64_t tasks = p.n * p.groups * row_blocks;
    // Pixels per micro-kernel call: NP, but a row whose last call would get
    // under half of that is split evenly (14 = 7 + 7, not 12 + 2), since a
    // call on few pixels leaves most accumulators idle.
    const int64_t pixel_blocks = (p.out_w + NP - 1) / NP;
    const int64_t block = p.out_w % NP != 0 && 2 * (p.out_w % NP) < NP ? (p.out_w + pixel_blocks - 1) / pixel_blocks
                                                                         : std::min<int64_t>(NP, p.out_w);
    const DirectMicro<T> full = DirectKernels<T, NK>::for_pixels(static_cast<int>(block));
    const DirectMicro<T> tail =
        DirectKernels<T, NK>::for_pixels(static_cast<int>(p.out_w - (pixel_blocks - 1) * block));

    PerThread<T> window_mem(win.size());
    PerThread<T> result_mem(NP * F);
    parallel_region(worth_parallel(conv_flops(p)), [&] {
        T* const window = window_mem.get();
        T* const result = result_mem.get();
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tasks; ++t) {
            const int64_t rb = t % row_blocks, g = (t / row_blocks) % p.groups, n = t / (row_blocks * p.groups);
            const int64_t oh0 = rb * win.out_rows, oh1 = std::min(p.out_h, oh0 + win.out_rows);
            const T* base = win.prepare(p, x + n * p.xs.n + g * cg * p.xs.c, oh0, window);
            // Filter blocks outermost: one block's weights stay in cache for all the rows.
            for (int64_t kb = 0; kb < kblocks; ++kb) {
                const T* wb = w_packed.data() + (g * kblocks + kb) * ntaps * F;
                const int64_t k0 = g * kg + kb * F, nk = std::min<int64_t>(F, kg - kb * F);
                for (int64_t oh = oh0; oh < oh1; ++oh) {
                    const T* row = base + (oh - oh0) * p.stride_h * win.cols;
                    for (int64_t ow0 = 0; ow0 < p.out_w; ow0 += block) {
                        const int64_t np = std::min<int64_t>(block, p.out_w - ow0);
                        (np == block ? full : tail)(row + ow0 * p.stride_w, p.stride_w, wb, win.offset.data(),
                                                    live.row(oh), live.size(oh), result);
                        for (int64_t f = 0; f < nk; ++f) {
                            T* out = y + n * p.ys.n + (k0 + f) * p.ys.c + oh * p.ys.h + ow0 * p.ys.w;
                            const T b = bias ? bias[k0 + f] : T(0);
                            if (p.ys.w == 1) {
                                for (int64_t i = 0; i < np; ++i) out[i] = result[i * F + f] + b;
                            } else {
                                for (int64_t i = 0; i < np; ++i) out[i * p.ys.w] = result[i * F + f] + b;
                            }
                        }
                    }
                }
            }
        }
    });
}

template <class T, class WeightOf>
void direct_forward(const ConvShape& p, const T* x, WeightOf weight_of, const T* bias, T* y) {
    if (p.k_per_group() <= kLanes<T>) direct_forward_nk<T, 1>(p, x, weight_of, bias, y);
    else direct_forward_nk<T, 2>(p, x, weight_of, bias, y);
}

}  // namespace fastconv::FASTCONV_ISA
