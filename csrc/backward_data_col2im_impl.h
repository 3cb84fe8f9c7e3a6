// dL/dx of an input of few channels (one group; col2im_backward_data_suits),
// image by image, as a GEMM and a col2im:
//   cols[c][t][q] = sum over filters k of weight[k][c][t] * grad_y[k][q]
// for each channel c, kernel tap t = (kr, ks) and output pixel q, with each
// filter's grad_y plane read in place as one row of the GEMM's B (row_micro,
// the implicit GEMM's micro-kernel); then every (channel, tap) column is
// added, shifted (at a stride, every stride-th value), into that channel's
// dL/dx plane, or gathered into its rows (gather_rows). The by-phase path
// ran this as a forward of K channels into C filters, whose window copied
// every grad_y value for only 9 C FMAs (3x3) and, with one channel, took
// half the time copying (Zen 4: 15 us of a float32 image's 25 us in cache);
// a strided one-channel layer went to the plane scatter, which loads and
// stores dL/dx for every FMA.
// Included by simd_kernels_impl.h inside the instruction set's namespace.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "cpu_facts.h"
#include "implicit_gemm.h"
#include "parallel.h"

namespace fastconv::FASTCONV_ISA {

// Vectors of pixels per micro-kernel call over an image's `pixels`: the
// most whose calls leave the lanes past the image's end within 10 % of the
// fewest (10 x 10 pixels in float32 with AVX-512: 7 calls of one vector, 89 %
// of the lanes used, not 3 of three vectors, 69 %).
template <class T>
int col2im_vectors(int64_t pixels) {
    double use[kVectorsPerTile + 1] = {}, most = 0;
    for (int nv = 1; nv <= kVectorsPerTile; ++nv) {
        const int64_t w = nv * kLanes<T>;
        use[nv] = static_cast<double>(pixels) / static_cast<double>((pixels + w - 1) / w * w);
        most = std::max(most, use[nv]);
    }
    int nv = kVectorsPerTile;
    while (use[nv] < 0.9 * most) --nv;
    return nv;
}

// Calls of the micro-kernel between a fetch of grad_y into L2 and its use.
constexpr int64_t kFetchCalls = 4;

// A chunk's columns take at most this much (or one call's W pixels of every
// row, if more): they stay in L2 until the col2im reads them back.
constexpr int64_t kColumnBytes = 256 * 1024;

// Pixels per chunk of columns: whole calls of W pixels.
template <class T>
int64_t column_stride(const ConvShape& p, int64_t W) {
    return std::max<int64_t>(W, kColumnBytes / (p.c * p.r * p.s * static_cast<int64_t>(sizeof(T))) / W * W);
}

// Where dL/dx rows are at most kGatherVectors vectors wide, at stride 1,
// for an image whose columns are all in one chunk, each dL/dx row vector
// gathers its values from the columns in registers (gather_rows) and is
// stored once. Added in place column row by column row, LeNet's second
// layer's 150 columns of 10-value rows cost more than the GEMM: short runs
// of scalar adds, or masked loads of each dL/dx row right after a masked
// store to the previous one, whose span they overlapped (the loads waited
// on the stores).
constexpr int64_t kGatherVectors = 8;

template <class T>
bool gathers_rows(const ConvShape& p) {
    const int64_t pixels = p.out_h * p.out_w;
    return p.stride_h == 1 && p.stride_w == 1 && (p.w + kLanes<T> - 1) / kLanes<T> <= kGatherVectors &&
           column_stride<T>(p, col2im_vectors<T>(pixels) * kLanes<T>) >= pixels;
}

// Dense grad_y planes (read in place) and dL/dx rows; images enough for the
// threads to share whole ones (the choice depends on the shape alone, so
// results never depend on the thread count); and filters enough that each
// column value's sum outweighs its trip through the column buffer: 16 or
// more, and half the GEMM's rows (channels x taps) or more. Zen 4, 8 images
// of 28 x 28, in cache, dL/dx against the by-phase path, one channel: 3x3
// with 32 filters 2.1-2.5x as fast, 5x5 with 16 filters 1.15x, 7x7 with 64
// filters 1.4x, 24 filters 1.07-1.1x but 16 filters 5-15 % slower; 1x1
// (which went to the plane scatter) 4.5-5x. Two channels, 3x3: 16 filters
// 1.1x, 32 filters 1.45x; three: 16 filters within 5 %, 32 filters 1.1-1.3x.
// Six (LeNet's second layer, 5x5 over 14 x 14) ran 1.2-1.3x slower: a chunk
// of 150 columns of 10-pixel rows, whose col2im adds cost more than the
// GEMM saves. At a stride the other paths do worse, and a quarter of the
// GEMM's rows suffice: one channel, 3x3 at stride 2, 4-7x as fast, 7x7 with
// 16 filters 3.2-3.6x; three channels, 3x3 s2 with 32 filters 1.5-1.8x, the
// 7x7 s2 stem (64 filters) 1.3-1.45x in float64, 1.0-1.45x float32 (AVX2
// the most), but 7x7 s2 with 16 filters 1.3-2.8x slower.
//
// Besides, at stride 1, up to 12 channels where the by-phase forward would
// spend an eighth or more of its dL/dx rows' taps on the zeros it pads
// grad_y with ("valid" layers: their dL/dx is a "full" convolution) and
// the columns of an image gather into dL/dx rows in registers
// (gathers_rows). Zen 4, dL/dx against the by-phase path, float32 /
// float64 with AVX-512, then with AVX2: LeNet's second layer (6 channels,
// 5x5 over 14 x 14, 16 filters) 1.5 / 1.13x, 1.19 / 1.39x; 4 channels 5x5
// over 12 x 12, 2.5 / 1.6x, 2.0 / 1.5x; 12 channels 5x5 over 14 x 14 with
// 32 filters 1.6 / 1.1x, 1.6 / 1.2x; 6 channels 3x3 over 14 x 14, 1.5 /
// 1.2x, 1.2 / 1.2x. Not with 16 channels (3x3 over 16 x 16: 0.97-1.07x), 32
// (5x5 over 14 x 14: 0.9-1.15x), nor with "same" padding (8 channels 3x3
// over 16 x 16: 0.77-1.15x). 16 filters or more here too: a GEMM over
// LeNet's first layer's 6 gained only 3-20 %.
template <class T>
bool col2im_backward_data_suits(const ConvShape& p) {
    const bool strided = p.stride_h > 1 || p.stride_w > 1;
    const bool dense = p.ys.w == 1 && p.ys.h == p.out_w && p.ys.c == p.out_h * p.out_w && p.xs.w == 1;
    if (p.groups != 1 || p.k < 16 || p.n < 4 || !dense) return false;
    if (p.c <= 3 && (strided ? 4 : 2) * p.k >= p.c * p.r * p.s) return true;
    return p.c <= 12 && 8 * p.out_w <= 7 * p.w && gathers_rows<T>(p);
}

// The first `count` values of `rows` rows `step` apart, into L2.
template <class T>
inline void fetch_rows_to_l2(const T* first, int64_t rows, int64_t step, int64_t count) {
    for (int64_t k = 0; k < rows; ++k)
        RowFetch::lines<true>(reinterpret_cast<const char*>(first + k * step), count * static_cast<int64_t>(sizeof(T)));
}

// d[i * sw] += col[i] for i < len. AVX-512, float32 at sw = 2: 16 values of
// col at a time expanded into the even lanes of two vectors and added under
// a mask, the odd values of d neither read nor written (at a row's end they
// may lie past the array); the same additions as the scalar loop, so the
// same bits. Zen 4, dL/dx at stride 2: the stem 0.94 of the time, 3 channels
// of 224 x 224 with 3x3 kernels 0.85 (float64, four values an expand, ran no
// faster). The rest four a trip: a loop of one ran 13 % slower on the stem
// where its few instructions happened to straddle a 64-byte line (Zen 4).
template <class T>
inline void add_strided(T* __restrict d, const T* __restrict col, int64_t len, int64_t sw) {
    int64_t i = 0;
#if FASTCONV_VECTOR_BYTES == 64
    if constexpr (sizeof(T) == 4) {
        constexpr __mmask16 even = 0x5555;
        if (sw == 2)
            for (; i + 16 <= len; i += 16)
                for (int h = 0; h < 2; ++h) {
                    const __m512 c = _mm512_maskz_expandloadu_ps(even, col + i + h * 8);
                    float* at = d + 2 * i + h * 16;
                    _mm512_mask_storeu_ps(at, even, _mm512_add_ps(_mm512_maskz_loadu_ps(even, at), c));
                }
    }
#endif
    for (; i + 4 <= len; i += 4) {
        d[i * sw] += col[i];
        d[(i + 1) * sw] += col[i + 1];
        d[(i + 2) * sw] += col[i + 2];
        d[(i + 3) * sw] += col[i + 3];
    }
    for (; i < len; ++i) d[i * sw] += col[i];
}

// Whether `rows` rows of `row_bytes`, `stride` bytes apart, need more lines
// of one L1 set than it has: the L1 data caches of current x86-64 cores
// have 64 sets of 64-byte lines (32 KiB of 8 ways, 48 KiB of 12), so rows a
// multiple of 4 KiB apart all fall in the same few.
inline bool rows_crowd_l1(int64_t rows, int64_t row_bytes, int64_t stride) {
    constexpr int64_t kSets = 64, kWays = 8;
    if (stride % 64 != 0) return false;
    const int64_t sets = kSets / std::gcd(stride / 64 % kSets, kSets);  // that the rows' first lines use
    return sets * kWays < rows * ((row_bytes + 63) / 64);
}

// Where gather_rows reads: vector v of a dL/dx row takes from each column
// row of tap (kr, ks) the values of lanes mask[ks * vectors + v], at
// `slack_before` values before the row's first to `slack_after` past its
// end (the columns need that much room on either side).
template <class T>
struct GatherAt {
    int64_t vectors = 0, slack_before = 0, slack_after = 0;
    AlignedArray<LaneMask> mask;  // aligned: std::vector drops __m256i's alignment
    GatherAt() = default;  // where nothing is gathered
    explicit GatherAt(const ConvShape& p)
        : vectors((p.w + kLanes<T> - 1) / kLanes<T>), mask(aligned_array<LaneMask>(static_cast<size_t>(p.s * vectors))) {
        constexpr int64_t L = kLanes<T>;
        // Lane i of vector v is iw = v * L + i, from ow = iw - shift, shift = ks * dil_w - pad_left.
        for (int64_t ks = 0; ks < p.s; ++ks)
            for (int64_t v = 0; v < vectors; ++v) {
                const int64_t shift = ks * p.dil_w - p.pad_left;
                const int64_t lo = std::clamp<int64_t>(shift - v * L, 0, L);
                const int64_t hi = std::clamp<int64_t>(std::min(p.w, p.out_w + shift) - v * L, lo, L);
                mask.get()[ks * vectors + v] = lanes_between<T>(lo, hi);
            }
        slack_before = std::max<int64_t>(0, (p.s - 1) * p.dil_w - p.pad_left);
        slack_after = vectors * L + p.pad_left;
    }
};

// dL/dx[c][ih][iw] = sum over (kr, ks) in order of cols[m * ld + oh * out_w
// + iw - shift], m = (c * R + kr) * S + ks, oh = ih + pad_top - kr * dil_h,
// over the taps inside both planes: NR dL/dx rows of VW vectors at a time
// (two where they fit the registers).
// The same additions in the same order as the scalar col2im below (0 added
// to a sum where a lane is masked off), so the same values.
template <class T, int VW>
void gather_rows(const ConvShape& p, const T* __restrict cols, int64_t ld, const GatherAt<T>& at,
                 T* __restrict gx) {
    using V = typename Simd<T>::vec;
    constexpr int L = kLanes<T>, NR = VW <= 4 ? 2 : 1;
    const int64_t tail = p.w - (VW - 1) * L;  // values of the last vector in the row
    const LaneMask* const mask = at.mask.get();
    for (int64_t c = 0; c < p.c; ++c)
        for (int64_t ih = 0; ih < p.h; ih += NR) {
            const int nr = ih + 1 < p.h ? NR : 1;
            V acc[NR][VW] = {};
            for (int64_t kr = 0; kr < p.r; ++kr) {
                // The column rows of (c, kr, ks = 0) for the two rows' output rows, each inside the plane.
                const int64_t oh = ih + p.pad_top - kr * p.dil_h;
                const int64_t row = (c * p.r + kr) * p.s * ld + p.pad_left;  // less oh * out_w
                const bool first = oh >= 0 && oh < p.out_h, second = nr == 2 && oh + 1 >= 0 && oh + 1 < p.out_h;
                // Branch-free inside: sums indexed by constants stay in registers.
                const auto add = [&](auto rows, const T* from, int r0) {
                    for (int64_t ks = 0; ks < p.s; ++ks) {
                        const T* at_ks = from + ks * (ld - p.dil_w);  // the row of ks, less its shift
#pragma GCC unroll 2
                        for (int r = 0; r < decltype(rows)::value; ++r)
#pragma GCC unroll 8
                            for (int v = 0; v < VW; ++v)
                                acc[r0 + r][v] += load_masked<V>(at_ks + r * p.out_w + v * L, mask[ks * VW + v]);
                    }
                };
                if constexpr (NR == 2) {
                    if (first && second) add(std::integral_constant<int, 2>{}, cols + row + oh * p.out_w, 0);
                    else if (first) add(std::integral_constant<int, 1>{}, cols + row + oh * p.out_w, 0);
                    else if (second) add(std::integral_constant<int, 1>{}, cols + row + (oh + 1) * p.out_w, 1);
                } else if (first) {
                    add(std::integral_constant<int, 1>{}, cols + row + oh * p.out_w, 0);
                }
            }
            for (int r = 0; r < nr; ++r) {
                T* d = gx + c * p.xs.c + (ih + r) * p.xs.h;
#pragma GCC unroll 8
                for (int v = 0; v + 1 < VW; ++v) store(d + v * L, acc[r][v]);
                if (tail == L) store(d + (VW - 1) * L, acc[r][VW - 1]);
                else store_first(d + (VW - 1) * L, acc[r][VW - 1], tail);
            }
        }
}

template <class T>
using GatherRows = void (*)(const ConvShape&, const T*, int64_t, const GatherAt<T>&, T*);

template <class T, int... VW>
GatherRows<T> pick_gather_rows(int64_t vectors, std::integer_sequence<int, VW...>) {
    GatherRows<T> table[] = {&gather_rows<T, VW + 1>...};
    return table[vectors - 1];
}

template <class T>
void col2im_backward_data(const ConvShape& p, const T* grad_y, const T* weight, T* grad_x) {
    const int64_t taps = p.r * p.s, filters = p.k, pixels = p.out_h * p.out_w;
    const int nv = col2im_vectors<T>(pixels);
    const int64_t W = nv * kLanes<T>;  // pixels per micro-kernel call
    const int64_t rows_m = p.c * taps;  // the GEMM's rows: (channel, tap)
    // Pixels per chunk, whole calls of W, and the stride of a row's columns.
    const int64_t ld = column_stride<T>(p, W);

    // The taps in blocks of rows of the micro-kernel, split evenly (9 as 5 +
    // 4, not 8 + 1, whose one row of sums would wait on the FMA latency);
    // block b's weights packed as a[k][i] = weight[k][first tap of b + i].
    const int64_t blocks = (rows_m + FASTCONV_MR - 1) / FASTCONV_MR;
    std::vector<int64_t> first(static_cast<size_t>(blocks + 1));
    for (int64_t b = 0; b <= blocks; ++b) first[static_cast<size_t>(b)] = rows_m * b / blocks;
    std::vector<T> a_packed(static_cast<size_t>(filters * rows_m));
    for (int64_t b = 0; b < blocks; ++b) {
        const int64_t m0 = first[static_cast<size_t>(b)], rows = first[static_cast<size_t>(b + 1)] - m0;
        for (int64_t k = 0; k < filters; ++k)
            for (int64_t i = 0; i < rows; ++i)  // weight[k][c][t] for row m = c * taps + t
                a_packed[static_cast<size_t>(filters * m0 + k * rows + i)] = weight[k * rows_m + m0 + i];
    }

    // Per thread: 256 KiB of columns (W pixels of each row where that is more:
    // a kernel of thousands of taps, which suits() takes only with half or a
    // quarter as many filters) and a K x W tail panel.
    const bool gather = gathers_rows<T>(p);
    const GatherAt<T> gather_at = gather ? GatherAt<T>(p) : GatherAt<T>();
    const GatherRows<T> gather_rows_of =
        gather ? pick_gather_rows<T>(gather_at.vectors, std::make_integer_sequence<int, kGatherVectors>{}) : nullptr;
    const int64_t before = gather_at.slack_before;  // 0 where nothing is gathered, as slack_after
    PerThread<T> cols_mem(before + rows_m * ld + gather_at.slack_after), tail_mem(filters * W);
    // grad_y is fetched ahead (below) only where it outgrows a quarter of
    // the L3, which other cores share: from L3 the fetches cost more than
    // they saved (Zen 3, one channel of 28 x 28 with 32 filters, 32 images,
    // 6.4 MB of float64 grad_y: dL/dx 16.0 -> 13.1-15 us per image without
    // them, float32 8.3-10 -> 7.3-7.6; 3 channels of 32 x 32, 8 images,
    // float32 38-40 -> 35.5-36); 16 MiB of it (64 such 3-channel images)
    // ran 74-84 us with them, 88-112 without.
    const bool fetch_ahead = p.n * filters * pixels * static_cast<int64_t>(sizeof(T)) > l3_or_fallback() / 4;
    // AVX2, where three or more blocks of rows read a call's pixels and the
    // planes crowd the L1, they read a packed copy: the stem's planes (112 x
    // 112 float64, a multiple of 2 KiB apart) fall in two of its sets, 16 of
    // the K rows a call's blocks read again and again (its dL/dx 31.1 ->
    // 22.3 ms, Zen 4). AVX-512, with three vectors of a row per load of the
    // weights, ran 4 % slower with the copy; so did uncrowded planes.
    const bool pack = FASTCONV_VECTOR_BYTES == 32 && blocks >= 3 &&
                      rows_crowd_l1(filters, W * static_cast<int64_t>(sizeof(T)), p.ys.c * static_cast<int64_t>(sizeof(T)));
    parallel_region(worth_parallel(conv_flops(p)), [&] {
        T* const cols = cols_mem.get() + before;
        T* const tail = tail_mem.get();
#pragma omp for schedule(static)
        for (int64_t n = 0; n < p.n; ++n) {
            const T* gy = grad_y + n * p.ys.n;
            T* gx = grad_x + n * p.xs.n;
            for (int64_t c = 0; c < p.c && !gather; ++c)  // gather_rows writes every value
                for (int64_t ih = 0; ih < p.h; ++ih)
                    std::fill(gx + c * p.xs.c + ih * p.xs.h, gx + c * p.xs.c + ih * p.xs.h + p.w, T(0));
            for (int64_t q0 = 0; q0 < pixels; q0 += ld) {
                const int64_t count = std::min(ld, pixels - q0);
                for (int64_t q = 0; q < count; q += W) {
                    // A call reads W pixels of every plane: past the plane's end
                    // (the next plane, or past the array) it reads a zero-padded
                    // copy of the plane's last pixels instead.
                    const T* b = gy + q0 + q;
                    int64_t step = p.ys.c;
                    // What the GEMM reads kFetchCalls calls on (in the next image
                    // near this one's end), fetched into L2: from memory the
                    // micro-kernel's own fetch, 8 planes ahead, comes too late,
                    // and a call's W pixels of K planes are more streams than
                    // the hardware follows. Zen 3, one channel of 28 x 28, 32
                    // filters, 256 images (51 MB of float64 grad_y): dL/dx 24-31
                    // us per image with the next image's same pixels fetched,
                    // as before, 16.5-17.3 now, 30 with no fetch. (The
                    // float64 image and the next one had filled 400 of the L2's
                    // 512 KiB besides the columns.)
                    if (fetch_ahead) {
                        const int64_t ahead = q0 + q + kFetchCalls * W;
                        const int64_t ahead_n = n + ahead / pixels, at = ahead % pixels;
                        if (ahead_n < p.n)
                            fetch_rows_to_l2(gy + (ahead_n - n) * p.ys.n + at, filters, p.ys.c, std::min(W, pixels - at));
                    }
                    if (pack || q0 + q + W > pixels) {
                        const int64_t left = std::min(W, pixels - (q0 + q));
                        for (int64_t k = 0; k < filters; ++k) {
                            std::copy(b + k * p.ys.c, b + k * p.ys.c + left, tail + k * W);
                            std::fill(tail + k * W + left, tail + (k + 1) * W, T(0));
                        }
                        b = tail, step = W;
                    }
                    for (int64_t blk = 0; blk < blocks; ++blk) {
                        const int64_t m0 = first[static_cast<size_t>(blk)];
                        const int rows = static_cast<int>(first[static_cast<size_t>(blk + 1)] - m0);
                        micro_for_rows<T>(rows, nv)(b, step, nullptr, nullptr, filters, a_packed.data() + filters * m0,
                                                    cols + m0 * ld + q, ld, nullptr);
                    }
                }
                if (gather) {
                    gather_rows_of(p, cols, ld, gather_at, gx);
                    continue;
                }
                // dL/dx[c][oh * stride_h - pad_top + kr * dil_h][ow * stride_w - pad_left + ks * dil_w]
                // += cols[m][oh * out_w + ow - q0] for row m = (c, kr, ks), over the chunk's
                // output pixels whose tap lands inside the input.
                for (int64_t m = 0; m < rows_m; ++m) {
                    const int64_t c = m / taps, kr = m % taps / p.s, ks = m % p.s;
                    const int64_t shift = ks * p.dil_w - p.pad_left, sw = p.stride_w;  // iw = ow * sw + shift
                    int64_t ow0, ow1;  // the outputs whose tap lands inside the row
                    valid_range(shift, sw, p.out_w, p.w, ow0, ow1);
                    if (ow0 >= ow1) continue;
                    for (int64_t oh = q0 / p.out_w; oh * p.out_w < q0 + count; ++oh) {
                        const int64_t ih = oh * p.stride_h - p.pad_top + kr * p.dil_h;
                        const int64_t lo = std::max(ow0, q0 - oh * p.out_w), hi = std::min(ow1, q0 + count - oh * p.out_w);
                        if (ih < 0 || ih >= p.h || lo >= hi) continue;
                        T* __restrict d = gx + c * p.xs.c + ih * p.xs.h + lo * sw + shift;
                        const T* __restrict col = cols + m * ld + oh * p.out_w + lo - q0;
                        if (sw == 1) {
                            for (int64_t i = 0; i < hi - lo; ++i) d[i] += col[i];
                        } else {
                            add_strided(d, col, hi - lo, sw);
                        }
                    }
                }
            }
        }
    });
}

}  // namespace fastconv::FASTCONV_ISA
