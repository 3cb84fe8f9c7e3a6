// Direct convolution vectorised over output pixels, for layers with few
// filters per group (3 input channels' worth of dL/dx, say) at column stride
// 1: the im2col row of tap j for a run of output pixels is a contiguous run
// of the zero-padded input window, so the GEMM micro-kernel (row_micro in
// implicit_gemm.h) reads its B operand in place, with no packing.
// Included by simd_kernels_impl.h inside the instruction set's namespace.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "direct_forward_impl.h"
#include "implicit_gemm.h"
#include "input_window.h"
#include "parallel.h"

namespace fastconv::FASTCONV_ISA {

// Vectors of pixels per row tile (1 .. kVectorsPerTile): the most that keep
// the lanes past the row's end fewest.
template <class T>
int row_vectors(int64_t out_w) {
    constexpr int64_t L = kLanes<T>;
    int best = 1;
    double best_use = 0;
    for (int nv = 1; nv <= kVectorsPerTile; ++nv) {
        const int64_t w = nv * L;
        const double use = static_cast<double>(out_w) / static_cast<double>((out_w + w - 1) / w * w);
        if (use >= best_use) best = nv, best_use = use;
    }
    return best;
}

// Whether row_direct_forward suits p better than direct_forward: column
// stride 1, at most FASTCONV_MR filters per group, and fewer idle vector
// lanes (pixel tiles past the row's end here, filter slots past the group's
// filters there).
template <class T>
bool row_direct_suits(const ConvShape& p) {
    constexpr int64_t L = kLanes<T>;
    const int64_t kg = p.k_per_group();
    if (p.stride_w != 1 || kg > FASTCONV_MR) return false;
    const int64_t w = row_vectors<T>(p.out_w) * L;
    const double row_use = static_cast<double>(p.out_w) / static_cast<double>((p.out_w + w - 1) / w * w);
    const double filter_use = static_cast<double>(kg) / static_cast<double>((kg + L - 1) / L * L);
    return row_use > filter_use;
}

// MR filters (at most 3), NR output rows at once: c[(i * NR + r) * W + pixel]
// = sum over taps j of a[j * MR + i] * base[offset[j] + r * row_step + pixel].
// A few filters give the GEMM micro-kernel too few rows of accumulators to
// hide the FMA latency; rows of output multiply them.
// The taps go kernel row by kernel row, S of them dil_w apart
// (InputWindow::offset): one offset load per kernel row, then a pointer
// stepped along it. One filter does one FMA per input vector loaded, so an
// offset load and a broadcast beside them per tap had an Intel core's two
// load ports as the limit (llvm-mca skylake-avx512: 79.8 % of the FMA peak
// for one filter of 4 rows x 2 vectors; see rows_per_call for the sums).
// Output rows addressed from anchor rows: row r is read as anchor_row(r) +
// m rows, m in {0, 1, 2, 4, 8} (x86's scaled index), so that NR rows take a
// few address registers rather than one each. Anchors: the rows that no
// earlier anchor reaches (0, 3, 6, 9 of 12). load_scaled and fma_scaled
// declare no memory read: rows_micro is called only through RowsMicro
// pointers, after its caller's stores to the window.
constexpr bool scaled_step(int m) { return m == 0 || m == 1 || m == 2 || m == 4 || m == 8; }
constexpr bool is_anchor_row(int r) {
    for (int a = 0; a < r; ++a)
        if (is_anchor_row(a) && scaled_step(r - a)) return false;
    return true;
}
constexpr int anchor_row(int r) {
    for (int a = 0; a < r; ++a)
        if (is_anchor_row(a) && scaled_step(r - a)) return a;
    return r;
}
// anchor_row of rows 0 .. 15, worked out at compile time (GCC called the
// functions at run time from the unrolled loops).
struct AnchorRows {
    int of[16];
    constexpr AnchorRows() : of{} {
        for (int r = 0; r < 16; ++r) of[r] = anchor_row(r);
    }
};

template <class T, int MR, int NR, int NV>
void rows_micro(const T* __restrict base, int64_t row_step, const int64_t* __restrict offset, int64_t ntaps, int64_t S,
                int64_t dil_w, const T* __restrict a, T* __restrict c) {
    using V = typename Simd<T>::vec;
    constexpr int L = kLanes<T>, W = NV * kLanes<T>;
    V acc[MR][NR][NV];
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 16
        for (int r = 0; r < NR; ++r)
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) acc[i][r][v] = V{};
    // Where registers are left over, each FMA into its sum's own register
    // (llvm-mca skylake-avx512, 3 filters x 2 rows x 3 vectors: 89.9 % with
    // GCC's moves).
    constexpr bool kPinned = MR * NR * NV + MR + 1 < kVectorRegisters;
    // Where the registers hold them, a tap's input vectors are all loaded
    // first, then each filter's weight broadcast for its FMAs (AVX-512, 3
    // filters x 2 rows x 3 vectors: 96.3 % on skylake-avx512, 81.7 % in the
    // order below, where GCC moved sums about); else, as AVX2's 3 filters x 4
    // rows must (17 registers), each vector serves its MR FMAs as it comes.
    // One filter takes the second order whatever the registers.
    constexpr bool kLoadFirst = MR > 1 && MR * NR * NV + NR * NV + 1 <= kVectorRegisters;
    // With 6 or 12 rows GCC kept an address register per row, and the
    // weights' pointer and the step went to the stack (one filter of 6 rows
    // x 2 vectors, AVX2: two stack loads a tap, 79.9 % on skylake-avx512).
    const int64_t row_bytes = row_step * static_cast<int64_t>(sizeof(T));
    static_assert(NR <= 16);
    constexpr AnchorRows rows{};
    const T* anchor[NR];
    // Vector v of output row r's input at the current tap (r, v constants
    // once the loops are unrolled; v's offset a displacement in the load).
    // Row 0 too through asm: a plain load GCC repeated for every filter
    // rather than hold it (AVX-512, 3 filters x 2 rows x 2 vectors: 8 loads
    // per 12 FMAs, 25 % slower on Zen 4); pinning the vectors in registers
    // instead (an empty asm) made it move the third filter's sums about
    // (3 filters x 2 rows x 3 vectors: 64.3 % on skylake-avx512).
    const auto vector_at = [&](int r, auto vc) -> V {
        constexpr int D = decltype(vc)::value * L * static_cast<int>(sizeof(T));
        const char* at = reinterpret_cast<const char*>(anchor[rows.of[r]]);
        switch (r - rows.of[r]) {
            case 1: return load_scaled<V, 1, D>(at, row_bytes);
            case 2: return load_scaled<V, 2, D>(at, row_bytes);
            case 4: return load_scaled<V, 4, D>(at, row_bytes);
            case 8: return load_scaled<V, 8, D>(at, row_bytes);
            default: return load_scaled<V, 0, D>(at, 0);
        }
    };
    static_assert(NV <= 3);
    const auto row_vector = [&](int r, int v) -> V {
        switch (v) {
            case 0: return vector_at(r, std::integral_constant<int, 0>{});
            case 1: return vector_at(r, std::integral_constant<int, 1>{});
            default: return vector_at(r, std::integral_constant<int, 2>{});
        }
    };
    // acc += w * row_vector(r, v), the load folded into the FMA.
    const auto fma_vector_at = [&](V& sum, const V w, int r, auto vc) {
        constexpr int D = decltype(vc)::value * L * static_cast<int>(sizeof(T));
        const char* at = reinterpret_cast<const char*>(anchor[rows.of[r]]);
        switch (r - rows.of[r]) {
            case 1: return fma_scaled<T, 1, D>(sum, w, at, row_bytes);
            case 2: return fma_scaled<T, 2, D>(sum, w, at, row_bytes);
            case 4: return fma_scaled<T, 4, D>(sum, w, at, row_bytes);
            case 8: return fma_scaled<T, 8, D>(sum, w, at, row_bytes);
            default: return fma_scaled<T, 0, D>(sum, w, at, 0);
        }
    };
    const auto fma_row_vector = [&](V& sum, const V w, int r, int v) {
        switch (v) {
            case 0: return fma_vector_at(sum, w, r, std::integral_constant<int, 0>{});
            case 1: return fma_vector_at(sum, w, r, std::integral_constant<int, 1>{});
            default: return fma_vector_at(sum, w, r, std::integral_constant<int, 2>{});
        }
    };
    for (int64_t j0 = 0; j0 < ntaps; j0 += S) {
#pragma GCC unroll 16
        for (int r = 0; r < NR; ++r)
            if (rows.of[r] == r) anchor[r] = base + offset[j0] + r * row_step;
        const T* w_at = a + j0 * MR;
        for (int64_t ks = 0; ks < S; ++ks, w_at += MR) {
            if constexpr (kLoadFirst) {
                V bv[NR][NV];
#pragma GCC unroll 16
                for (int r = 0; r < NR; ++r)
#pragma GCC unroll 4
                    for (int v = 0; v < NV; ++v) bv[r][v] = row_vector(r, v);
#pragma GCC unroll 4
                for (int i = 0; i < MR; ++i) {
                    const V w = splat<V>(w_at[i]);
#pragma GCC unroll 16
                    for (int r = 0; r < NR; ++r)
#pragma GCC unroll 4
                        for (int v = 0; v < NV; ++v) {
                            if constexpr (kPinned) fma_into(acc[i][r][v], w, bv[r][v]);
                            else acc[i][r][v] += w * bv[r][v];
                        }
                }
            } else {
                V w[MR];
#pragma GCC unroll 4
                for (int i = 0; i < MR; ++i) w[i] = splat<V>(w_at[i]);
                // Each input vector loaded once, for its MR FMAs.
#pragma GCC unroll 16
                for (int r = 0; r < NR; ++r)
#pragma GCC unroll 4
                    for (int v = 0; v < NV; ++v) {
                        if constexpr (MR == 1) {  // one FMA per vector: the load folded into it
                            fma_row_vector(acc[0][r][v], w[0], r, v);
                            continue;
                        }
                        const V b = row_vector(r, v);
#pragma GCC unroll 4
                        for (int i = 0; i < MR; ++i) {
                            if constexpr (kPinned) fma_into(acc[i][r][v], w[i], b);
                            else acc[i][r][v] += w[i] * b;
                        }
                    }
            }
#pragma GCC unroll 16
            for (int r = 0; r < NR; ++r)
                if (rows.of[r] == r) anchor[r] += dil_w;
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 16
        for (int r = 0; r < NR; ++r)
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) store(c + (i * NR + r) * W + v * L, acc[i][r][v]);
}

// Output rows per call of rows_micro with `filters` filters (at most 3) of
// `vectors` vectors: 12 sums (at least 2 rows), so that the two FMA ports,
// of latency 4, always have 8 independent FMAs at hand, and so that one
// filter loads 13 vectors per 12 FMAs (12 rows and a weight, within AVX2's
// 16 registers). With 4 rows of 1 or 2 vectors, 2 rows of 2 or 3 filters,
// the sums were 4-8: latency-bound.
constexpr int kRowsFilters = 3;
constexpr int rows_per_call(int filters, int vectors) {
    return 12 / (filters * vectors) > 2 ? 12 / (filters * vectors) : 2;
}

// Whether tiles of `filters` filters take one vector of pixels, whatever the
// row width: on AVX2 for two or three, whose sums over two vectors with the
// row vectors overflow the 16 registers (3 filters x 2 rows x 2 vectors
// spilled to the stack: the 3 input channels' dL/dx of a 7x7 stride-2 stem
// is 10 % faster with one vector, 2 channels' 5x5 30 %).
constexpr bool one_vector(int filters) {
    return FASTCONV_VECTOR_BYTES == 32 && filters >= 2 && filters <= kRowsFilters;
}

template <class T>
using RowsMicro = void (*)(const T*, int64_t, const int64_t*, int64_t, int64_t, int64_t, const T*, T*);

template <class T, int MR, int NV, int... R>
RowsMicro<T> pick_rows_micro(int rows, std::integer_sequence<int, R...>) {
    RowsMicro<T> table[] = {&rows_micro<T, MR, R + 1, NV>...};
    return table[rows - 1];
}

template <class T, int MR, int NV>
RowsMicro<T> rows_micro_for_vectors(int rows) {
    return pick_rows_micro<T, MR, NV>(rows, std::make_integer_sequence<int, rows_per_call(MR, NV)>{});
}

template <class T, int MR>
RowsMicro<T> rows_micro_for_filters(int rows, int nv) {
    if constexpr (one_vector(MR)) return rows_micro_for_vectors<T, MR, 1>(rows);
    else return nv == 1 ? rows_micro_for_vectors<T, MR, 1>(rows) : nv == 2 ? rows_micro_for_vectors<T, MR, 2>(rows)
                                                                  : rows_micro_for_vectors<T, MR, kVectorsPerTile>(rows);
}

template <class T>
RowsMicro<T> rows_micro_for(int filters, int rows, int nv) {
    return filters == 1 ? rows_micro_for_filters<T, 1>(rows, nv)
                        : filters == 2 ? rows_micro_for_filters<T, 2>(rows, nv) : rows_micro_for_filters<T, 3>(rows, nv);
}

// Output rows per call of rows_shared_micro: as many as keep MR x NR x NV
// accumulators, the MR x 3 weights of a 3-row kernel column and the NV row
// vectors within AVX-512's 32 registers, and on AVX2 several filters' sums,
// their NR x NV input rows and a weight within 16 (one filter: its sums
// within 12), at most 4 (8 measured no faster), but 12 for one filter of one
// vector: each sum takes R dependent FMAs per kernel column, so two FMA
// ports of latency 4 need 12 sums for a 3x3 kernel (4 rows: float64 dL/dx
// of a one-channel layer on 28-wide rows 9 % slower, of LeNet's first layer
// 15-25 %; llvm-mca: 75-80 % of the FMA peak with 8 rows, 99.9 % with 12).
// 3 filters of 2 vectors thus take 3 rows: with 4, GCC kept 19 values on
// the stack and moved registers about (80 % of the FMA peak in the
// Skylake-server model, 91.5 % with 3; znver4 93.5 -> 91.5 %), and Zen 5 ran
// both alike.
constexpr int shared_rows(int filters, int vectors) {
    const int most = FASTCONV_VECTOR_BYTES == 64 ? (32 - 3 * filters - vectors) / (filters * vectors)
                     : filters > 1                ? 15 / ((filters + 1) * vectors)
                                                  : 12 / (filters * vectors);
    const int enough = filters * vectors == 1 ? 12 : 4;
    return most < enough ? most : enough;
}

// The rows_shared_micro for MR filters, NV vectors and a kernel r rows tall
// (3, 4, 5 or 7), shared_rows(MR, NV) rows per call; null where there is none.
template <class T>
RowsShared<T> shared_micro_for(int filters, int nv, int64_t r) {
    auto for_filters = [&](auto mr) -> RowsShared<T> {
        constexpr int MR = decltype(mr)::value;
        if constexpr (one_vector(MR)) return rows_shared_for_height<T, MR, shared_rows(MR, 1), 1>(r);
        else return nv == 1   ? rows_shared_for_height<T, MR, shared_rows(MR, 1), 1>(r)
               : nv == 2 ? rows_shared_for_height<T, MR, shared_rows(MR, 2), 2>(r)
                         : rows_shared_for_height<T, MR, shared_rows(MR, kVectorsPerTile), kVectorsPerTile>(r);
    };
    return filters == 1 ? for_filters(std::integral_constant<int, 1>{})
                        : filters == 2 ? for_filters(std::integral_constant<int, 2>{}) : for_filters(std::integral_constant<int, 3>{});
}

template <class T, class WeightOf>
void row_direct_forward(const ConvShape& p, const T* x, WeightOf weight_of, const T* bias, T* y) {
    const int64_t cg = p.c_per_group(), kg = p.k_per_group(), ntaps = cg * p.r * p.s;
    const int nv = one_vector(static_cast<int>(kg)) ? 1 : row_vectors<T>(p.out_w);
    const int64_t W = nv * kLanes<T>;  // pixels per tile
    const int64_t tiles_per_row = (p.out_w + W - 1) / W;
    const int mr = static_cast<int>(kg);  // kg <= FASTCONV_MR here: one block of rows
    // Few filters at row stride and dilation 1: window rows shared among kernel rows.
    const RowsShared<T> shared = kg <= kRowsFilters && p.stride_h == 1 && p.dil_h == 1 ? shared_micro_for<T>(mr, nv, p.r) : nullptr;
    const int shared_nr = kg <= kRowsFilters ? (nv == 1 ? shared_rows(mr, 1) : nv == 2 ? shared_rows(mr, 2) : shared_rows(mr, kVectorsPerTile)) : 0;
    const int nr = kg <= kRowsFilters ? rows_per_call(mr, nv) : 1;  // rows per rows_micro call
    // Few filters: taller windows, as the rows copied twice cost more beside
    // their arithmetic (a 5x5 kernel's dL/dx over 28-row images: 5% faster),
    // and a whole number of calls each (of the shared-rows kernel if any).
    const int rows_unit = shared ? shared_nr : nr;
    const int64_t most_rows = kg > kRowsFilters ? InputWindow::kRows
                                                : std::max<int64_t>(rows_unit, InputWindow::kMaxRows / rows_unit * rows_unit);
    const InputWindow win(p, tiles_per_row * W, most_rows);
    const LiveTaps live(p);
    const int64_t row_blocks = (p.out_h + win.out_rows - 1) / win.out_rows;
    static_assert(kVectorsPerTile <= 3, "row_direct_forward picks among 1..3 vectors");
    const RowMicro<T> micro = micro_for_rows<T>(mr, nv);

    // a_packed[g][j][i] = weight of filter i of group g for tap j.
    std::vector<T> a_packed(static_cast<size_t>(p.groups * ntaps * kg));
    for (int64_t g = 0; g < p.groups; ++g)
        for (int64_t i = 0; i < kg; ++i)
            for (int64_t j = 0; j < ntaps; ++j) a_packed[static_cast<size_t>((g * ntaps + j) * kg + i)] = weight_of(g, i, j);
    const int64_t tasks = p.n * p.groups * row_blocks;

    PerThread<T> window_mem(win.size()),
        result_mem((mr <= kRowsFilters ? mr * std::max(nr, shared_nr) : mr) * W);
    parallel_region(worth_parallel(conv_flops(p)), [&] {
        T* const window = window_mem.get();
        T* const result = result_mem.get();
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tasks; ++t) {
            const int64_t rb = t % row_blocks, g = (t / row_blocks) % p.groups, n = t / (row_blocks * p.groups);
            const int64_t oh0 = rb * win.out_rows, oh1 = std::min(p.out_h, oh0 + win.out_rows);
            const T* base = win.prepare(p, x + n * p.xs.n + g * cg * p.xs.c, oh0, window);
            const T* a = a_packed.data() + g * ntaps * kg;
            if (kg <= kRowsFilters) {  // rows of output per call, every tap (those in the padding read the window's zeros)
                const int64_t row_step = p.stride_h * win.pitch;
                // The next task's window, which this thread most likely copies
                // next (a static schedule), is fetched a share per call: few
                // filters do little arithmetic per input value, and the copy
                // waited on memory (22 % of a one-channel layer's backward).
                // A call on `rows` rows of one tile fetches that part of its rows.
                const int64_t next = t + 1 < tasks ? t + 1 : t, next_rb = next % row_blocks;
                const int64_t next_g = (next / row_blocks) % p.groups, next_n = next / (row_blocks * p.groups);
                const T* const next_x = x + next_n * p.xs.n + next_g * cg * p.xs.c;
                const RowFetch source = win.source(p, next_x, next_rb * win.out_rows);
                const int64_t fetch_rows = next != t ? source.end : 0, span = (oh1 - oh0) * tiles_per_row;
                for (int64_t oh = oh0; oh < oh1;) {
                    const bool whole = shared && oh1 - oh >= shared_nr;  // a full call of the shared-row kernel
                    const int rows = whole ? shared_nr : static_cast<int>(std::min<int64_t>(nr, oh1 - oh));
                    const RowsMicro<T> rows_call = whole ? nullptr : rows_micro_for<T>(mr, rows, nv);
                    for (int64_t ow0 = 0; ow0 < p.out_w; ow0 += W) {
                        const int64_t np = std::min<int64_t>(W, p.out_w - ow0);
                        const T* first = base + (oh - oh0) * row_step + ow0;
                        const int64_t done = (oh - oh0) * tiles_per_row + (ow0 / W) * rows;  // row-tiles before this call
                        RowFetch share = source;
                        share.first = fetch_rows * done / span, share.end = fetch_rows * (done + rows) / span;
                        // The shared-row kernel fetches its share as it goes, a part
                        // per channel. Fetched in one go before the call, the misses
                        // filled the queue and the core waited on them: a float64
                        // one-channel backward took 13.9 ms, 10.4 ms now (Zen 5).
                        if (whole) shared(first, row_step, win.offset.data(), cg, p.s, a, nullptr, result, W, &share);
                        else share.fetch(share.first, share.end), rows_call(first, row_step, win.offset.data(), ntaps, p.s, p.dil_w, a, result);
                        for (int64_t i = 0; i < kg; ++i) {
                            const T b = bias ? bias[g * kg + i] : T(0);
                            for (int r = 0; r < rows; ++r) {
                                T* out = y + n * p.ys.n + (g * kg + i) * p.ys.c + (oh + r) * p.ys.h + ow0 * p.ys.w;
                                const T* res = result + (i * rows + r) * W;
                                if (p.ys.w == 1) {
                                    for (int64_t k = 0; k < np; ++k) out[k] = res[k] + b;
                                } else {
                                    for (int64_t k = 0; k < np; ++k) out[k * p.ys.w] = res[k] + b;
                                }
                            }
                        }
                    }
                    oh += rows;
                }
                continue;
            }
            for (int64_t oh = oh0; oh < oh1; ++oh) {
                const T* row = base + (oh - oh0) * p.stride_h * win.pitch;
                for (int64_t ow0 = 0; ow0 < p.out_w; ow0 += W) {
                    const int64_t np = std::min<int64_t>(W, p.out_w - ow0);
                    micro(row + ow0, 0, win.offset.data(), live.row(oh), live.size(oh), a, result, W, nullptr);
                    for (int64_t i = 0; i < kg; ++i) {
                        T* out = y + n * p.ys.n + (g * kg + i) * p.ys.c + oh * p.ys.h + ow0 * p.ys.w;
                        const T b = bias ? bias[g * kg + i] : T(0);
                        const T* r = result + i * W;
                        if (p.ys.w == 1) {
                            for (int64_t k = 0; k < np; ++k) out[k] = r[k] + b;
                        } else {
                            for (int64_t k = 0; k < np; ++k) out[k * p.ys.w] = r[k] + b;
                        }
                    }
                }
            }
        }
    });
}

// The direct forward that suits p: vectorised over pixels for few filters,
// else over filters.
template <class T, class WeightOf>
void any_direct_forward(const ConvShape& p, const T* x, WeightOf weight_of, const T* bias, T* y) {
    if (row_direct_suits<T>(p)) row_direct_forward(p, x, weight_of, bias, y);
    else direct_forward(p, x, weight_of, bias, y);
}

}  // namespace fastconv::FASTCONV_ISA
