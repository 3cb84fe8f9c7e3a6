// Forward convolution of 3x3 kernels at stride 1 by Winograd's minimal
// filtering F(2x2, 3x3). Each 2 x 2 block of outputs (a tile) is computed
// from the 4 x 4 input pixels d under it: V = B^T d B for each input channel,
// U = G g G^T for each 3 x 3 kernel g, M = sum over channels of U * V
// element by element (16 sums over channels per tile and filter, where the
// direct sum takes 36), then the tile's outputs A^T M A. The 16 sums over
// channels are small matrix products, run by the direct forward's
// micro-kernel with tiles as its pixels and channels as its taps; the
// transforms, adds and halves, are paid once per tile and channel or filter,
// so they pay off where channels and filters are many (winograd_suits).
// The coefficients are 0, +-1 and +-1/2: results differ from a direct sum by
// rounding only (float32: about 1e-6 of the output's scale).
//
// A NaN or Inf in the input spreads over every output of its tiles here, not
// only to the outputs that read it; so where any output comes out non-finite
// the caller computes the call again directly, which puts them where PyTorch
// does (winograd_forward returns false).
// Included by simd_kernels_impl.h inside the instruction set's namespace.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include "dilation_phases.h"
#include "direct_forward_impl.h"
#include "parallel.h"
#include "winograd_input.h"

namespace fastconv::FASTCONV_ISA {

// Bytes of transformed weights for p (16 values per kernel, filters rounded
// up to whole blocks): one copy, shared by the threads.
template <class T>
int64_t winograd_weight_bytes(const ConvShape& p) {
    constexpr int64_t F = kWinogradFilters<T>;
    const int64_t kblocks = (p.k_per_group() + F - 1) / F;
    return p.groups * kWinogradPoints * kblocks * F * p.c_per_group() * static_cast<int64_t>(sizeof(T));
}

// Whether F(2x2, 3x3) suits p: 3x3 kernels at stride 1 and dilation 1 with
// 48 or more channels and filters per group (Zen 3, AVX2, float32: 1.45-1.64x
// as fast as the direct kernel with 64-128 of each, 1.02x with 32), rows of
// at least one AVX2 micro-kernel's tiles or 7 (Zen 4, AVX-512, float32, 7
// tiles a row: 8 x 256 x 14 x 14, 256 filters, 0.69 of the direct kernel's
// time), and transformed weights of 4 MiB at most.
template <class T>
bool winograd_suits(const ConvShape& p) {
    if (p.r != 3 || p.s != 3 || p.stride_h != 1 || p.stride_w != 1 || p.dil_h != 1 || p.dil_w != 1) return false;
    constexpr int64_t np = std::min<int64_t>(DirectKernels<T, 2>::max_pixels, 7);
    return p.c_per_group() >= 48 && p.k_per_group() >= 48 && (p.out_w + 1) / 2 >= np && p.out_h >= 2 &&
           winograd_weight_bytes<T>(p) <= (int64_t(4) << 20);
}

// y = the forward convolution of x (3x3 kernels, stride 1, dilation 1) with
// weights weight_of(g, m, j), j = (c, kr, ks), plus bias (may be null), over
// `phases`: undilated layers of x and y at offsets, alike but for their sizes
// and padding (one: the layer itself; several: a dilated layer's, from
// dilation_phases.h), all in one parallel region with one transform of the
// weights. False where some output is NaN or Inf: then y holds no result.
template <class T, class WeightOf>
bool winograd_forward(const std::vector<DilationPhase>& phases, const T* x, WeightOf weight_of, const T* bias, T* y) {
    using V = typename Simd<T>::vec;
    constexpr int L = kLanes<T>;
    constexpr int64_t F = kWinogradFilters<T>, P = kWinogradPoints;
    constexpr int64_t NP = DirectKernels<T, 2>::max_pixels;
    const ConvShape& p0 = phases.front().q;
    const int64_t cg = p0.c_per_group(), kg = p0.k_per_group(), kblocks = (kg + F - 1) / F, groups = p0.groups;

    // A unit of work: one image, phase, group and row of tiles, and one run
    // of the row's tiles, as long as keeps its transformed input (24 x cg
    // values a tile, below) and sums (16 x kblocks x F) within 3/4 of the L2
    // cache. Image by image, so that a thread's share of the units writes
    // whole images of y, all phases of them: phase by phase, 2 threads had
    // shared the cache lines where rows of different phases meet.
    const int64_t tile_bytes = (24 * cg + P * kblocks * F) * static_cast<int64_t>(sizeof(T));
    const int64_t most_tiles = std::max<int64_t>(NP, cache_sizes().l2 * 3 / 4 / tile_bytes);
    struct Geometry {
        int64_t tile_rows, tiles_per_row, runs, run_tiles, first_unit;
    };
    std::vector<Geometry> geometry;  // first_unit: among an image's units
    int64_t image_units = 0, run_tiles = 0;  // run_tiles: the most of any phase
    double flops = 0;
    for (const DilationPhase& ph : phases) {
        const int64_t tile_rows = (ph.q.out_h + 1) / 2, tiles_per_row = (ph.q.out_w + 1) / 2;
        const int64_t runs = (tiles_per_row + most_tiles - 1) / most_tiles;
        geometry.push_back({tile_rows, tiles_per_row, runs, (tiles_per_row + runs - 1) / runs, image_units});  // the last run may be shorter
        image_units += groups * tile_rows * runs;
        run_tiles = std::max(run_tiles, geometry.back().run_tiles);
        flops += conv_flops(ph.q);
    }
    const int64_t units = p0.n * image_units;

    // u[g][point][kb][c][f] = (G g G^T)[point] of filter kb * F + f's kernel
    // for channel c, 0 past the group's filters.
    const int64_t per_group = P * kblocks * cg * F;
    const AlignedArray<T> u_mem = aligned_array<T>(static_cast<size_t>(groups * per_group));
    T* const u = u_mem.get();

    // The transformed input, v[i][a][c][q] (winograd_input.h): the micro-kernel
    // reads every other element, in its stride-2 form.
    const int64_t pitch = winograd_span<T>(run_tiles);  // elements per array
    std::vector<TapAt> at(static_cast<size_t>(cg));  // channel c: its transformed input and weights
    for (int64_t c = 0; c < cg; ++c) at[static_cast<size_t>(c)] = TapAt{c * pitch, c * F};
    DirectMicro<T> micro_for[NP + 1] = {};
    for (int np = 1; np <= NP; ++np) micro_for[np] = DirectKernels<T, 2>::for_pixels(np, 2);

    // Output rows of the run's tiles, as write_row takes them: pixels of F
    // filters, whole L x L tiles (pitch may end in half a vector).
    const int64_t line_w = (pitch + L - 1) / L * L;
    PerThread<T> v_mem(4 * 3 * cg * pitch), m_mem(P * kblocks * run_tiles * F), rows_mem(4 * 3 * pitch);
    PerThread<T> input_mem(pitch + 2), result_mem(2 * line_w * F), line_mem(L * line_w);
    std::atomic<bool> any_nonfinite{false};
    const double unit_flops = 2.0 * static_cast<double>(P * cg * kblocks * F * run_tiles);
    SharedUnits shared(units, true, SharedUnits::units_per_take(unit_flops));
    parallel_region(worth_parallel(flops), [&] {
        // The weights' transform, a share of the kernels each.
        const auto [k0, k1] = thread_share(groups * kblocks * F);
        for (int64_t gk = k0; gk < k1; ++gk) {
            const int64_t g = gk / (kblocks * F), m = gk % (kblocks * F), kb = m / F, f = m % F;
            T* dst = u + g * per_group + kb * cg * F + f;  // + point * kblocks * cg * F + c * F
            for (int64_t c = 0; c < cg; ++c) {
                T t[4][3] = {};  // G g: rows g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2
                if (m < kg) {
                    for (int64_t j = 0; j < 3; ++j) {
                        const T g0 = weight_of(g, m, c * 9 + j), g1 = weight_of(g, m, c * 9 + 3 + j),
                                g2 = weight_of(g, m, c * 9 + 6 + j);
                        t[0][j] = g0, t[1][j] = T(0.5) * (g0 + g1 + g2), t[2][j] = T(0.5) * (g0 - g1 + g2), t[3][j] = g2;
                    }
                }
                for (int64_t i = 0; i < 4; ++i) {
                    const T row[4] = {t[i][0], T(0.5) * (t[i][0] + t[i][1] + t[i][2]),
                                      T(0.5) * (t[i][0] - t[i][1] + t[i][2]), t[i][2]};
                    for (int64_t j = 0; j < 4; ++j) dst[((i * 4 + j) * kblocks * cg + c) * F] = row[j];
                }
            }
        }
        team_barrier();

        T* const v = v_mem.get();        // v[i][a][c][q]
        T* const sums = m_mem.get();     // sums[point][kb][tile][f]
        T* const rows = rows_mem.get();
        T* const d = input_mem.get();
        T* const result = result_mem.get();  // the top output row's pixels, then the bottom one's
        T* const line = line_mem.get();
        std::fill(result, result + 2 * line_w * F, T(0));  // write_row reads whole tiles past the row's pixels
        V nonfinite{};  // stays 0 while every output is finite (o - o is NaN for NaN and Inf)
        shared.start();
        for (;;) {
            const auto [unit, unit_end] = shared.next([](int64_t first) { return first + 1; });
            if (unit == unit_end) break;
            const int64_t n = unit / image_units, in_image = unit % image_units;
            size_t i = 0;  // the unit's phase
            while (i + 1 < phases.size() && geometry[i + 1].first_unit <= in_image) ++i;
            const ConvShape& p = phases[i].q;
            const Geometry& at_phase = geometry[i];
            const int64_t runs = at_phase.runs, tile_rows = at_phase.tile_rows, u_in = in_image - at_phase.first_unit;
            const int64_t run = u_in % runs, tr = u_in / runs % tile_rows, g = u_in / (runs * tile_rows);
            const int64_t t0 = run * at_phase.run_tiles, tiles = std::min(at_phase.run_tiles, at_phase.tiles_per_row - t0);
            const int64_t width = 2 * tiles;
            winograd_input(p, x + phases[i].x_offset + n * p.xs.n + g * cg * p.xs.c, cg, tr, t0, tiles, pitch, v, rows, d);
            // The 16 sums over channels, each a product of (tiles x cg) and (cg x F) per filter block.
            const PixelBlocks blocks(tiles, NP);
            for (int64_t point = 0; point < P; ++point) {
                const T* in = winograd_point(v, point, cg, pitch);
                for (int64_t kb = 0; kb < kblocks; ++kb) {
                    const T* w = u + g * per_group + (point * kblocks + kb) * cg * F;
                    for (int64_t b = 0; b < blocks.count; ++b) {
                        const int64_t ts = blocks.start(b), np = blocks.pixels(b);
                        micro_for[np](in + 2 * ts, 2, w, at.data(), cg, sums + ((point * kblocks + kb) * run_tiles + ts) * F,
                                      false);
                    }
                }
            }
            // The outputs A^T M A: rows m0 + m1 + m2 and m1 - m2 - m3, then the
            // same along them; written a row of the run at a time.
            const int64_t oh = 2 * tr, ow0 = 2 * t0, out_w = std::min(width, p.out_w - ow0);
            for (int64_t kb = 0; kb < kblocks; ++kb) {
                for (int64_t t = 0; t < tiles; ++t)
                    for (int64_t half = 0; half < F; half += L) {
                        V m[P];
                        for (int64_t point = 0; point < P; ++point)
                            m[point] = load<V>(sums + ((point * kblocks + kb) * run_tiles + t) * F + half);
                        V top[4], bottom[4];
                        for (int j = 0; j < 4; ++j) {
                            top[j] = m[j] + m[4 + j] + m[8 + j];
                            bottom[j] = m[4 + j] - m[8 + j] - m[12 + j];
                        }
                        const V o[4] = {top[0] + top[1] + top[2], top[1] - top[2] - top[3],
                                        bottom[0] + bottom[1] + bottom[2], bottom[1] - bottom[2] - bottom[3]};
                        for (const V& value : o) nonfinite += value - value;
                        store(result + (2 * t) * F + half, o[0]);
                        store(result + (2 * t + 1) * F + half, o[1]);
                        store(result + (line_w + 2 * t) * F + half, o[2]);
                        store(result + (line_w + 2 * t + 1) * F + half, o[3]);
                    }
                const int64_t k0 = g * kg + kb * F, nk = std::min(F, kg - kb * F);
                for (int64_t r = 0; r < 2 && oh + r < p.out_h; ++r)
                    write_row<T, F>(result + r * line_w * F, out_w, nk, bias ? bias + k0 : nullptr,
                                    y + phases[i].y_offset + n * p.ys.n + k0 * p.ys.c + (oh + r) * p.ys.h + ow0 * p.ys.w,
                                    p.ys, line, line_w);
            }
        }
        note_nonfinite<T>(nonfinite, any_nonfinite);
    });
    return !any_nonfinite.load();
}

// A dilated 3x3 layer at stride 1 by F(2x2, 3x3), as its undilated phases
// (dilation_phases.h), all in one parallel region (with a region per phase,
// 2 threads ran dilated_3x3's forward in a median 2.68 ms, 1.45x as fast as
// 1; Zen 4). False where some phase does not suit or some output is NaN or
// Inf: then y holds no result.
template <class T, class WeightOf>
bool winograd_forward_dilated(const ConvShape& p, const T* x, WeightOf weight_of, const T* bias, T* y) {
    if (p.stride_h != 1 || p.stride_w != 1 || (p.dil_h == 1 && p.dil_w == 1)) return false;
    const std::vector<DilationPhase> phases = dilation_phases(p);
    const auto suits = [](const DilationPhase& ph) { return winograd_suits<T>(ph.q); };
    if (phases.empty() || !std::all_of(phases.begin(), phases.end(), suits)) return false;
    return winograd_forward(phases, x, weight_of, bias, y);
}

}  // namespace fastconv::FASTCONV_ISA
