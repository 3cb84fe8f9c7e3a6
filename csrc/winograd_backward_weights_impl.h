// dL/dweight of 3x3 kernels at stride 1 by Winograd's F(3x3, 2x2), the
// transpose of the forward's F(2x2, 3x3): over a tile of 2 x 2 outputs,
// dW[kr][ks] = sum of gy[a][b] * d[a + kr][b + ks] (a, b < 2) is
// dW = G^T [(A gy A^T) * (B^T d B)] G with the forward's B^T and G and
// A = [1 0; 1 1; 1 -1; 0 -1]: 16 products per tile, filter and channel where
// the direct sum takes 36. The bracket is summed over every tile of every
// image before the (linear) G^T ... G, so the sums are 16 products of
// (channels x tiles) and (tiles x filters), run by winograd_bw_micro below.
// Each task owns a range of filter blocks and of channels and walks every
// tile in a fixed order, so the result does not depend on the thread count.
// A NaN or Inf spreads over whole tiles here: where any gradient comes out
// non-finite the caller computes it again directly (returns false).
// Included by simd_kernels_impl.h inside the instruction set's namespace.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <utility>

#include "parallel.h"
#include "winograd_forward_impl.h"
#include "winograd_input.h"

namespace fastconv::FASTCONV_ISA {

// acc[b][jj][v] += src[jj][2t] * gy[b][t][v] over the `tiles` tiles t of a
// row, for NJ channels jj and KB filter blocks b of two vectors v (sums of
// block b at acc_mem + b * acc_step, its grad_y at gy + b * gy_step): the 16
// sums' inner products, tile after tile in that order. Two blocks with
// AVX-512 (FASTCONV_WINOGRAD_BW_BLOCKS), so that each broadcast input value
// feeds 4 FMAs: feeding 2, the loop's 12 FMAs came with 8 loads, which
// llvm-mca's model of a core with two 512-bit FMA ports (skylake-avx512)
// puts partly on the FMA ports: 7 cycles for 6, 85.6 % of their throughput.
template <class T, int NJ, int KB>
void winograd_bw_micro(const T* const* __restrict src, const T* __restrict gy, int64_t gy_step, int64_t tiles,
                       T* __restrict acc_mem, int64_t acc_step) {
    using V = typename Simd<T>::vec;
    constexpr int L = kLanes<T>, F = 2 * L, NV = 2 * KB;
    V acc[NJ][NV];
#pragma GCC unroll 8
    for (int jj = 0; jj < NJ; ++jj)
#pragma GCC unroll 4
        for (int i = 0; i < NV; ++i) acc[jj][i] = load<V>(acc_mem + (i / 2) * acc_step + jj * F + (i % 2) * L);
    const T* s[NJ];
#pragma GCC unroll 8
    for (int jj = 0; jj < NJ; ++jj) s[jj] = src[jj];
    for (int64_t t = 0; t < tiles; ++t) {
        V d[NV];
#pragma GCC unroll 4
        for (int i = 0; i < NV; ++i) d[i] = load<V>(gy + (i / 2) * gy_step + t * F + (i % 2) * L);
#pragma GCC unroll 8
        for (int jj = 0; jj < NJ; ++jj) {
            const T xv = s[jj][2 * t];
#pragma GCC unroll 4
            for (int i = 0; i < NV; ++i) acc[jj][i] += xv * d[i];
        }
    }
#pragma GCC unroll 8
    for (int jj = 0; jj < NJ; ++jj)
#pragma GCC unroll 4
        for (int i = 0; i < NV; ++i) store(acc_mem + (i / 2) * acc_step + jj * F + (i % 2) * L, acc[jj][i]);
}

template <class T>
using WinogradBwMicro = void (*)(const T* const*, const T*, int64_t, int64_t, T*, int64_t);

// The micro-kernel for `channels` channels (1..NJ) and `blocks` filter blocks (1..KB).
template <class T, int KB, int... J>
WinogradBwMicro<T> pick_winograd_bw(int channels, int blocks, std::integer_sequence<int, J...>) {
    if constexpr (KB > 1) {
        if (blocks == KB) {
            WinogradBwMicro<T> table[] = {&winograd_bw_micro<T, J + 1, KB>...};
            return table[channels - 1];
        }
    }
    WinogradBwMicro<T> table[] = {&winograd_bw_micro<T, J + 1, 1>...};
    return table[channels - 1];
}

// gy_t[point][t][f] = (A gy A^T)[point] of the 2 x 2 grad_y values of tile t
// of tile row tr (`tiles` of them: the whole row) for filter f of the F from
// gy_k (filter planes p.ys.c apart), 0 past nk filters and the outputs' edges.
// rows: scratch of 2 x winograd_span(tiles) x F.
template <class T, int64_t F>
void winograd_grad_output(const ConvShape& p, const T* gy_k, int64_t nk, int64_t tr, int64_t tiles, T* gy_t, T* rows) {
    using V = typename Simd<T>::vec;
    constexpr int L = kLanes<T>;
    const int64_t width = 2 * tiles, line = winograd_span<T>(tiles);
    // rows[r][ow][f]: the two grad_y rows transposed, filters side by side.
    for (int64_t r = 0; r < 2; ++r) {
        T* const dst = rows + r * line * F;
        const int64_t oh = 2 * tr + r, valid = oh < p.out_h ? p.out_w : 0;
        const T* src = gy_k + oh * p.ys.h;
        int64_t ow = 0;
        if (p.ys.w == 1 && nk == F)
            for (; ow + L <= valid; ow += L)
                for (int64_t f = 0; f < F; f += L) transpose_tile(src + f * p.ys.c + ow, p.ys.c, dst + ow * F + f, F);
        for (; ow < valid; ++ow)
            for (int64_t f = 0; f < F; ++f) dst[ow * F + f] = f < nk ? src[f * p.ys.c + ow * p.ys.w] : T(0);
        std::fill(dst + valid * F, dst + width * F, T(0));
    }
    const int64_t point_step = tiles * F;
    for (int64_t t = 0; t < tiles; ++t)
        for (int64_t f = 0; f < F; f += L) {
            const V g00 = load<V>(rows + (2 * t) * F + f), g01 = load<V>(rows + (2 * t + 1) * F + f);
            const V g10 = load<V>(rows + (line + 2 * t) * F + f), g11 = load<V>(rows + (line + 2 * t + 1) * F + f);
            // A along the rows, then along the columns: h, h0 + h1, h0 - h1, -h1.
            const V col[4][2] = {{g00, g01}, {g00 + g10, g01 + g11}, {g00 - g10, g01 - g11}, {-g10, -g11}};
            T* const out = gy_t + t * F + f;
            for (int i = 0; i < 4; ++i) {
                store(out + (i * 4 + 0) * point_step, col[i][0]);
                store(out + (i * 4 + 1) * point_step, col[i][0] + col[i][1]);
                store(out + (i * 4 + 2) * point_step, col[i][0] - col[i][1]);
                store(out + (i * 4 + 3) * point_step, -col[i][1]);
            }
        }
}

// Whether F(3x3, 2x2) suits p's dL/dweight: where the forward's F(2x2, 3x3)
// does, with rows of at least one forward micro-kernel's tiles (the sums run
// a row of tiles at a time; shorter rows were not measured).
template <class T>
bool winograd_backward_weights_suits(const ConvShape& p) {
    return winograd_suits<T>(p) && (p.out_w + 1) / 2 >= DirectKernels<T, 2>::max_pixels;
}

// grad_weight = dL/dweight of p (winograd_backward_weights_suits).
// False where some value is NaN or Inf: then grad_weight holds no result.
template <class T>
bool winograd_backward_weights(const ConvShape& p, const T* grad_y, const T* x, T* grad_weight) {
    using V = typename Simd<T>::vec;
    constexpr int L = kLanes<T>, NJ = FASTCONV_BW_NJ, KB = FASTCONV_WINOGRAD_BW_BLOCKS;
    constexpr int64_t F = kWinogradFilters<T>, P = kWinogradPoints;
    const int64_t cg = p.c_per_group(), kg = p.k_per_group(), kblocks = (kg + F - 1) / F;
    const int64_t tile_rows = (p.out_h + 1) / 2, tiles_per_row = (p.out_w + 1) / 2;

    // A task owns a range of filter blocks and one of channels (a multiple of
    // NJ): splitting the filters transforms the input again, splitting the
    // channels grad_y. Filters first, until every thread has a task and a
    // task's transformed grad_y for a row of tiles (16 x filters x tiles: wide
    // images) fits in 2 MiB, then channels, until its sums (16 x filters x
    // channels) fit in 1 MiB.
    const int64_t threads = max_threads(), per_group = (threads + p.groups - 1) / p.groups;
    int64_t ksplits = std::min(kblocks, per_group);
    while (ksplits < kblocks &&
           P * ((kblocks + ksplits - 1) / ksplits) * F * tiles_per_row * static_cast<int64_t>(sizeof(T)) > (int64_t(2) << 20))
        ++ksplits;
    const int64_t kper = (kblocks + ksplits - 1) / ksplits;
    int64_t csplits = (per_group + ksplits - 1) / ksplits;
    while (P * kper * F * ((cg + csplits - 1) / csplits) * static_cast<int64_t>(sizeof(T)) > (int64_t(1) << 20) &&
           (cg + csplits - 1) / csplits > NJ)
        ++csplits;
    const int64_t cper = ((cg + csplits - 1) / csplits + NJ - 1) / NJ * NJ;
    const int64_t kranges = (kblocks + kper - 1) / kper, cranges = (cg + cper - 1) / cper;
    const int64_t tasks = p.groups * kranges * cranges;

    // Tiles go a whole row of tiles at a time (the micro-kernel's loads and
    // stores of its sums are shared by the row's tiles): grad_y transformed
    // for the task's filters, then the input for a chunk of its channels at a
    // time, a quarter of the L2 cache each.
    const int64_t pitch = winograd_span<T>(tiles_per_row);  // also grad_y's rows' (winograd_grad_output)
    const int64_t chunk = std::clamp<int64_t>(cache_sizes().l2 / 4 / (12 * pitch * static_cast<int64_t>(sizeof(T))) / NJ * NJ,
                                              NJ, cper);

    PerThread<T> v_mem(12 * chunk * pitch), gy_mem(kper * P * tiles_per_row * F), sums_mem(P * kper * cper * F);
    PerThread<T> rows_mem(std::max<int64_t>(12 * pitch, 2 * pitch * F)), input_mem(pitch + 2);
    std::atomic<bool> any_nonfinite{false};
    parallel_region(worth_parallel(conv_flops(p)), [&] {
        T* const v = v_mem.get();        // v[i][a][c][q], the task's channels
        T* const gy_t = gy_mem.get();    // [kb][point][tile][f]
        T* const sums = sums_mem.get();  // [point][kb][c][f]
        T* const rows = rows_mem.get();
        T* const d = input_mem.get();
        V nonfinite{};  // stays 0 while every gradient is finite
#pragma omp for schedule(dynamic)
        for (int64_t task = 0; task < tasks; ++task) {
            const int64_t cr = task % cranges, kr = task / cranges % kranges, g = task / (cranges * kranges);
            const int64_t c0 = cr * cper, nc = std::min(cper, cg - c0);
            const int64_t kb0 = kr * kper, nkb = std::min(kper, kblocks - kb0);
            std::fill(sums, sums + P * nkb * nc * F, T(0));
            for (int64_t n = 0; n < p.n; ++n)
                for (int64_t tr = 0; tr < tile_rows; ++tr) {
                    for (int64_t kb = 0; kb < nkb; ++kb) {
                        const int64_t k0 = g * kg + (kb0 + kb) * F, nk = std::min(F, kg - (kb0 + kb) * F);
                        winograd_grad_output<T, F>(p, grad_y + n * p.ys.n + k0 * p.ys.c, nk, tr, tiles_per_row,
                                                   gy_t + kb * P * tiles_per_row * F, rows);
                    }
                    for (int64_t cc = 0; cc < nc; cc += chunk) {
                        const int64_t ncc = std::min(chunk, nc - cc);
                        winograd_input(p, x + n * p.xs.n + (g * cg + c0 + cc) * p.xs.c, ncc, tr, 0, tiles_per_row, pitch, v, rows, d);
                        for (int64_t point = 0; point < P; ++point) {
                            const T* vp = winograd_point(v, point, ncc, pitch);
                            for (int64_t kb = 0; kb < nkb; kb += KB) {
                                const T* gp = gy_t + (kb * P + point) * tiles_per_row * F;
                                const int blocks = static_cast<int>(std::min<int64_t>(KB, nkb - kb));
                                for (int64_t c = 0; c < ncc; c += NJ) {
                                    const int64_t nj = std::min<int64_t>(NJ, ncc - c);
                                    const T* src[NJ];
                                    for (int64_t jj = 0; jj < nj; ++jj) src[jj] = vp + (c + jj) * pitch;
                                    pick_winograd_bw<T, KB>(static_cast<int>(nj), blocks, std::make_integer_sequence<int, NJ>{})(
                                        src, gp, P * tiles_per_row * F, tiles_per_row,
                                        sums + ((point * nkb + kb) * nc + cc + c) * F, nc * F);
                                }
                            }
                        }
                    }
                }
            // dW = G^T M G: rows m0 + (m1 + m2) / 2, (m1 - m2) / 2, (m1 + m2) / 2 + m3, then the same along them.
            for (int64_t kb = 0; kb < nkb; ++kb)
                for (int64_t c = 0; c < nc; ++c)
                    for (int64_t f = 0; f < F; f += L) {
                        V m[P];
                        for (int64_t point = 0; point < P; ++point)
                            m[point] = load<V>(sums + ((point * nkb + kb) * nc + c) * F + f);
                        const V half = V{} + T(0.5);
                        V r[3][4];
                        for (int j = 0; j < 4; ++j) {
                            const V s = (m[4 + j] + m[8 + j]) * half, dlt = (m[4 + j] - m[8 + j]) * half;
                            r[0][j] = m[j] + s, r[1][j] = dlt, r[2][j] = s + m[12 + j];
                        }
                        alignas(64) T out[9][L];
                        for (int i = 0; i < 3; ++i) {
                            const V s = (r[i][1] + r[i][2]) * half, dlt = (r[i][1] - r[i][2]) * half;
                            const V o[3] = {r[i][0] + s, dlt, s + r[i][3]};
                            for (int j = 0; j < 3; ++j) {
                                nonfinite += o[j] - o[j];
                                store(out[i * 3 + j], o[j]);
                            }
                        }
                        const int64_t m0 = (kb0 + kb) * F + f;  // filter of the group
                        for (int64_t ff = 0; ff < std::min<int64_t>(L, kg - m0); ++ff) {
                            T* const gw = grad_weight + ((g * kg + m0 + ff) * cg + c0 + c) * 9;
                            for (int tap = 0; tap < 9; ++tap) gw[tap] = out[tap][ff];
                        }
                    }
        }
        note_nonfinite<T>(nonfinite, any_nonfinite);
    });
    return !any_nonfinite.load();
}

}  // namespace fastconv::FASTCONV_ISA
