// dL/dweight of a one-channel input (one group) as dot products:
//   dW[k][t] = sum over images n and output pixels q of grad_y[n][k][q] * cols[t][q]
// where cols[t][q] is the input value that kernel tap t = (kr, ks) reads for
// output pixel q (0 in the padding): an im2col of the image's one plane,
// built once per image (or chunk of its pixels) and shared by every filter.
// Each filter's grad_y plane is read in place, a vector of pixels at a time,
// and a micro-kernel keeps MK filters x NT taps of lane-wise sums in
// registers. The plane path it replaces here copied every filter's grad_y
// plane into a zero-extended one first: with 32 filters of 3x3 over 28 x 28
// that copy took 46 % of its time (Zen 4, float64).
// Each filter's sums belong to one thread and run over the images and pixels
// in order, lanes added up in order at the end, so the result does not depend
// on the thread count.
// Included by simd_kernels_impl.h inside the instruction set's namespace.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>

#include "cpu_facts.h"
#include "im2col.h"
#include "implicit_gemm.h"
#include "parallel.h"

namespace fastconv::FASTCONV_ISA {

// Filters and taps per micro-kernel call: MK x NT sums, MK grad_y vectors and
// a column vector in AVX-512's registers (27 + 3 + 1 of 32), MK + NT loads
// for MK x NT FMAs.
constexpr int kDotFilters = 3;
constexpr int kDotTaps = 9;

// Only AVX-512 builds the im2col dots (im2col_backward_weights_suits says why).
constexpr bool kIm2colDots = FASTCONV_VECTOR_BYTES == 64;

// Pixels per chunk at most, and the distance between the columns' rows: a
// constant, so that every column load is one pointer and a displacement (a
// row pointer each took more registers than x86-64 has, and GCC kept some on
// the stack), plus a cache line so that the rows do not all fall in one L1
// set. Fewer pixels where the taps' columns would outgrow kDotColumnBytes,
// which stay in L2 while every filter block reads them.
constexpr int64_t kDotPixels = 1024;
template <class T>
constexpr int64_t kDotRow = kDotPixels + 64 / static_cast<int64_t>(sizeof(T));
constexpr int64_t kDotColumnBytes = 128 * 1024;

// One vector of pixels: acc[i][t] += g[i] * cols[t * kDotRow].
template <int MK, int NT, class T, class V>
__attribute__((always_inline)) inline void dots_step(V (&acc)[MK][NT], const V (&g)[MK], const T* __restrict cols) {
#pragma GCC unroll 16
    for (int t = 0; t < NT; ++t) {
        const V c = load<V>(cols + t * kDotRow<T>);
#pragma GCC unroll 4
        for (int i = 0; i < MK; ++i) fma_in_place(acc[i][t], g[i], c);
    }
}

// The whole vectors of pixels, [0, full); fetching `next`'s lines if kFetch.
// One index, counting up to zero from -full, addresses every load: the
// loop's own work is an add and a branch that fuse (llvm-mca,
// skylake-avx512: with a pointer bumped for grad_y, one for the columns and
// a compare, it put them on the FMA ports a cycle in ten, 89.9 %).
template <bool kFetch, int MK, int NT, class T, class V>
__attribute__((always_inline)) inline void dots_run(V (&acc)[MK][NT], const T* __restrict gy, int64_t gy_step,
                                                    const T* __restrict cols, int64_t full, const T* next) {
    constexpr int L = kLanes<T>;
    const T* gy_end = gy + full;
    const T* cols_end = cols + full;
    const T* next_end = kFetch ? next + full : nullptr;
    for (int64_t q = -full; q != 0; q += L) {
        V g[MK];
#pragma GCC unroll 4
        for (int i = 0; i < MK; ++i) {
            g[i] = load<V>(gy_end + i * gy_step + q);
            if constexpr (kFetch) __builtin_prefetch(next_end + i * gy_step + q, 0, 2);
        }
        dots_step<MK, NT>(acc, g, cols_end + q);
    }
}

// acc[i * acc_step + t * L + lane] += the sum over the vectors v of
// gy[i * gy_step + v * L + lane] * cols[t * kDotRow + v * L + lane], for MK
// filters i and NT taps t over `count` pixels; the last vector's grad_y
// lanes past `count` are not read (cols holds zeros there). `next` (may be
// null): the grad_y rows to fetch into L2 as the kernel goes, a line per
// vector (32 or more planes read at once are more streams than the hardware
// prefetchers follow). With a row pointer per tap GCC ran out of registers
// and moved sums between them (llvm-mca skylake-avx512: 87 %); one index
// for every load fixed that.
template <class T, int MK, int NT>
void im2col_dots_micro(const T* __restrict gy, int64_t gy_step, const T* __restrict cols, int64_t count, const T* next,
                       T* __restrict acc_mem, int64_t acc_step) {
    using V = typename Simd<T>::vec;
    constexpr int L = kLanes<T>;
    V acc[MK][NT];
#pragma GCC unroll 4
    for (int i = 0; i < MK; ++i)
#pragma GCC unroll 16
        for (int t = 0; t < NT; ++t) acc[i][t] = load<V>(acc_mem + i * acc_step + t * L);
    const int64_t full = count / L * L;
    if (next) {  // two loops, not a test in one
        dots_run<true, MK, NT>(acc, gy, gy_step, cols, full, next);
    } else {
        dots_run<false, MK, NT>(acc, gy, gy_step, cols, full, next);
    }
    if (full < count) {
        V g[MK];
#pragma GCC unroll 4
        for (int i = 0; i < MK; ++i) g[i] = load_first<V>(gy + i * gy_step + full, count - full);
        dots_step<MK, NT>(acc, g, cols + full);
    }
#pragma GCC unroll 4
    for (int i = 0; i < MK; ++i)
#pragma GCC unroll 16
        for (int t = 0; t < NT; ++t) store(acc_mem + i * acc_step + t * L, acc[i][t]);
}

template <class T>
using DotsMicro = void (*)(const T*, int64_t, const T*, int64_t, const T*, T*, int64_t);

template <class T, int MK, int... J>
DotsMicro<T> pick_dots_taps(int taps, std::integer_sequence<int, J...>) {
    DotsMicro<T> table[] = {&im2col_dots_micro<T, MK, J + 1>...};
    return table[taps - 1];
}

template <class T, int... I>
DotsMicro<T> pick_dots(int filters, int taps, std::integer_sequence<int, I...>) {
    DotsMicro<T> table[] = {pick_dots_taps<T, I + 1>(taps, std::make_integer_sequence<int, kDotTaps>{})...};
    return table[filters - 1];
}

// Filters enough that the im2col, one value per tap and pixel, costs little
// beside the dots, 2 x K / L vector FMAs per value: 16 or more, 32 or more
// beyond 9 taps, whose several tap groups each read grad_y again. The sums
// take K x taps vectors, shared by the threads: at most 4 MiB; the columns
// a thread's taps x kDotRow values: at most 1 MiB (taps up to 126 in
// float64, 11x11 kernels). Only with AVX-512, and there for float32 and 1x1
// kernels: since the plane path reads grad_y in place (plane_dots_filters,
// plane_dots_shared), it is the faster one elsewhere. Zen 4, dL/dF, 64
// images of 28 x 28 (one_channel: 256), fastest of 3 x 0.4 s, im2col / plane
// in ms. AVX-512 float32: one_channel 1.84 / 2.15, 5x5 "valid" with 32
// filters 0.83 / 1.23, 1x1 with 64 filters 0.21 / 0.30, 3x3 stride 2 with
// 16 filters 0.146 / 0.156, at dilation 2 0.26 / 0.245, 3x3 with 16 filters
// 0.265 / 0.26. AVX-512 float64: one_channel 3.78 / 3.46, 5x5 1.50 / 1.17,
// 1x1 0.49 / 0.80, stride 2 0.184 / 0.152, dilation 2 0.43 / 0.365, 16
// filters 0.43 / 0.365. AVX2 (2 filters x 6 taps a call) lost every one of
// them: float32 3.67 / 1.93, 1.73 / 0.73, 0.73 / 0.52, 0.207 / 0.168, 0.51 /
// 0.30, 0.51 / 0.24; float64 5x5 3.3 / 1.34, 1x1 1.52 / 0.92, stride 2 0.30
// / 0.195, dilation 2 0.94 / 0.315.
template <class T>
bool im2col_backward_weights_suits(const ConvShape& p) {
    const int64_t taps = p.r * p.s;
    return kIm2colDots && (sizeof(T) == 4 || taps == 1) && p.groups == 1 && p.c == 1 &&
           p.y_dense() && p.k >= (taps <= 9 ? 16 : 32) && p.k * taps * FASTCONV_VECTOR_BYTES <= (int64_t(4) << 20) &&
           taps * kDotRow<T> * static_cast<int64_t>(sizeof(T)) <= (int64_t(1) << 20);
}

// cols[t * kDotRow + i] = x[ih][iw] for the chunk's pixels q = q0 + i, 0
// where tap t reads the padding, and 0 from `count` to the next whole vector:
// im2col.h's rows, one output row's run of the chunk at a time.
template <class T>
void im2col_one_plane(const ConvShape& p, const T* x, int64_t q0, int64_t count, T* cols) {
    constexpr int L = kLanes<T>;
    for (int64_t oh = q0 / p.out_w; oh * p.out_w < q0 + count; ++oh) {
        const int64_t a = std::max(q0, oh * p.out_w), b = std::min(q0 + count, (oh + 1) * p.out_w);
        im2col_row(p, x, 1, oh, a - oh * p.out_w, b - a, cols + (a - q0), kDotRow<T>);
    }
    const int64_t padded = (count + L - 1) / L * L;
    for (int64_t t = 0; t < p.r * p.s; ++t) std::fill(cols + t * kDotRow<T> + count, cols + t * kDotRow<T> + padded, T(0));
}

template <class T>
void im2col_backward_weights(const ConvShape& p, const T* grad_y, const T* x, T* grad_weight) {
    constexpr int L = kLanes<T>;
    const int64_t taps = p.r * p.s, pixels = p.out_h * p.out_w;
    // The taps in groups of at most kDotTaps, split evenly (25 as 9 + 8 + 8,
    // not 9 + 9 + 7); the filters in blocks of kDotFilters, the last one
    // with the rest. Both depend on the shape alone.
    const int64_t tap_groups = (taps + kDotTaps - 1) / kDotTaps;
    const int64_t blocks = (p.k + kDotFilters - 1) / kDotFilters;
    const int64_t chunk = std::min(
        kDotPixels, std::max<int64_t>(L, kDotColumnBytes / (taps * static_cast<int64_t>(sizeof(T))) / L * L));
    PerThread<T> cols_mem(taps * kDotRow<T>);
    const bool fetch_ahead = p.k * std::min(chunk, pixels) * static_cast<int64_t>(sizeof(T)) <= cache_sizes().l2 / 2;
    AlignedArray<T> acc_mem = aligned_array<T>(static_cast<size_t>(p.k * taps * L));  // lane-wise sums [k][t][lane]
    T* const acc = acc_mem.get();
    parallel_region(worth_parallel(conv_flops(p)), [&] {
        T* const cols = cols_mem.get();
        const auto [first, end] = thread_share(blocks);
        if (first >= end) return;
        const int64_t k_first = first * kDotFilters, k_end = std::min(p.k, end * kDotFilters);
        std::fill(acc + k_first * taps * L, acc + k_end * taps * L, T(0));
        for (int64_t n = 0; n < p.n; ++n)
            for (int64_t q0 = 0; q0 < pixels; q0 += chunk) {
                const int64_t count = std::min(chunk, pixels - q0);
                im2col_one_plane(p, x + n * p.xs.n, q0, count, cols);
                // The block's rows of the next chunk (the next image's first)
                // are fetched a chunk ahead, into L2, where a chunk of every
                // filter's rows fits in half of it: a block ahead came too
                // late from memory (one_channel float64 dL/dF 4.5 ms, 4.1
                // this way, 5.7 with no fetch).
                const bool last = q0 + chunk >= pixels;
                const int64_t ahead = last ? p.ys.n - q0 : chunk;
                const bool fetch = fetch_ahead && (!last || n + 1 < p.n);
                for (int64_t blk = first; blk < end; ++blk) {
                    const int64_t k0 = blk * kDotFilters, nk = std::min<int64_t>(kDotFilters, p.k - k0);
                    const T* gy = grad_y + n * p.ys.n + k0 * p.ys.c + q0;
                    for (int64_t g = 0; g < tap_groups; ++g) {
                        const int64_t t0 = taps * g / tap_groups, nt = taps * (g + 1) / tap_groups - t0;
                        pick_dots<T>(static_cast<int>(nk), static_cast<int>(nt), std::make_integer_sequence<int, kDotFilters>{})(
                            gy, p.ys.c, cols + t0 * kDotRow<T>, count, fetch && g == 0 ? gy + ahead : nullptr,
                            acc + (k0 * taps + t0) * L, taps * L);
                    }
                }
            }
        // Each sum's lanes, added up in order.
        for (int64_t j = k_first * taps; j < k_end * taps; ++j) {
            T total = 0;
            for (int lane = 0; lane < L; ++lane) total += acc[j * L + lane];
            grad_weight[j] = total;
        }
    });
}

}  // namespace fastconv::FASTCONV_ISA
