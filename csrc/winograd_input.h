// The input side of Winograd's F(2x2, 3x3), shared by the forward and
// dL/dweight kernels: V = B^T d B for the 4 x 4 input pixels d under each
// tile (2 x 2 outputs) of a run of tiles along a row of tiles, for a range of
// channels; B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
// Included by the Winograd kernels inside the instruction set's namespace.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "conv_shape.h"

namespace fastconv::FASTCONV_ISA {

// The transformed values per tile (4 x 4) and the filters per block (two vectors).
constexpr int64_t kWinogradPoints = 16;
template <class T>
constexpr int64_t kWinogradFilters = 2 * kLanes<T>;

// B^T along an input row d (n + 2 values): diff[q] = d[q] - d[q + 2],
// sum[q] = d[q] + d[q + 1], rise[q] = d[q + 1] - d[q] for q < n. Apart so
// that __restrict lets the compiler vectorise it.
template <class T>
void winograd_row_transform(const T* __restrict d, int64_t n, T* __restrict diff, T* __restrict sum, T* __restrict rise) {
    for (int64_t q = 0; q < n; ++q) {
        diff[q] = d[q] - d[q + 2];
        sum[q] = d[q] + d[q + 1];
        rise[q] = d[q + 1] - d[q];
    }
}

// B^T down the columns of four rows' arrays: r0 - r2, r1 + r2, r2 - r1, r1 - r3.
template <class T>
void winograd_column_transform(const T* __restrict r0, const T* __restrict r1, const T* __restrict r2,
                               const T* __restrict r3, int64_t n, T* __restrict v0, T* __restrict v1,
                               T* __restrict v2, T* __restrict v3) {
    for (int64_t q = 0; q < n; ++q) {
        v0[q] = r0[q] - r2[q];
        v1[q] = r1[q] + r2[q];
        v2[q] = r2[q] - r1[q];
        v3[q] = r1[q] - r3[q];
    }
}

// Vectorised along the row: with d[q] the run's input columns (q = 0, 1, ...;
// tile t reads q = 2t .. 2t + 3), B^T along a row gives tile t the values
// diff[2t], sum[2t + 1], rise[2t + 1] and diff[2t + 1] of the whole-row
// arrays above; B^T down the columns then combines the four input rows'
// arrays. So v[i][a][c][q] holds, for array a of diff, sum and rise, point
// (i, j)'s value for tile t at q = 2t + kFirst[j] of array kArray[j]
// (winograd_point): a kernel reads every other element.
constexpr int64_t kArray[4] = {0, 1, 2, 0}, kFirst[4] = {0, 1, 1, 1};

// Point (i, j) = point / 4, point % 4 of channel 0 in v (channel c at + c * pitch).
template <class T>
T* winograd_point(T* v, int64_t point, int64_t channels, int64_t pitch) {
    return v + ((point / 4) * 3 + kArray[point % 4]) * channels * pitch + kFirst[point % 4];
}

// Elements winograd_input computes per array for `tiles` tiles: 2 x tiles
// rounded up to half vectors. GCC's loops below run whole vectors, then one
// half vector, then single values: the rounding leaves no single values,
// which had been most of a short row's work (dilated_3x3's phases, 14
// values: 0.85 of the forward's time without them, Zen 4). Rounded up to
// whole vectors, resnet_3x3's 56 values became 64 (forward 2.7 % slower).
template <class T>
int64_t winograd_span(int64_t tiles) {
    constexpr int64_t half = kLanes<T> / 2;
    return (2 * tiles + half - 1) / half * half;
}

// v[i][a][c][q] for `channels` input planes from x_c (p.xs.c apart), tile
// row tr and tiles [t0, t0 + tiles) of it, q < 2 * tiles; pitch >=
// span = winograd_span(tiles) elements per array, q from 2 * tiles to span
// meaningless. rows (12 x pitch) and d (span + 2) are scratch.
template <class T>
void winograd_input(const ConvShape& p, const T* x_c, int64_t channels, int64_t tr, int64_t t0, int64_t tiles,
                    int64_t pitch, T* v, T* rows, T* d) {
    const int64_t width = winograd_span<T>(tiles);
    // d[q] = input column col0 + q of a row; tile row tr reads rows 2 * tr - pad_top + i, i < 4.
    const int64_t col0 = 2 * t0 - p.pad_left;
    const int64_t q_lo = std::clamp<int64_t>(-col0, 0, width + 2), q_hi = std::clamp<int64_t>(p.w - col0, q_lo, width + 2);
    for (int64_t c = 0; c < channels; ++c) {
        const T* plane = x_c + c * p.xs.c;
        for (int64_t i = 0; i < 4; ++i) {
            T* const diff = rows + i * 3 * pitch;
            T *const sum = diff + pitch, *const rise = sum + pitch;
            const int64_t ih = 2 * tr - p.pad_top + i;
            if (ih < 0 || ih >= p.h) {
                std::fill(diff, diff + 3 * pitch, T(0));
                continue;
            }
            const T* in = plane + ih * p.xs.h;
            std::fill(d, d + q_lo, T(0));
            if (p.xs.w == 1) std::copy(in + col0 + q_lo, in + col0 + q_hi, d + q_lo);
            else for (int64_t q = q_lo; q < q_hi; ++q) d[q] = in[(col0 + q) * p.xs.w];
            std::fill(d + q_hi, d + width + 2, T(0));
            winograd_row_transform(d, width, diff, sum, rise);
        }
        for (int64_t a = 0; a < 3; ++a) {
            const T* r0 = rows + a * pitch;
            const T *r1 = r0 + 3 * pitch, *r2 = r1 + 3 * pitch, *r3 = r2 + 3 * pitch;
            T* const v0 = v + (a * channels + c) * pitch;
            T *const v1 = v0 + 3 * channels * pitch, *const v2 = v1 + 3 * channels * pitch, *const v3 = v2 + 3 * channels * pitch;
            winograd_column_transform(r0, r1, r2, r3, width, v0, v1, v2, v3);
        }
    }
}

// Sets `any` where a lane of `nonfinite` is not 0: a thread's sum of r - r
// over its results, which is NaN once any result was NaN or Inf.
template <class T>
void note_nonfinite(const typename Simd<T>::vec& nonfinite, std::atomic<bool>& any) {
    alignas(64) T lanes[kLanes<T>];
    store(lanes, nonfinite);
    for (int i = 0; i < kLanes<T>; ++i)
        if (lanes[i] != T(0)) any.store(true, std::memory_order_relaxed);
}

}  // namespace fastconv::FASTCONV_ISA
