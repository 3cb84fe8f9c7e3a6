// Convolutions in which every output channel reads a single input channel
// (C / groups == 1: depthwise layers, or a one-channel input): there is no
// channel sum to turn into a GEMM, so these kernels work plane by plane on a
// zero-padded copy of one input plane, vectorised along output columns.
// Included by simd_kernels_impl.h inside the instruction set's namespace.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "backward_bias_impl.h"
#include "implicit_gemm.h"
#include "input_window.h"
#include "nonfinite_weights.h"
#include "parallel.h"

namespace fastconv::FASTCONV_ISA {

// Output rows are computed in whole vector blocks: `row_width` columns, the
// output width rounded up (the extra columns are computed and dropped).
template <class T>
constexpr int kRowBlock = 2 * kLanes<T>;
template <class T>
int64_t row_width(const ConvShape& p) {
    return (p.out_w + kRowBlock<T> - 1) / kRowBlock<T> * kRowBlock<T>;
}

// The lanes of a vector of sums added up in order (T(0) + lane 0 + lane 1 ...).
template <class T, class V>
inline T lane_total(const V& v) {
    T total = 0;
    for (int l = 0; l < kLanes<T>; ++l) total += v[l];
    return total;
}

// The zero-padded input plane (every row and column a tap of the rounded-up
// output rows can read) with its columns split by phase (column mod
// stride_w), each phase's rows `pitch` values long: padded column j is
// value j / stride_w of phase j % stride_w's row. Output column ow's tap in
// kernel column ks then reads value ow + column[ks] (relative to its row of
// phase 0), consecutive for consecutive outputs whatever the stride, so
// strided layers vectorise as stride-1 ones do. At stride 1 it is the padded
// plane itself.
struct InputPlane {
    int64_t rows, phases, pitch;
    std::vector<int64_t> column;  // per kernel column: its phase's offset plus its shift within the phase
    template <class T>
    InputPlane(const ConvShape& p, const T*)
        : rows(std::max(p.h + p.pad_top, (p.out_h - 1) * p.stride_h + (p.r - 1) * p.dil_h + 1)),
          phases(p.stride_w),
          column(static_cast<size_t>(p.s)) {
        const int64_t cols = std::max(p.w + p.pad_left, (row_width<T>(p) - 1) * p.stride_w + (p.s - 1) * p.dil_w + 1);
        pitch = std::max((cols + phases - 1) / phases, row_width<T>(p) + (p.s - 1) * p.dil_w / phases);
        for (int64_t ks = 0; ks < p.s; ++ks) {
            const int64_t j = ks * p.dil_w;  // the padded column ks reads for output column 0
            column[static_cast<size_t>(ks)] = (j % phases) * rows * pitch + j / phases;
        }
    }
    int64_t size() const { return phases * rows * pitch; }
    // Whether kernel column ks reads column ks (no column stride or dilation).
    bool adjacent_columns() const {
        for (size_t ks = 0; ks < column.size(); ++ks)
            if (column[ks] != static_cast<int64_t>(ks)) return false;
        return true;
    }
    // The first input column of phase ph (the phase of its padded column),
    // and that column's place in a row of the plane; the phase's next input
    // columns are `phases` apart and land side by side after it.
    std::pair<int64_t, int64_t> phase_start(int64_t ph, int64_t pad_left) const {
        const int64_t iw0 = ((ph - pad_left) % phases + phases) % phases;
        return {iw0, ph * rows * pitch + (iw0 + pad_left) / phases};
    }
};

#ifdef FASTCONV_HAS_SHUFFLEVECTOR
// Lane j of every_other(a, b) is value 2j from a's first: lanes 0, 2, ... of a,
// then of b, which starts L - 1 values after a and so reaches no further than
// the last value wanted.
constexpr int every_other_lane(int lanes, int j) { return 2 * j < lanes ? 2 * j : 2 * j + 1; }
template <class V, int L, std::size_t... J>
inline V every_other(const V a, const V b, std::index_sequence<J...>) {
    return __builtin_shufflevector(a, b, every_other_lane(L, static_cast<int>(J))...);
}
#endif

// d[k] = s[2 * k] for k < count: a row's column phase at stride 2, L values
// per shuffle of two vectors (the last block overlapping the one before)
// rather than one value per load and store.
template <class T>
void copy_every_other(T* __restrict d, const T* __restrict s, int64_t count) {
    constexpr int L = kLanes<T>;
#ifdef FASTCONV_HAS_SHUFFLEVECTOR
    using V = typename Simd<T>::vec;
    if (count >= L) {
        for (int64_t k = 0;; k += L) {
            if (k + L > count) k = count - L;
            const V a = load<V>(s + 2 * k), b = load<V>(s + 2 * k + L - 1);
            store(d + k, every_other<V, L>(a, b, std::make_index_sequence<L>{}));
            if (k + L >= count) return;
        }
    }
#endif
    for (int64_t k = 0; k < count; ++k) d[k] = s[2 * k];
}

// Copies plane into the input plane out. The padding is written only when
// zero_padding is set: the copies never touch it (copy_run spills zeros
// there), so a thread's buffer needs it once per call.
template <class T>
void pad_plane(const ConvShape& p, const InputPlane& ip, const T* plane, T* out, bool zero_padding) {
    if (zero_padding) std::fill(out, out + ip.size(), T(0));
    for (int64_t ih = 0; ih < p.h; ++ih) {
        const T* src = plane + ih * p.xs.h;
        T* dst = out + (ih + p.pad_top) * ip.pitch;
        if (ip.phases == 1 && p.xs.w == 1) {
            copy_run(dst + p.pad_left, src, p.w);  // spills zeros into padding
        } else {  // phase by phase: input columns iw0, iw0 + phases, ... land side by side
            for (int64_t ph = 0; ph < ip.phases; ++ph) {
                const auto [iw0, at] = ip.phase_start(ph, p.pad_left);
                T* d = dst + at;
                if (ip.phases == 2 && p.xs.w == 1) {
                    copy_every_other(d, src + iw0, (p.w - iw0 + 1) / 2);
                    continue;
                }
                for (int64_t iw = iw0; iw < p.w; iw += ip.phases) *d++ = src[iw * p.xs.w];
            }
        }
    }
}

// The inverse of pad_plane: plane = the input positions of `in`.
template <class T>
void unpad_plane(const ConvShape& p, const InputPlane& ip, const T* in, T* plane) {
    for (int64_t ih = 0; ih < p.h; ++ih) {
        const T* src = in + (ih + p.pad_top) * ip.pitch;
        T* dst = plane + ih * p.xs.h;
        for (int64_t ph = 0; ph < ip.phases; ++ph) {
            const auto [iw0, at] = ip.phase_start(ph, p.pad_left);
            const T* s = src + at;
            for (int64_t iw = iw0; iw < p.w; iw += ip.phases) dst[iw * p.xs.w] = *s++;
        }
    }
}

// dst[i * step] = row[i] for the out_w outputs of a row.
// Vectors and a masked store, not std::copy: a row of a small plane (28
// values) is too short for memmove's call to pay (depthwise forward: 13 %
// of its time in memmove, Zen 4).
template <class T>
void store_row(T* __restrict dst, int64_t step, const T* __restrict row, int64_t out_w) {
    using V = typename Simd<T>::vec;
    constexpr int64_t L = kLanes<T>;
    if (step == 1) {
        int64_t i = 0;
        for (; i + L <= out_w; i += L) store(dst + i, load<V>(row + i));
        if (i < out_w) store_first(dst + i, load<V>(row + i), out_w - i);  // row has whole vectors
    } else
        for (int64_t i = 0; i < out_w; ++i) dst[i * step] = row[i];
}

// Output rows per shared-rows call (rows_shared_micro, implicit_gemm.h) in
// plane_forward: 16 accumulators with AVX-512, 8 with AVX2.
constexpr int kSharedPlaneRows = FASTCONV_VECTOR_BYTES == 64 ? 8 : 4;

// Output rows per call of plane_tile where no shared-rows kernel serves
// (strides, dilation, other kernel heights): with one weight broadcast per
// RB x NV FMAs, each reading its input from memory, RB x NV + 1 loads make
// 16 FMAs with AVX-512 (32 registers), 12 with AVX2 (16): at 4 rows, 10
// loads a tap kept two load ports 5 cycles on 8 FMAs (llvm-mca
// skylake-avx512: 79.6-79.8 % of the FMA peak).
constexpr int kPlaneRows = FASTCONV_VECTOR_BYTES == 64 ? 8 : 6;

// out[rb * ldo + v * L + lane] = b + the sum over taps of w[kr * S + ks] *
// xp[rb * row_step + kr * kr_step + column[ks] + v * L + lane]: RB output
// rows of kRowBlock columns. Kernel columns outermost, so that a column's
// place in the plane is read once for its R taps; its own function, so
// that the rows' offsets stay in registers.
template <class T, int RB>
__attribute__((noinline)) void plane_tile(const T* __restrict xp, int64_t row_step, int64_t kr_step,
                                          const int64_t* __restrict column, int64_t R, int64_t S,
                                          const T* __restrict w, T b, T* __restrict out, int64_t ldo) {
    using V = typename Simd<T>::vec;
    constexpr int L = kLanes<T>, NV = kRowBlock<T> / L;
    V acc[RB][NV];
#pragma GCC unroll 8
    for (int rb = 0; rb < RB; ++rb)
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) acc[rb][v] = V{} + b;
    for (int64_t ks = 0; ks < S; ++ks) {
        // A pointer per row, moved on a kernel row at a time: one add each per
        // tap, where offsets from one pointer took a register each per row and
        // vector, and GCC kept some in vector registers and on the stack.
        const T* row[RB];
#pragma GCC unroll 8
        for (int rb = 0; rb < RB; ++rb) row[rb] = xp + column[ks] + rb * row_step;
        const T* wk = w + ks;
        for (int64_t kr = 0; kr < R; ++kr, wk += S) {
            const V wv = splat<V>(*wk);
#pragma GCC unroll 8
            for (int rb = 0; rb < RB; ++rb) {
#pragma GCC unroll 2
                for (int v = 0; v < NV; ++v) acc[rb][v] += wv * load<V>(row[rb] + v * L);
                row[rb] += kr_step;
            }
        }
    }
#pragma GCC unroll 8
    for (int rb = 0; rb < RB; ++rb)
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) store(out + rb * ldo + v * L, acc[rb][v]);
}

template <class T>
using PlaneTile = void (*)(const T*, int64_t, int64_t, const int64_t*, int64_t, int64_t, const T*, T, T*, int64_t);

// The rows_shared_micro for one filter on a padded plane, blocks of
// kRowBlock columns, NR output rows and a kernel r rows tall (3, 5 or 7) at
// row stride and dilation 1; null for others.
template <class T, int NR>
RowsShared<T> plane_rows_shared_for(const ConvShape& p) {
    if ((p.r != 3 && p.r != 5 && p.r != 7) || p.stride_h != 1 || p.dil_h != 1) return nullptr;
    return rows_shared_for_height<T, 1, NR, kRowBlock<T> / kLanes<T>>(p.r);
}

template <class T>
void plane_forward(const ConvShape& p, const T* x, const T* weight, const T* bias, T* y) {
    const int64_t kg = p.k_per_group(), taps = p.r * p.s, tasks = p.n * p.groups;
    const InputPlane ip(p, x);
    const int64_t width = row_width<T>(p), pitch = ip.pitch;
    const int64_t* const column = ip.column.data();
    // kSharedPlaneRows output rows a call, then the half-height instance
    // once where as many rows are left.
    const RowsShared<T> shared = plane_rows_shared_for<T, kSharedPlaneRows>(p);
    const RowsShared<T> shared_half = plane_rows_shared_for<T, kSharedPlaneRows / 2>(p);
    PerThread<T> xp_mem(ip.size() + kCopySlack<T>), row_out_mem(std::max(kPlaneRows, kSharedPlaneRows) * width);
    parallel_region(worth_parallel(conv_flops(p)), [&] {
        T* const xp = xp_mem.get();
        T* const row_out = row_out_mem.get();
        bool padded = false;  // whether xp's padding holds its zeros
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tasks; ++t) {
            const int64_t n = t / p.groups, g = t % p.groups;
            pad_plane(p, ip, x + n * p.xs.n + g * p.xs.c, xp, !padded);
            padded = true;
            for (int64_t kk = 0; kk < kg; ++kk) {
                const int64_t k = g * kg + kk;
                const T* w = weight + k * taps;
                const T b = bias ? bias[k] : T(0);
                T* out = y + n * p.ys.n + k * p.ys.c;
                int64_t oh = 0;
                // Whole calls of a shared-rows kernel of `rows` output rows, from oh on.
                const auto shared_calls = [&](RowsShared<T> kernel, int rows) {
                    for (; kernel && oh + rows <= p.out_h; oh += rows) {
                        for (int64_t ow = 0; ow < width; ow += kRowBlock<T>)
                            kernel(xp + oh * pitch + ow, pitch, column, 1, p.s, w, &b, row_out + ow, width, nullptr);
                        for (int rb = 0; rb < rows; ++rb) store_row(out + (oh + rb) * p.ys.h, p.ys.w, row_out + rb * width, p.out_w);
                    }
                };
                shared_calls(shared, kSharedPlaneRows);
                shared_calls(shared_half, kSharedPlaneRows / 2);
                // The rest kPlaneRows rows at a time, then half as many, then one by one.
                const auto tile_calls = [&](auto rows) {
                    constexpr int RB = decltype(rows)::value;
                    for (; oh + RB <= p.out_h; oh += RB) {
                        for (int64_t ow = 0; ow < width; ow += kRowBlock<T>)
                            plane_tile<T, RB>(xp + oh * p.stride_h * pitch + ow, p.stride_h * pitch, p.dil_h * pitch,
                                              column, p.r, p.s, w, b, row_out + ow, width);
                        for (int rb = 0; rb < RB; ++rb) store_row(out + (oh + rb) * p.ys.h, p.ys.w, row_out + rb * width, p.out_w);
                    }
                };
                tile_calls(std::integral_constant<int, kPlaneRows>{});
                tile_calls(std::integral_constant<int, kPlaneRows / 2>{});
                tile_calls(std::integral_constant<int, 1>{});
            }
        }
    });
}

// Kernel rows and vectors of columns per plane_scatter call: RB x NV sums,
// the NV grad_y vectors and a weight within the vector registers (AVX-512
// 4 x 4 + 4 + 1 of 32, AVX2 3 x 3 + 3 + 1 of 16).
constexpr int kScatterRows = FASTCONV_VECTOR_BYTES == 64 ? 4 : 3;
constexpr int kScatterVectors = FASTCONV_VECTOR_BYTES == 64 ? 4 : 3;

// Where plane_scatter reads and writes: output row o's grad_y row of
// filter f at gy + o * gy_row + f * gy_filter, its weight for kernel row r
// at w + f * w_filter + r, and the dL/dx row of kernel row r at dst + o *
// dst_row + r * kr_step.
template <class T>
struct ScatterRows {
    T* dst;
    int64_t dst_row, kr_step;
    const T* gy;
    int64_t gy_row, gy_filter;
    const T* w;
    int64_t w_filter, filters, rows;
};

// For each of s.rows output rows, dL/dx rows r < RB, vectors v < NV:
// dst[r * kr_step + v * L + lane] += the sum over the filters of w[f *
// w_filter + r] * gy[f * gy_filter + v * L + lane], what RB kernel rows of
// one kernel column send back. The filter sum runs in registers: a grad_y
// vector is loaded for RB FMAs, a weight for NV, and dL/dx once per output
// row, where a plain scatter loaded and stored dL/dx once per FMA (llvm-mca:
// 25-33 % of the FMA peak). Under 8 sums would wait on the FMA latency:
// then pairs of filters go to two sets of sums, added before the store.
// The output rows run inside the call, so that a depthwise layer's one
// filter pays the call once per column of the plane.
template <class T, int RB, int NV>
__attribute__((noinline)) void plane_scatter(const ScatterRows<T>& s) {
    using V = typename Simd<T>::vec;
    constexpr int L = kLanes<T>, kSets = RB * NV < 8 ? 2 : 1;
    // Each FMA on registers where they suffice: GCC had read b[v] from
    // memory in every FMA instead, two loads per FMA where a load port is
    // busy with broadcasts (llvm-mca skylake-avx512, 3 rows x 2 vectors:
    // 66.6 % of the FMA peak).
    constexpr bool kPinned = kSets * (RB + 1) * NV + 1 < kVectorRegisters;
    const int64_t kr_step = s.kr_step, gy_filter = s.gy_filter, w_filter = s.w_filter, kg = s.filters;
    T* dst = s.dst;
    const T* gy_row = s.gy;
    for (int64_t o = 0; o < s.rows; ++o, dst += s.dst_row, gy_row += s.gy_row) {
        V acc[kSets][RB][NV];
#pragma GCC unroll 4
        for (int r = 0; r < RB; ++r)
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) acc[0][r][v] = load<V>(dst + r * kr_step + v * L);
        // NF filters (f, f + 1, ...) into sets of sums 0, 1, ...
        const auto filters = [&](auto nf, const T* __restrict g, const T* __restrict wf) {
            constexpr int NF = decltype(nf)::value;
            V b[NF][NV];
#pragma GCC unroll 2
            for (int i = 0; i < NF; ++i)
#pragma GCC unroll 4
                for (int v = 0; v < NV; ++v) {
                    V x = load<V>(g + i * gy_filter + v * L);
                    if constexpr (kPinned) asm("" : "+v"(x));  // held, not loaded again per kernel row
                    b[i][v] = x;
                }
#pragma GCC unroll 4
            for (int r = 0; r < RB; ++r)
#pragma GCC unroll 2
                for (int i = 0; i < NF; ++i) {
                    const V wv = splat<V>(wf[i * w_filter + r]);
#pragma GCC unroll 4
                    for (int v = 0; v < NV; ++v) {
                        if constexpr (kPinned) fma_into(acc[i][r][v], wv, b[i][v]);
                        else acc[i][r][v] += wv * b[i][v];
                    }
                }
        };
        const T* gy = gy_row;
        const T* w = s.w;
        int64_t f = 0;
        if (kSets == 2 && kg >= 2) {  // pairs of filters, then the last one alone
#pragma GCC unroll 4
            for (int r = 0; r < RB; ++r)
#pragma GCC unroll 4
                for (int v = 0; v < NV; ++v) acc[kSets - 1][r][v] = V{};
            for (; f + 2 <= kg; f += 2, gy += 2 * gy_filter, w += 2 * w_filter)
                filters(std::integral_constant<int, kSets>{}, gy, w);
#pragma GCC unroll 4
            for (int r = 0; r < RB; ++r)
#pragma GCC unroll 4
                for (int v = 0; v < NV; ++v) acc[0][r][v] += acc[kSets - 1][r][v];
        }
        for (; f < kg; ++f, gy += gy_filter, w += w_filter) filters(std::integral_constant<int, 1>{}, gy, w);
#pragma GCC unroll 4
        for (int r = 0; r < RB; ++r)
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) store(dst + r * kr_step + v * L, acc[0][r][v]);
    }
}

template <class T>
using PlaneScatter = void (*)(const ScatterRows<T>&);

template <class T, int... I>
PlaneScatter<T> plane_scatter_for(int rows, int vectors, std::integer_sequence<int, I...>) {
    constexpr int NV = kScatterVectors;
    static constexpr PlaneScatter<T> table[] = {&plane_scatter<T, I / NV + 1, I % NV + 1>...};
    return table[(rows - 1) * NV + vectors - 1];
}

// grad_y values per band of output rows that plane_backward_data copies
// (the whole band's rows of the group's filters): 32 KiB of float32.
constexpr int64_t kScatterBand = 8192;

// dL/dx of one input plane: every filter of its group sends w * grad_y back to
// the padded positions it read, into a private plane laid out as
// InputPlane, where consecutive outputs' taps reach consecutive values at
// any stride; then the padding is cut off. For each kernel column,
// plane_scatter sums all the group's filters for up to kScatterRows kernel
// rows at once, down a band of output rows.
template <class T>
void plane_backward_data(const ConvShape& p, const T* grad_y, const T* weight, T* grad_x) {
    constexpr int64_t L = kLanes<T>;
    const int64_t kg = p.k_per_group(), tasks = p.n * p.groups, vectors = (p.out_w + L - 1) / L;
    const InputPlane ip(p, grad_x);
    // packed[((g * S + ks) * kg + f) * R + kr]: a call's kernel rows side by side, filter after filter.
    std::vector<T> packed(static_cast<size_t>(p.k * p.r * p.s));
    for (int64_t k = 0; k < p.k; ++k)
        for (int64_t kr = 0; kr < p.r; ++kr)
            for (int64_t ks = 0; ks < p.s; ++ks)
                packed[static_cast<size_t>((((k / kg) * p.s + ks) * kg + k % kg) * p.r + kr)] = weight[(k * p.r + kr) * p.s + ks];
    struct Call {
        int64_t kr0, v0;
        PlaneScatter<T> kernel;
    };
    std::vector<Call> calls;  // for each kernel column: its parts of kernel rows x parts of vectors
    constexpr auto kTable = std::make_integer_sequence<int, kScatterRows * kScatterVectors>{};
    // Kernel rows and vectors each cut into the fewest parts a call takes, as even as they go.
    const PixelBlocks row_parts(p.r, kScatterRows), vector_parts(vectors, kScatterVectors);
    for (int64_t i = 0; i < row_parts.count; ++i)
        for (int64_t j = 0; j < vector_parts.count; ++j)
            calls.push_back({row_parts.start(i), vector_parts.start(j),
                             plane_scatter_for<T>(static_cast<int>(row_parts.pixels(i)),
                                                  static_cast<int>(vector_parts.pixels(j)), kTable)});
    // grad_y read in place where its rows are whole vectors, else copied a
    // band of rows at a time, with zeros past out_w.
    const bool in_place = p.ys.w == 1 && p.out_w == vectors * L;
    const int64_t pitch = vectors * L, band = std::clamp<int64_t>(kScatterBand / (kg * pitch), 1, p.out_h);
    PerThread<T> dxp_mem(ip.size()), band_mem(in_place ? 1 : kg * band * pitch);
    parallel_region(worth_parallel(conv_flops(p)), [&] {
        T* const dxp = dxp_mem.get();
        T* const rows = band_mem.get();
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tasks; ++t) {
            const int64_t n = t / p.groups, g = t % p.groups;
            std::fill(dxp, dxp + ip.size(), T(0));
            const T* gy = grad_y + n * p.ys.n + g * kg * p.ys.c;
            const T* wg = packed.data() + g * p.s * kg * p.r;
            for (int64_t oh0 = 0; oh0 < p.out_h; oh0 += band) {
                const int64_t count = std::min(band, p.out_h - oh0);
                ScatterRows<T> s{nullptr, p.stride_h * ip.pitch, p.dil_h * ip.pitch, gy + oh0 * p.ys.h, p.ys.h, p.ys.c,
                                 nullptr, p.r, kg, count};
                if (!in_place) {  // rows[(o * kg + f) * pitch + ow]
                    for (int64_t o = 0; o < count; ++o)
                        for (int64_t f = 0; f < kg; ++f) {
                            T* row = rows + (o * kg + f) * pitch;
                            const T* from = s.gy + o * p.ys.h + f * p.ys.c;
                            if (p.ys.w == 1) copy_run(row, from, p.out_w);  // zeros to the end of its last vector
                            else
                                for (int64_t ow = 0; ow < pitch; ++ow) row[ow] = ow < p.out_w ? from[ow * p.ys.w] : T(0);
                        }
                    s.gy = rows, s.gy_row = kg * pitch, s.gy_filter = pitch;
                }
                for (int64_t ks = 0; ks < p.s; ++ks) {
                    T* const d = dxp + oh0 * p.stride_h * ip.pitch + ip.column[static_cast<size_t>(ks)];
                    for (const Call& c : calls) {
                        ScatterRows<T> call = s;
                        call.dst = d + c.kr0 * p.dil_h * ip.pitch + c.v0 * L, call.gy += c.v0 * L;
                        call.w = wg + ks * kg * p.r + c.kr0;
                        c.kernel(call);
                    }
                }
            }
            unpad_plane(p, ip, dxp, grad_x + n * p.xs.n + g * p.xs.c);
        }
    });
}

// dL/dweight of the filters of one group: dot products of grad_y planes with
// shifted windows of the padded input plane, images in order (a fixed order,
// whatever the thread count).
// out[t] += sum over the plane of grad_y times the input window of tap t0 + t,
// for NT taps at once (stride 1): NT x NV independent accumulators, so the
// loop runs at FMA throughput rather than latency.
// At most 12 taps at once: each grad_y vector is loaded once for NT x NV
// FMAs that each load an input vector, so the loads bound the loop at NT /
// (NT + 1) of the FMA peak where a core loads two vectors a cycle. AVX2's 16
// registers take 12 x 2 sums only by spilling them (5x5 and 7x7 plane dL/dF
// were 10-15 % faster with 6 taps, AMD Zen 3), so there the taps go over one
// vector of columns at a time: 6 x 2 modelled at 85.6 % (llvm-mca, Skylake
// server and Zen 3/4), 12 x 1 at 92.2 %; on Zen 4, AVX2 float32 dL/dF of
// dilated and 7x7 depthwise layers took 0.96 of the time.
constexpr int kTapGroup = 12;

template <class T, int NT>
void plane_dots(const ConvShape& p, const InputPlane& ip, const T* gyp, int64_t width, const T* xp, int64_t t0,
                int64_t oh0, T* out) {
    using V = typename Simd<T>::vec;
    constexpr int L = kLanes<T>, NV = FASTCONV_VECTOR_BYTES == 64 ? kRowBlock<T> / L : 1;
    int64_t off[NT];
    for (int t = 0; t < NT; ++t)
        off[t] = ((t0 + t) / p.s) * p.dil_h * ip.pitch + ip.column[static_cast<size_t>((t0 + t) % p.s)];
    V acc[NT][NV];
    for (int t = 0; t < NT; ++t)
        for (int v = 0; v < NV; ++v) acc[t][v] = V{};
    for (int64_t oh = oh0; oh < p.out_h; ++oh) {
        // Columns counted up from -width to 0 from the rows' ends: the loop
        // ends on the add's sign, with no bound to compare, which (the NT
        // pointers taking the free registers) GCC kept on the stack, one load
        // more per step (llvm-mca skylake-avx512, AVX-512: 88.8 -> 92.3 %).
        const T* d_end = gyp + oh * width + width;
        const T* x_end = xp + oh * p.stride_h * ip.pitch + width;
        for (int64_t ow = -width; ow < 0; ow += NV * L) {
            V dv[NV];
            for (int v = 0; v < NV; ++v) dv[v] = load<V>(d_end + ow + v * L);
            for (int t = 0; t < NT; ++t)
                for (int v = 0; v < NV; ++v) acc[t][v] += dv[v] * load<V>(x_end + off[t] + ow + v * L);
        }
    }
    for (int t = 0; t < NT; ++t) {
        for (int v = 1; v < NV; ++v) acc[t][0] += acc[t][v];
        out[t] += lane_total<T>(acc[t][0]);
    }
}

template <class T>
using PlaneDots = void (*)(const ConvShape&, const InputPlane&, const T*, int64_t, const T*, int64_t, int64_t, T*);

template <class T, int... N>
PlaneDots<T> pick_plane_dots(int taps, std::integer_sequence<int, N...>) {
    PlaneDots<T> table[] = {&plane_dots<T, N + 1>...};
    return table[taps - 1];
}

template <class T>
PlaneDots<T> plane_dots_for(int taps) {
    return pick_plane_dots<T>(taps, std::make_integer_sequence<int, kTapGroup>{});
}

// plane_dots for NK filters that read the same input plane (a one-channel
// layer's): part[k * taps + t] += the dot of filter k's grad_y plane (at gyp
// + k * plane, rows `width` apart) with the input window of tap t0 + t, for
// NT taps, over the row's first `cols` columns: its whole vectors, or
// (Tail) the partial vector after them, whose grad_y lanes past cols are
// loaded as zeros (load_first), so that grad_y can be read in place. Each input
// vector loaded serves NK FMAs and each grad_y vector NT, where plane_dots
// loads an input vector for every FMA: its loads, most of them across a
// cache line's end, held it near half the FMA peak (LeNet's first layer,
// 6 filters of 5x5, AVX2 float64: 50 %).
template <int NK, int NT>
struct FilterDots {
    static constexpr int filters = NK, taps = NT;
};
#if FASTCONV_VECTOR_BYTES == 64
using FilterDotsMost = FilterDots<4, 6>;  // 24 sums, 4 grad_y vectors and the input vector: 29 of 32 registers
#else
using FilterDotsMost = FilterDots<2, 5>;  // 10 sums, 2 + 1 vectors: 13 of 16
#endif

template <class T, int NK, int NT, bool Tail>
void plane_dots_filters(const ConvShape& p, const InputPlane& ip, const T* __restrict gyp, int64_t plane,
                        int64_t width, int64_t cols, const T* __restrict xp, int64_t t0, int64_t taps,
                        T* __restrict part) {
    using V = typename Simd<T>::vec;
    constexpr int L = kLanes<T>;
    const int64_t whole = cols / L * L, from = Tail ? whole : 0, to = Tail ? whole + L : whole;
    int64_t off[NT];
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t)
        off[t] = ((t0 + t) / p.s) * p.dil_h * ip.pitch + ip.column[static_cast<size_t>((t0 + t) % p.s)];
    V acc[NK][NT];
#pragma GCC unroll 8
    for (int k = 0; k < NK; ++k)
#pragma GCC unroll 8
        for (int t = 0; t < NT; ++t) acc[k][t] = V{};
    for (int64_t oh = 0; oh < p.out_h; ++oh) {
        const T* const d = gyp + oh * width;
        const T* const x = xp + oh * p.stride_h * ip.pitch;
        for (int64_t ow = from; ow < to; ow += L) {
            V g[NK];
#pragma GCC unroll 8
            for (int k = 0; k < NK; ++k) g[k] = Tail ? load_first<V>(d + k * plane + ow, cols - whole) : load<V>(d + k * plane + ow);
#pragma GCC unroll 8
            for (int t = 0; t < NT; ++t) {
                const V xv = load<V>(x + off[t] + ow);
#pragma GCC unroll 8
                for (int k = 0; k < NK; ++k) fma_in_place(acc[k][t], g[k], xv);
            }
        }
    }
#pragma GCC unroll 8
    for (int k = 0; k < NK; ++k)
#pragma GCC unroll 8
        for (int t = 0; t < NT; ++t) part[k * taps + t0 + t] += lane_total<T>(acc[k][t]);
}

template <class T>
using PlaneDotsFilters = void (*)(const ConvShape&, const InputPlane&, const T*, int64_t, int64_t, int64_t, const T*,
                                  int64_t, int64_t, T*);

template <class T, bool Tail, int NK, int... NT>
PlaneDotsFilters<T> pick_dots_filters_taps(int taps, std::integer_sequence<int, NT...>) {
    PlaneDotsFilters<T> table[] = {&plane_dots_filters<T, NK, NT + 1, Tail>...};
    return table[taps - 1];
}

template <class T, bool Tail, int... NK>
PlaneDotsFilters<T> pick_dots_filters(int filters, int taps, std::integer_sequence<int, NK...>) {
    PlaneDotsFilters<T> table[] = {
        pick_dots_filters_taps<T, Tail, NK + 1>(taps, std::make_integer_sequence<int, FilterDotsMost::taps>{})...};
    return table[filters - 1];
}

// plane_dots_filters for `filters` x `taps` (at most FilterDotsMost's), over
// the whole vectors of a row or (tail) its last partial one.
template <class T>
PlaneDotsFilters<T> plane_dots_filters_for(int filters, int taps, bool tail) {
    constexpr auto kFilters = std::make_integer_sequence<int, FilterDotsMost::filters>{};
    return tail ? pick_dots_filters<T, true>(filters, taps, kFilters) : pick_dots_filters<T, false>(filters, taps, kFilters);
}

// plane_dots for every tap of an R x S kernel at row stride and dilation
// 1, over grad_y rows [0, rows), rows a multiple of RG: RG grad_y rows at a
// time, so each input row vector loaded serves every (kernel row, grad_y
// row) pair that reads it. R x S accumulators of one vector each, over the
// first `cols` columns of each row as plane_dots_filters (whole vectors, or
// the partial one after them; not whole blocks of two vectors: 24 float64
// columns, not 32). The partial vector goes in a call of its own: as a branch
// in the loop it took registers that AVX2 has not to spare (LeNet's first
// layer's dL/dF 2.3x slower). Adjacent: kernel column ks reads column ks
// of the plane (no column stride or dilation), a constant offset from its
// row's address; otherwise each of the (RG + R - 1) x S row and column pairs
// took a general register of its own, more than there are (AVX2 3x3: 14
// values on the stack per step).
template <class T, int R, int S, int RG, bool Adjacent, bool Tail>
void plane_dots_shared(const InputPlane& ip, const T* __restrict gyp, int64_t width, int64_t cols,
                       const T* __restrict xp, int64_t rows, T* __restrict out) {
    using V = typename Simd<T>::vec;
    constexpr int L = kLanes<T>;
    const int64_t whole = cols / L * L, from = Tail ? whole : 0, to = Tail ? whole + L : whole;
    const int64_t pitch = ip.pitch;
    int64_t column[S];
    for (int ks = 0; ks < S; ++ks) column[ks] = Adjacent ? ks : ip.column[static_cast<size_t>(ks)];
    V acc[R][S];
#pragma GCC unroll 8
    for (int kr = 0; kr < R; ++kr)
#pragma GCC unroll 8
        for (int ks = 0; ks < S; ++ks) acc[kr][ks] = V{};
    for (int64_t oh = 0; oh < rows; oh += RG)
        for (int64_t ow = from; ow < to; ow += L) {
            V gv[RG];
#pragma GCC unroll 4
            for (int r = 0; r < RG; ++r)
                gv[r] = Tail ? load_first<V>(gyp + (oh + r) * width + ow, cols - whole) : load<V>(gyp + (oh + r) * width + ow);
#pragma GCC unroll 16
            for (int ir = 0; ir < RG + R - 1; ++ir) {
                const T* x_row = xp + (oh + ir) * pitch + ow;
#pragma GCC unroll 8
                for (int ks = 0; ks < S; ++ks) {
                    // In a register, loaded once for the R sums that use it, and
                    // each FMA into its sum's own register (fma_in_place). GCC
                    // otherwise folded the load into each FMA (3x3 and 5x5
                    // depthwise dL/dF 6-18 % slower on Zen 5) and rotated the sums
                    // through registers with moves: llvm-mca put the 3x3 loop at
                    // 73-84 % of the FMA peak on Skylake-server and 78 % on Zen 3,
                    // now 91-100 %; Zen 5 runs it as fast as before.
                    const V xv = load<V>(x_row + column[ks]);
#pragma GCC unroll 8
                    for (int kr = 0; kr < R; ++kr) {
                        const int r = ir - kr;  // the grad_y row that kernel row kr pairs with input row ir
                        if (r >= 0 && r < RG) fma_in_place(acc[kr][ks], gv[r], xv);
                    }
                }
            }
        }
#pragma GCC unroll 8
    for (int kr = 0; kr < R; ++kr)
#pragma GCC unroll 8
        for (int ks = 0; ks < S; ++ks) out[kr * S + ks] += lane_total<T>(acc[kr][ks]);
}

template <class T>
using PlaneDotsShared = void (*)(const InputPlane&, const T*, int64_t, int64_t, const T*, int64_t, T*);

// The plane_dots_shared for an r x s kernel and its grad_y rows per step;
// null where there is none. 3x3 and 5x5, whose 9 or 25 accumulators fit the
// registers beside the rows (25 only AVX-512's 32).
template <class T>
struct SharedDots {
    PlaneDotsShared<T> kernel = nullptr, tail = nullptr;  // a row's whole vectors; its last partial one
    int rows = 1;
};
template <class T, int R, int S, int RG, bool Adjacent>
SharedDots<T> shared_dots() {
    return {&plane_dots_shared<T, R, S, RG, Adjacent, false>, &plane_dots_shared<T, R, S, RG, Adjacent, true>, RG};
}
template <class T>
SharedDots<T> plane_dots_shared_for(int64_t r, int64_t s, bool adjacent) {
    if (r == 3 && s == 3) return adjacent ? shared_dots<T, 3, 3, 4, true>() : shared_dots<T, 3, 3, 4, false>();
    if (r == 5 && s == 5 && FASTCONV_VECTOR_BYTES == 64)
        return adjacent ? shared_dots<T, 5, 5, 2, true>() : shared_dots<T, 5, 5, 2, false>();
    return {};
}

// dL/dweight plane by plane; and dL/db where grad_bias is not null: with
// dense grad_y planes, each summed into its filter's partial sums (the
// order of conv_backward_bias, so the same bits) right after the dots read
// it, from L1. In a pass of its own, dL/db read grad_y from memory again
// where it outgrows the caches: Zen 3, one_channel's 51 MB of float64
// grad_y, 7.7 us per image of the backward's 41.
template <class T>
void plane_backward_weights(const ConvShape& p, const T* grad_y, const T* x, T* grad_weight, T* grad_bias) {
    const int64_t kg = p.k_per_group(), taps = p.r * p.s;
    const InputPlane ip(p, x);
    const int64_t width = row_width<T>(p), plane = p.out_h * width;
    // Taps per plane_dots call: at most kTapGroup, in groups of even size (25
    // taps as 9 + 8 + 8, not 12 + 12 + 1, whose last call would be latency-bound).
    const auto even_group = [&](int64_t most) { return (taps + (taps + most - 1) / most - 1) / ((taps + most - 1) / most); };
    const int64_t group = even_group(kTapGroup);
    const SharedDots<T> shared = p.stride_h == 1 && p.dil_h == 1 ? plane_dots_shared_for<T>(p.r, p.s, ip.adjacent_columns()) : SharedDots<T>{};
    // Filters that share one input plane (a one-channel layer) go several at
    // a time (plane_dots_filters), except where a kernel shares each input
    // row among the kernel's rows: that one stayed faster there (Zen 4,
    // one_channel's AVX2 float64 dL/dF 4.4-4.8 ms against 5.9; AVX-512
    // float64 5x5 0.27 against 0.29).
    const bool by_filters = p.groups == 1 && kg >= 2 && !shared.kernel;
    const int64_t most_filters = by_filters ? FilterDotsMost::filters : 1;
    // Output rows the shared-rows kernel takes; plane_dots takes the rest.
    const int64_t shared_rows = shared.kernel ? p.out_h / shared.rows * shared.rows : 0;
    // grad_y is read where it lies, rows p.ys.h apart, by the kernels that
    // stop at out_w (a masked last vector): plane_dots_filters and the
    // shared-rows kernels. Copying it, a row at a time, into rows
    // zero-extended to `width` took as long as the dots (Zen 4, one_channel's
    // AVX2 float64 dL/dF 4.7 -> 2.9 ms). plane_dots reads whole blocks of
    // `width` columns: its rows are copied so, and all rows where grad_y's
    // columns are not side by side (channels last).
    const bool in_place = p.ys.w == 1, tail_columns = p.out_w % kLanes<T> != 0;
    const int64_t copied_from = !in_place ? 0 : by_filters ? p.out_h : shared_rows;
    const int64_t gy_row = in_place ? p.ys.h : width, gy_plane = in_place ? p.ys.c : plane;
    const int64_t filter_group = even_group(FilterDotsMost::taps);
    // A task is a block of one group's filters: the whole group where there
    // are groups enough for the threads, else fewer filters (a one-channel
    // layer has one group). Each filter sums over the images in order
    // whatever its block, so the split never changes a bit.
    const bool parallel = worth_parallel(conv_flops(p));
    const int64_t want = parallel ? (max_threads() + p.groups - 1) / p.groups : 1;
    const int64_t wanted = std::min(kg, want), per_block = (kg + wanted - 1) / wanted;
    const int64_t blocks = (kg + per_block - 1) / per_block;  // none empty
    const bool copies = copied_from < p.out_h;  // whether any grad_y rows are copied
    PerThread<T> xp_mem(ip.size() + kCopySlack<T>), gyp_mem(copies ? most_filters * plane + kCopySlack<T> : 0),
        part_mem(most_filters * taps);
    const bool bias_here = grad_bias && dense_planes(p);
    std::vector<double> bias_parts(bias_here ? static_cast<size_t>(kBiasParts * p.k) : 0, 0.0);  // filter k's at kBiasParts * k
    parallel_region(parallel, [&] {
        T* const xp = xp_mem.get();
        T* const gyp = gyp_mem.get();
        T* const part = part_mem.get();  // one image's share of the gradient of each filter at hand
        bool padded = false;  // whether xp's padding holds its zeros
        // Images outermost, a thread's run of tasks inside: its planes of an
        // image are then side by side in x and grad_y (NCHW), which the
        // hardware prefetchers stream. Each task's image after image
        // instead jumped a whole image between planes, and the core waited
        // on every plane's first lines (depthwise 8 x 128 x 28 x 28 dL/dF:
        // half its time in the two copies below).
        const auto [first, end] = thread_share(p.groups * blocks);
        for (int64_t task = first; task < end; ++task) {
            const int64_t g = task / blocks, k0 = task % blocks * per_block, k1 = std::min(kg, k0 + per_block);
            std::fill(grad_weight + (g * kg + k0) * taps, grad_weight + (g * kg + k1) * taps, T(0));
        }
        for (int64_t n = 0; n < p.n; ++n)
            for (int64_t task = first; task < end; ++task) {
                const int64_t g = task / blocks, k0 = task % blocks * per_block, k1 = std::min(kg, k0 + per_block);
                pad_plane(p, ip, x + n * p.xs.n + g * p.xs.c, xp, !padded);
                padded = true;
                for (int64_t kk = k0; kk < k1; kk += most_filters) {
                    const int64_t nk = std::min(most_filters, k1 - kk);
                    const T* const gyb = in_place ? grad_y + n * p.ys.n + (g * kg + kk) * p.ys.c : gyp;
                    for (int64_t f = 0; f < nk; ++f) {
                        const T* gy = grad_y + n * p.ys.n + (g * kg + kk + f) * p.ys.c;
                        for (int64_t oh = copied_from; oh < p.out_h; ++oh) {
                            T* dst = gyp + f * plane + oh * width;
                            if (p.ys.w == 1) {
                                copy_run(dst, gy + oh * p.ys.h, p.out_w);  // any spill is zeroed just below
                            } else {
                                for (int64_t i = 0; i < p.out_w; ++i) dst[i] = gy[oh * p.ys.h + i * p.ys.w];
                            }
                            std::fill(dst + p.out_w, dst + width, T(0));
                        }
                    }
                    std::fill(part, part + nk * taps, T(0));
                    if (by_filters) {
                        for (int64_t t0 = 0; t0 < taps; t0 += filter_group)
                            for (const bool tail : {false, true})
                                if (!tail || tail_columns)
                                    plane_dots_filters_for<T>(static_cast<int>(nk), static_cast<int>(std::min(filter_group, taps - t0)), tail)(
                                        p, ip, gyb, gy_plane, gy_row, p.out_w, xp, t0, taps, part);
                    } else {
                        if (shared.kernel) shared.kernel(ip, gyb, gy_row, p.out_w, xp, shared_rows, part);
                        if (shared.kernel && tail_columns) shared.tail(ip, gyb, gy_row, p.out_w, xp, shared_rows, part);
                        for (int64_t t0 = 0; t0 < taps && shared_rows < p.out_h; t0 += group)
                            plane_dots_for<T>(static_cast<int>(std::min<int64_t>(group, taps - t0)))(
                                p, ip, gyp, width, xp, t0, shared_rows, part + t0);
                    }
                    if (bias_here)
                        for (int64_t k = g * kg + kk; k < g * kg + kk + nk; ++k)
                            add_to_bias_parts(grad_y + n * p.ys.n + k * p.ys.c, p.out_h * p.out_w, bias_parts.data() + kBiasParts * k);
                    for (int64_t f = 0; f < nk; ++f) {
                        T* const out = grad_weight + (g * kg + kk + f) * taps;
                        const T* const sums = part + f * taps;
                        // The dots computed whole blocks of columns, multiplying
                        // grad_y's zero extension by input values: a NaN or Inf
                        // there leaks into the sums, so a result that is not
                        // finite is computed again by the exact loop below.
                        if (all_finite(sums, taps)) {
                            for (int64_t t = 0; t < taps; ++t) out[t] += sums[t];
                            continue;
                        }
                        for (int64_t kr = 0; kr < p.r; ++kr)
                            for (int64_t ks = 0; ks < p.s; ++ks) {
                                T total = 0;
                                for (int64_t oh = 0; oh < p.out_h; ++oh) {
                                    const T* d = gyb + f * gy_plane + oh * gy_row;
                                    const T* src = xp + (oh * p.stride_h + kr * p.dil_h) * ip.pitch + ip.column[static_cast<size_t>(ks)];
                                    for (int64_t ow = 0; ow < p.out_w; ++ow) total += d[ow] * src[ow];
                                }
                                out[kr * p.s + ks] += total;
                            }
                    }
                }
            }
        if (bias_here)
            for (int64_t task = first; task < end; ++task) {
                const int64_t g = task / blocks, k0 = task % blocks * per_block, k1 = std::min(kg, k0 + per_block);
                for (int64_t k = g * kg + k0; k < g * kg + k1; ++k) grad_bias[k] = bias_total<T>(bias_parts.data() + kBiasParts * k);
            }
    });
    if (grad_bias && !bias_here) conv_backward_bias(p, grad_y, grad_bias);
}

}  // namespace fastconv::FASTCONV_ISA
