// Forward convolution vectorised over filters: a direct convolution that
// needs no im2col panel at all. For each kernel tap, one vector of weights
// (16 float32 filters with AVX-512) is multiplied by the broadcast input
// value of each of NP output pixels of a row; NP x NK accumulators stay in
// registers. Taps that read only padding are skipped, and so are a tap's
// first or last 1-3 pixels where only they read padding (BlockTaps); where that
// covers all the padding (3x3 "same", say) the input is read in place, else
// its rows are copied once per task into a zero-padded window. It wins
// over the implicit GEMM where packing dominates: few filters per group,
// small images.
// Included by simd_kernels_impl.h inside the instruction set's namespace;
// FASTCONV_DIRECT_NP is the pixels per micro-kernel with two filter vectors.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "implicit_gemm.h"
#include "input_window.h"
#include "parallel.h"

namespace fastconv::FASTCONV_ISA {

// acc[p][f] += w[f] * in[p * sw] for the NP pixels p of one tap and NK
// vectors of filters f. SW > 0 is sw known at compile time: each pixel's
// input is then a constant offset from the tap's, where a run-time stride
// costs a chain of address adds per tap, which on a core with two 512-bit FMA
// ports competes with the FMAs for the ports.
// Pixels [P0, P1) only where given (a block's runs that skip edge pixels).
template <int SW, int P0 = 0, int P1 = 0, class T, class V, int NP, int NK>
__attribute__((always_inline)) inline void direct_tap(V (&acc)[NP][NK], const T* __restrict in, int64_t sw,
                                                      const T* __restrict w) {
    constexpr int L = kLanes<T>, end = P1 > 0 ? P1 : NP;
    if constexpr (SW > 0) sw = SW;
    V wv[NK];
#pragma GCC unroll 4
    for (int v = 0; v < NK; ++v) wv[v] = load<V>(w + v * L);
#pragma GCC unroll 32
    for (int p = P0; p < end; ++p) {
        const T xv = in[p * sw];
#pragma GCC unroll 4
        for (int v = 0; v < NK; ++v) acc[p][v] += xv * wv[v];
    }
}

// The micro-kernels' sums out[p][f], NP pixels x NK vectors of filters,
// NKS vectors a pixel apart in out: read (or zeros where the sum starts),
// and written back.
template <int NKS, class T, class V, int NP, int NK>
__attribute__((always_inline)) inline void load_sums(V (&acc)[NP][NK], const T* __restrict out, bool accumulate) {
    constexpr int L = kLanes<T>;
#pragma GCC unroll 32
    for (int p = 0; p < NP; ++p)
#pragma GCC unroll 4
        for (int v = 0; v < NK; ++v) acc[p][v] = accumulate ? load<V>(out + (p * NKS + v) * L) : V{};
}
template <int NKS, class T, class V, int NP, int NK>
__attribute__((always_inline)) inline void store_sums(const V (&acc)[NP][NK], T* __restrict out) {
    constexpr int L = kLanes<T>;
#pragma GCC unroll 32
    for (int p = 0; p < NP; ++p)
#pragma GCC unroll 4
        for (int v = 0; v < NK; ++v) store(out + (p * NKS + v) * L, acc[p][v]);
}

// out[p][f] = sum over taps t of w[at[t].w + f] * in[at[t].in + p * sw], for
// NP pixels p and NK vectors of filters f (NKS vectors a pixel apart in
// out); added to out's own values where `accumulate` (the sum goes on over
// the next chunk of taps).
template <class T, int NP, int NK, int SW, int NKS>
__attribute__((always_inline)) inline void micro_taps(const T* __restrict in, int64_t sw, const T* __restrict w,
                                                      const TapAt* __restrict at, int64_t ntaps, T* __restrict out,
                                                      bool accumulate) {
    using V = typename Simd<T>::vec;
    V acc[NP][NK];
    load_sums<NKS>(acc, out, accumulate);
    for (int64_t t = 0; t < ntaps; ++t) direct_tap<SW>(acc, in + at[t].in, sw, w + at[t].w);
    store_sums<NKS>(acc, out);
}
template <class T, int NP, int NK, int SW>
void direct_micro(const T* __restrict in, int64_t sw, const T* __restrict w, const TapAt* __restrict at,
                  int64_t ntaps, T* __restrict out, bool accumulate) {
    micro_taps<T, NP, NK, SW, NK>(in, sw, w, at, ntaps, out, accumulate);
}

// The taps of the runs that leave out S pixels, first and last (BlockTaps):
// pixels [S, NP), then [0, NP - S); none where the block has no more pixels.
template <int S, int SW, class T, class V, int NP, int NK>
__attribute__((always_inline)) inline void skipping_taps(V (&acc)[NP][NK], const T* __restrict in, int64_t sw,
                                                         const T* __restrict w, const TapAt* __restrict& at,
                                                         const int64_t* runs) {
    if constexpr (S < NP) {
        for (int64_t t = 0; t < runs[skip_first(S)]; ++t) direct_tap<SW, S, NP>(acc, in + at[t].in, sw, w + at[t].w);
        at += runs[skip_first(S)];
        for (int64_t t = 0; t < runs[skip_last(S)]; ++t) direct_tap<SW, 0, NP - S>(acc, in + at[t].in, sw, w + at[t].w);
        at += runs[skip_last(S)];
    }
}

// direct_micro for a block at an edge of the input, read in place: after
// the runs[kAllPixels] taps that read every pixel, the runs that leave out
// the first or the last 1, 2 or 3 pixels (BlockTaps), all in one call. As
// a call per run (each on fewer pixels), each stored and loaded the sums
// again: deep_7x7 (7-wide rows, each a block with both edges) spent two
// thirds of its taps in such calls.
template <class T, int NP, int NK, int SW, int NKS>
__attribute__((always_inline)) inline void micro_edge_taps(const T* __restrict in, int64_t sw, const T* __restrict w,
                                                           const TapAt* __restrict at, const int64_t* runs,
                                                           T* __restrict out, bool accumulate) {
    using V = typename Simd<T>::vec;
    static_assert(NP > 1 && kMaxSkip == 3);
    V acc[NP][NK];
    load_sums<NKS>(acc, out, accumulate);
    for (int64_t t = 0; t < runs[kAllPixels]; ++t) direct_tap<SW>(acc, in + at[t].in, sw, w + at[t].w);
    at += runs[kAllPixels];
    skipping_taps<1, SW>(acc, in, sw, w, at, runs);
    skipping_taps<2, SW>(acc, in, sw, w, at, runs);
    skipping_taps<3, SW>(acc, in, sw, w, at, runs);
    store_sums<NKS>(acc, out);
}
template <class T, int NP, int NK, int SW>
void direct_micro_edges(const T* __restrict in, int64_t sw, const T* __restrict w, const TapAt* __restrict at,
                        const int64_t* runs, T* __restrict out, bool accumulate) {
    micro_edge_taps<T, NP, NK, SW, NK>(in, sw, w, at, runs, out, accumulate);
}

// Both for a group's last block of filters where they fill only NK of the
// NKS vectors of its others (sums NKS vectors a pixel apart, as theirs):
// 512 filters in blocks of 48 leave 32 for the last, which computed a third
// of its products for nothing (deep_7x7: 3 % of its forward).
template <class T, int NP, int NK, int NKS, int SW>
void direct_micro_tail(const T* __restrict in, int64_t sw, const T* __restrict w, const TapAt* __restrict at,
                       int64_t ntaps, T* __restrict out, bool accumulate) {
    micro_taps<T, NP, NK, SW, NKS>(in, sw, w, at, ntaps, out, accumulate);
}
template <class T, int NP, int NK, int NKS, int SW>
void direct_micro_tail_edges(const T* __restrict in, int64_t sw, const T* __restrict w, const TapAt* __restrict at,
                             const int64_t* runs, T* __restrict out, bool accumulate) {
    micro_edge_taps<T, NP, NK, SW, NKS>(in, sw, w, at, runs, out, accumulate);
}

template <class T>
using DirectMicro = void (*)(const T*, int64_t, const T*, const TapAt*, int64_t, T*, bool);
template <class T>
using DirectMicroEdges = void (*)(const T*, int64_t, const T*, const TapAt*, const int64_t*, T*, bool);

// NK of NKS filter vectors computed (fewer in a group's last block).
template <class T, int NK, int NKS, int SW, int... P>
DirectMicro<T> pick_direct(int pixels, std::integer_sequence<int, P...>) {
    if constexpr (NK == NKS) {
        DirectMicro<T> table[] = {&direct_micro<T, P + 1, NK, SW>...};
        return table[pixels - 1];
    } else {
        DirectMicro<T> table[] = {&direct_micro_tail<T, P + 1, NK, NKS, SW>...};
        return table[pixels - 1];
    }
}

template <class T, int NK, int NKS, int SW, int... P>
DirectMicroEdges<T> pick_direct_edges(int pixels, std::integer_sequence<int, P...>) {
    if constexpr (NK == NKS) {
        DirectMicroEdges<T> table[] = {&direct_micro_edges<T, P + 2, NK, SW>...};
        return table[pixels - 2];
    } else {
        DirectMicroEdges<T> table[] = {&direct_micro_tail_edges<T, P + 2, NK, NKS, SW>...};
        return table[pixels - 2];
    }
}

// Micro-kernels for 1..max pixels with NK filter vectors, for input pixels
// `stride` apart: strides 1 and 2 built for them, others at run time.
// `vectors` < NK: for a group's last block, whose filters fill only that
// many (direct_micro_tail; strides 1 and 2 only, others compute all NK).
template <class T, int NK>
struct DirectKernels {
    static constexpr int max_pixels = FASTCONV_DIRECT_NP * 2 / NK;
    // The vectors a block of `filters` computes.
    static int vectors_for(int64_t filters, int64_t stride) {
        return stride <= 2 ? static_cast<int>(std::min<int64_t>(NK, (filters + kLanes<T> - 1) / kLanes<T>)) : NK;
    }
    template <int V = NK>
    static DirectMicro<T> for_pixels(int pixels, int64_t stride, int vectors = NK) {
        if constexpr (V > 1)
            if (vectors < V) return for_pixels<V - 1>(pixels, stride, vectors);
        constexpr auto all = std::make_integer_sequence<int, max_pixels>{};
        if (stride == 1) return pick_direct<T, V, NK, 1>(pixels, all);
        if (stride == 2) return pick_direct<T, V, NK, 2>(pixels, all);
        return pick_direct<T, NK, NK, 0>(pixels, all);
    }
    // direct_micro_edges, 2..max pixels.
    template <int V = NK>
    static DirectMicroEdges<T> edges_for_pixels(int pixels, int64_t stride, int vectors = NK) {
        if constexpr (V > 1)
            if (vectors < V) return edges_for_pixels<V - 1>(pixels, stride, vectors);
        constexpr auto all = std::make_integer_sequence<int, max_pixels - 1>{};
        if (stride == 1) return pick_direct_edges<T, V, NK, 1>(pixels, all);
        if (stride == 2) return pick_direct_edges<T, V, NK, 2>(pixels, all);
        return pick_direct_edges<T, NK, NK, 0>(pixels, all);
    }
};

// y[f][ow] = result[ow][f] + bias[f] for the out_w pixels of one output row
// and its nk filters f, y addressed through `ys` from the row's first output
// (bias may be null). `result` holds the row's pixels one after another, F
// values each, out_w rounded up to whole L x L tiles. Dense rows go
// over in L x L tiles transposed in registers, each tile's rows stored
// straight to y with the bias added, one tile after another along the row;
// a group of fewer than L filters goes through `line` (L rows of line_w
// >= those pixels), then each filter's row is written in one run. Through
// `line` for every group, Zen 4 took 2-4 % longer (float32 forwards: cifar
// AVX-512 5.95 -> 5.73 ms, vgg_3x3 AVX2 36.4 -> 35.6, resnet_3x3 AVX2
// 18.5 -> 18.05). Written after each micro-kernel call's block of pixels
// instead, each line of a filter's row was written several times, and
// where planes are a power of two apart (32 x 32 floats) the filters' lines
// share L1 sets and were evicted in between: 13 % of a cifar forward. Tiles
// are cut from the row, not from each micro-kernel call's pixels (calls of
// 11, 11 and 10 pixels on 32-wide rows took three tiles where the row needs
// two; no faster, as the time goes in the stores to y, but simpler).
template <class T, int F>
void write_row(const T* __restrict result, int64_t out_w, int64_t nk, const T* __restrict bias, T* __restrict y,
               const Strides& ys, T* __restrict line, int64_t line_w) {
    using V = typename Simd<T>::vec;
    constexpr int L = kLanes<T>;
    if (ys.w != 1) {  // spread-out outputs: channels-last, or dL/dx by phase
        for (int64_t ow = 0; ow < out_w; ++ow) {
            const T* r = result + ow * F;
            for (int64_t f = 0; f < nk; ++f) y[f * ys.c + ow * ys.w] = r[f] + (bias ? bias[f] : T(0));
        }
        return;
    }
    for (int64_t f0 = 0; f0 < nk; f0 += L) {
        if (f0 + L <= nk) {  // whole tiles straight to y, then the pixels past them
            T b[L];
            for (int i = 0; i < L; ++i) b[i] = bias ? bias[f0 + i] : T(0);
            int64_t t = 0;
            for (; t + L <= out_w; t += L) transpose_tile<T, true>(result + t * F + f0, F, y + f0 * ys.c + t, ys.c, b);
            // A part tile goes to line, then its first pixels of each filter's
            // row to y: value by value, the 12 pixels left of a row of 28
            // took 192 scalar stores per 16 filters (AVX-512 float32 rect_1x7
            // forward 2 % faster, Zen 4).
            if (t < out_w) {
                transpose_tile(result + t * F + f0, F, line, line_w);
                for (int i = 0; i < L; ++i)
                    store_first(y + (f0 + i) * ys.c + t, load<V>(line + i * line_w) + b[i], out_w - t);
            }
            continue;
        }
        // line[i][ow] = filter f0 + i at pixel ow
        for (int64_t t = 0; t < out_w; t += L) transpose_tile(result + t * F + f0, F, line + t, line_w);
        for (int64_t i = 0; i < std::min<int64_t>(L, nk - f0); ++i) {
            const T* src = line + i * line_w;
            T* out = y + (f0 + i) * ys.c;
            const T b = bias ? bias[f0 + i] : T(0);
            int64_t ow = 0;
            for (; ow + L <= out_w; ow += L) store(out + ow, load<V>(src + ow) + b);
            // One by one: a masked store of the tail was 3-7 % slower on
            // resnet_3x3's rows of 56 (Zen 5), gaining 1-2 % on rows of 10.
            for (; ow < out_w; ++ow) out[ow] = src[ow] + b;
        }
    }
}

// The share of the micro-kernel's accumulators that hold real outputs with
// NK vectors of filters: the pixels of a row's calls times the filters of a
// group's blocks. (Counting only the vectors the last block computes chose
// three vectors of 4 pixels for AVX2 cifar, 32 filters as 24 + 8: 20 %
// slower than two of 6, the last block's 4 sums too few to hide the FMAs'
// latency.)
template <class T, int NK>
double accumulator_use(const ConvShape& p) {
    constexpr int64_t np = DirectKernels<T, NK>::max_pixels, filters = NK * kLanes<T>;
    const int64_t calls = PixelBlocks(p.out_w, np).count;
    const int64_t kg = p.k_per_group(), kblocks = (kg + filters - 1) / filters;
    return double(p.out_w) / double(calls * np) * double(kg) / double(kblocks * filters);
}

// How many windows one unit takes. A unit reads its filter block's packed
// weights once, a chunk of taps at a time; with one window per unit, a
// range of blocks larger than L2 streams them from L3 for every window
// (deep_7x7: 885 KB a block of 48 filters, 16 windows). A unit then takes
// a few windows, whose partial sums (and copies, where not read in place)
// stay in L2 while each chunk's weights run over all of them from L1 (Zen 4,
// float32, before the block-major order of direct_forward_nk, alternate
// calls: deep_7x7's 2-thread forward 0.96-0.98 of the time on a host whose
// L3 other tenants fill; on 1 thread deep_s2 0.98, deep_7x7 1.02). The
// sums of each output go chunk by chunk as before, so results do not
// change; units stay many enough (kUnitsPerThread) for the threads to share
// them out evenly (against 8 a thread: 4 took deep_s2's 2-thread forward
// 0.96 of the time but its backward 1.04; 32 took deep_s2's 2-thread
// forward 1.03, deep_7x7's 1.06 where the vCPUs sat apart).
constexpr int64_t kMaxWindowGroup = 8, kUnitsPerThread = 8;
inline int64_t window_group(int64_t range_bytes, int64_t window_bytes, int64_t windows, int64_t blocks,
                            int64_t chunks) {
    const int64_t l2 = cache_sizes().l2;
    if (chunks == 1 || range_bytes <= l2 / 2 || windows <= 1) return 1;  // no windows: an empty batch
    const int64_t most = std::clamp<int64_t>(l2 / 4 / std::max<int64_t>(window_bytes, 1), 1, kMaxWindowGroup);
    int64_t items = (windows + most - 1) / most;  // then windows spread evenly over the items
    while (items < windows && items * blocks < kUnitsPerThread * max_threads()) ++items;
    return (windows + items - 1) / items;
}

// weight_of(g, m, j): weight of filter m of group g for tap j = (c, kr, ks).
template <class T, int NK, class WeightOf>
void direct_forward_nk(const ConvShape& p, const T* x, WeightOf weight_of, const T* bias, T* y) {
    constexpr int L = kLanes<T>, F = NK * L;  // filters per block
    constexpr int NP = DirectKernels<T, NK>::max_pixels;
    const int64_t cg = p.c_per_group(), kg = p.k_per_group();
    const int64_t ntaps = cg * p.r * p.s;
    const int64_t kblocks = (kg + F - 1) / F;
    const PixelBlocks blocks(p.out_w, NP);
    const InputWindow win(p, 0, InputWindow::kRows, &blocks);  // BlockTaps skips the padded pixels
    const int64_t row_blocks = (p.out_h + win.out_rows - 1) / win.out_rows;

    // The work goes in units of one filter block for a group of windows
    // (each an image, group and block of output rows; window_group says how
    // many); each thread takes an even run of them, and a thread done early
    // takes units from the back of another's (SharedUnits). How the units
    // are ordered, and who packs the weights, is said where they are made.
    const int64_t pixel_blocks = blocks.count;
    // By a block's pixels, for full blocks of filters [0] and the group's
    // last [1] (its vectors only); edges_for for blocks with runs that skip
    // edge pixels.
    DirectMicro<T> micro_for[2][NP + 1] = {};
    DirectMicroEdges<T> edges_for[2][NP + 1] = {};
    const int tail_vectors = DirectKernels<T, NK>::vectors_for(kg - (kblocks - 1) * F, p.stride_w);
    for (int np = 1; np <= std::min<int64_t>(NP, blocks.size); ++np)
        for (int last = 0; last < 2; ++last) {
            const int vectors = last ? tail_vectors : NK;
            micro_for[last][np] = DirectKernels<T, NK>::for_pixels(np, p.stride_w, vectors);
            if (np > 1) edges_for[last][np] = DirectKernels<T, NK>::edges_for_pixels(np, p.stride_w, vectors);
        }

    // The taps go in chunks of whole input channels whose packed weights fill
    // at most half the L1 data cache, so that they stay there while every
    // pixel block of the window runs over them; the sums go on from chunk to
    // chunk in a buffer of the window's partial results. One chunk over all
    // taps instead re-read the block's weights from L2 for every pixel block
    // (36 KB per 6-pixel call on resnet_3x3 with AVX2).
    const TapChunks chunks(p, F * static_cast<int64_t>(sizeof(T)));
    const BlockTaps taps(p, LiveTaps(p), blocks, win.offset, F, chunks);
    // Partial results of each row's pixels (write_row): of every row of the
    // window where the sums go on over chunks, else of one row, written when
    // it is done.
    const int64_t row_slot = (p.out_w + L - 1) / L * L * F;  // whole L x L tiles
    const int64_t slot_rows = chunks.count > 1 ? win.out_rows : 1;
    const int64_t line_w = (p.out_w + L - 1) / L * L;

    const int64_t windows = p.n * row_blocks;
    const int64_t window_slot = slot_rows * row_slot;  // partial results of one window
    const PackRanges pack(kblocks, ntaps * F * static_cast<int64_t>(sizeof(T)));
    constexpr int64_t size = sizeof(T);
    const int64_t group = window_group(pack.per_range * ntaps * F * size,
                                       (window_slot + (win.in_place ? 0 : win.size())) * size, windows, kblocks,
                                       chunks.count);
    const int64_t items = (windows + group - 1) / group;  // a unit's windows: item * group...

    // Output rows of windows [w0, w1) for the filters k0... (nk of them) whose
    // packed weights are wb, window w0 + i at bases[i]: every pixel block
    // of every window over one chunk of taps, then over the next, the sums
    // carried in result (window_slot values per window). The rows of `next`
    // (the next window's input) are fetched a share per output row and chunk.
    const auto run_block = [&](const T* const* bases, int64_t w0, int64_t w1, const T* wb, T* result, T* line,
                               int64_t k0, int64_t nk, const RowFetch& next) {
        const auto rows_of = [&](int64_t w) {  // output rows [oh0, oh1) of window w
            const int64_t oh0 = w % row_blocks * win.out_rows;
            return std::pair<int64_t, int64_t>{oh0, std::min(p.out_h, oh0 + win.out_rows)};
        };
        int64_t rows = 0;
        for (int64_t w = w0; w < w1; ++w) rows += rows_of(w).second - rows_of(w).first;
        const int64_t steps = chunks.count * rows;
        const bool last_block = k0 + nk == (k0 / kg + 1) * kg;
        int64_t step = 0;
        for (int64_t at = 0; at < chunks.count * (w1 - w0); ++at) {  // chunk by chunk, each over all the windows
            const int64_t chunk = at / (w1 - w0), w = w0 + at % (w1 - w0), n = w / row_blocks;
            const bool last_chunk = chunk == chunks.count - 1;
            const auto [oh0, oh1] = rows_of(w);
            const T* const base = bases[w - w0];
            for (int64_t oh = oh0; oh < oh1; ++oh, ++step) {
                next.fetch<true>(next.end * step / steps, next.end * (step + 1) / steps);
                const T* row = base + (oh - oh0) * p.stride_h * win.pitch;
                T* const row_result = result + (w - w0) * window_slot + (slot_rows > 1 ? (oh - oh0) * row_slot : 0);
                T* const out = y + n * p.ys.n + k0 * p.ys.c + oh * p.ys.h;
                // The row's outputs, which write_row stores after the row's calls,
                // into L2 meanwhile: a fresh output's lines came from memory as
                // the stores asked (cifar's float32 forward, a 4 MB output: 0.987
                // of the time with AVX2, 0.990 with AVX-512, Zen 4; others unchanged).
                if (p.ys.w == 1 && last_chunk)
                    for (int64_t f = 0; f < nk; ++f)
                        RowFetch::lines<true>(reinterpret_cast<const char*>(out + f * p.ys.c), p.out_w * size);
                for (int64_t b = 0; b < pixel_blocks; ++b) {
                    const int64_t ow0 = blocks.start(b), np = blocks.pixels(b);
                    const BlockTaps::List& list = taps.at(oh, b, chunk);
                    // Spaced-out outputs (dL/dx by phase) go to lines that another phase
                    // wrote long ago: ask for them now, while the micro-kernel runs.
                    if (p.ys.w != 1 && last_chunk) {
                        for (int64_t f = 0; f < nk; ++f) {
                            __builtin_prefetch(out + f * p.ys.c + ow0 * p.ys.w, 1);
                            __builtin_prefetch(out + f * p.ys.c + (ow0 + np - 1) * p.ys.w, 1);
                        }
                    }
                    const T* in = row + ow0 * p.stride_w;
                    T* const sums = row_result + ow0 * F;
                    if (!list.edges)
                        micro_for[last_block][np](in, p.stride_w, wb, list.at, list.runs[kAllPixels], sums, chunk > 0);
                    else
                        edges_for[last_block][np](in, p.stride_w, wb, list.at, list.runs, sums, chunk > 0);
                }
                if (last_chunk)
                    write_row<T, F>(row_result, p.out_w, nk, bias ? bias + k0 : nullptr, out, p.ys, line, line_w);
            }
        }
    };

    // - Weights of a group larger than a range (PackRanges::kBytes): units in
    //   block-major order, each thread packing the block it runs into its
    //   own buffer (again where it takes a unit of another thread's block),
    //   so that no thread reads what another wrote. The team had packed each
    //   range into one shared buffer together: where the host ran the two
    //   threads on different core complexes (a cloud VM's vCPUs, for spells
    //   of seconds to minutes), half of every range came from the other
    //   complex's cache (Zen 4, deep_7x7's 2-thread forward in such spells:
    //   20.5 ms that way, 17.0 this way; outside them 0.96-0.98 the time).
    // - Smaller weights: units window group by window group, each thread
    //   packing a block when it first uses it (so at most once, and while it
    //   is still in cache for that first window); a window is copied once.
    const bool block_major = pack.count > 1;
    const int64_t slots = block_major ? 1 : pack.per_range;  // packed blocks a thread holds
    PerThread<T> window_mem(win.in_place ? 1 : group * win.size()), result_mem(group * window_slot);
    PerThread<T> line_mem(L * line_w);
    PerThread<T> packed_mem(slots * ntaps * F);
    PerThread<int64_t> slot_mem(slots);  // the block (g * kblocks + kb) each slot of packed holds, or -1
    // dst[j][f] = weight of filter kb * F + f of group g for tap j, zero past
    // the group's filters.
    const auto pack_block = [&](int64_t g, int64_t kb, T* dst) {
        const int64_t m0 = kb * F, nk = std::min<int64_t>(F, kg - m0);
        int64_t j0 = 0;  // the first tap not packed yet
        if constexpr (std::is_same_v<WeightOf, WeightRows<T>>) {
            // A full block's weight rows go over in L x L tiles transposed in
            // registers, each row's line kAhead taps on asked for meanwhile: F
            // rows read side by side are more streams than the hardware
            // prefetcher follows, and the loads waited on L3 (deep_7x7's 9.4 MB
            // of float32 weights: 7.6 % of its 2-thread forward in the packing).
            constexpr int64_t kAhead = 4 * L;
            for (; nk == F && j0 + L <= ntaps; j0 += L) {
                if (j0 + kAhead < ntaps)
                    for (int64_t f = 0; f < F; ++f) RowFetch::line(reinterpret_cast<const char*>(weight_of.row(g, m0 + f) + j0 + kAhead));
                for (int64_t f = 0; f < F; f += L) transpose_tile(weight_of.row(g, m0 + f) + j0, ntaps, dst + j0 * F + f, F);
            }
        }
        if constexpr (std::is_same_v<WeightOf, PhaseWeights<T>>) {
            // Tap by tap: the taps of one layer filter kk read the block's kernels
            // of kk (nk x R x S values side by side), which stay in L1 for them,
            // and the next filter's are asked for meanwhile (they come from L3:
            // the weights are read once per phase). Filter by filter over 64 taps
            // instead, each value took an index load and a read a whole layer
            // filter's kernels away: 11.7 % of deep_s2's backward (512 x 256 x 3
            // x 3 weights) went here, 7.1 % now (Zen 5).
            const PhaseWeights<T>& pw = weight_of;
            const int64_t block_bytes = nk * pw.kernel_taps * static_cast<int64_t>(sizeof(T));
            for (int64_t j = 0; j < ntaps; ++j) {
                const int64_t kk = j / pw.per_filter, t = j - kk * pw.per_filter;
                const T* kernels = pw.weight + ((g * pw.kg + kk) * pw.cg + m0) * pw.kernel_taps;
                if (t == 0 && kk + 1 < pw.kg) {  // the next filter's kernels, cg x R x S values on
                    const char* next = reinterpret_cast<const char*>(kernels + pw.cg * pw.kernel_taps);
                    for (int64_t b = 0; b < block_bytes; b += 64) RowFetch::line(next + b);
                }
                const T* src = kernels + pw.source[t];
                T* d = dst + j * F;
                for (int64_t f = 0; f < nk; ++f) d[f] = src[f * pw.kernel_taps];
                std::fill(d + nk, d + F, T(0));
            }
            return;
        }
        for (; j0 < ntaps; j0 += 64) {  // 64 taps at a time: the piece stays in L1
            const int64_t j_end = std::min<int64_t>(ntaps, j0 + 64);
            for (int64_t f = 0; f < nk; ++f)
                for (int64_t j = j0; j < j_end; ++j) dst[j * F + f] = weight_of(g, m0 + f, j);
            for (int64_t j = j0; j < j_end; ++j) std::fill(dst + j * F + nk, dst + (j + 1) * F, T(0));
        }
    };
    const double unit_flops = 2.0 * F * double(ntaps) * double(p.out_w * win.out_rows * group);
    const int64_t units = p.groups * kblocks * items;
    SharedUnits shared(units, true, SharedUnits::units_per_take(unit_flops));
    // A take runs over consecutive units of one window group (item-major) or one block (block-major).
    const auto run_end = [&](int64_t v) {
        return block_major ? (v / items + 1) * items : pack.item_end(v, items);
    };
    parallel_region(worth_parallel(conv_flops(p)), [&] {
        T* const window = window_mem.get();
        T* const result = result_mem.get();
        T* const line = line_mem.get();
        std::fill(result, result + group * window_slot, T(0));  // write_row reads whole tiles past the row's pixels
        T* const packed = packed_mem.get();
        int64_t* const slot_holds = slot_mem.get();
        std::fill(slot_holds, slot_holds + slots, int64_t(-1));
        int64_t windows_of = -1;  // the (group, item) whose windows are in `window`
        const T* bases[kMaxWindowGroup] = {};
        shared.start();
        for (;;) {
            const auto [u, u_end] = shared.next(run_end);
            if (u == u_end) break;
            for (int64_t v = u; v < u_end;) {
                // One window group (item) of group g over filter blocks [kb0, kb1).
                int64_t g, item, kb0, kb1;
                if (block_major) {
                    g = v / (kblocks * items), kb0 = v / items % kblocks, kb1 = kb0 + 1, item = v % items;
                    ++v;
                } else {
                    const PackRanges::Unit at = pack.unit(v, items);
                    g = at.group, item = at.item, kb0 = at.block, kb1 = at.block + (u_end - v);
                    v = u_end;
                }
                const int64_t w0 = item * group, w1 = std::min(windows, w0 + group);
                // Copied windows are copied again only for units of other windows.
                if (win.in_place || windows_of != g * items + item) {
                    for (int64_t w = w0; w < w1; ++w)
                        bases[w - w0] = win.prepare(p, x + w / row_blocks * p.xs.n + g * cg * p.xs.c,
                                                    w % row_blocks * win.out_rows, window + (w - w0) * win.size());
                    windows_of = g * items + item;
                }
                // The next window, which this thread most likely copies next (a
                // take's units go window by window), is fetched into L2 while
                // the first block runs: the copy waited on its input rows (7.5 %
                // of rect_1x7's AVX-512 float32 forward, 64 channels of 28 x
                // 28; 3 % faster now, Zen 4). Fetched into L1, they evicted
                // this window and the weights, and the micro-kernel waited.
                // A window read in place is fetched too where the weights are
                // small (cifar's AVX2 float32 forward 0.989 of the time): in
                // block-major order its rows pushed the block's packed weights
                // out of L2 (deep_7x7 1.011).
                RowFetch next_window{};
                if (w1 < windows)
                    next_window = win.source(p, x + w1 / row_blocks * p.xs.n + g * cg * p.xs.c,
                                             w1 % row_blocks * win.out_rows, !block_major);
                // Filter blocks outermost: one block's weights stay in cache for all the rows.
                for (int64_t kb = kb0; kb < kb1; ++kb) {
                    const int64_t slot = block_major ? 0 : kb;  // item-major: one range, all the blocks
                    T* const wb = packed + slot * ntaps * F;
                    // Packed when first used: it is in cache for its first window.
                    if (slot_holds[slot] != g * kblocks + kb) {
                        pack_block(g, kb, wb);
                        slot_holds[slot] = g * kblocks + kb;
                    }
                    const int64_t k0 = g * kg + kb * F, nk = std::min<int64_t>(F, kg - kb * F);
                    run_block(bases, w0, w1, wb, result, line, k0, nk, kb == kb0 ? next_window : RowFetch{});
                }
            }
        }
    });
}

template <class T, class WeightOf>
void direct_forward(const ConvShape& p, const T* x, WeightOf weight_of, const T* bias, T* y) {
    // Two or three vectors of filters (14 x 2 or 9 x 3 pixels x vectors with
    // AVX-512, 6 x 2 or 4 x 3 with AVX2): three where they fill clearly more
    // of the accumulators, as on 7-wide rows (7 pixels: 7 of 14 or 7 of 9
    // with AVX-512; 4 + 3 calls of 6, or of 4, with AVX2). Two read fewer
    // weights per product otherwise.
    if (p.k_per_group() <= kLanes<T>) direct_forward_nk<T, 1>(p, x, weight_of, bias, y);
    else if (accumulator_use<T, 3>(p) > 1.05 * accumulator_use<T, 2>(p)) direct_forward_nk<T, 3>(p, x, weight_of, bias, y);
    else direct_forward_nk<T, 2>(p, x, weight_of, bias, y);
}

}  // namespace fastconv::FASTCONV_ISA
