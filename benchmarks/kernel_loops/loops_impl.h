// The loops of the kernel-loop bench for one instruction set: included by
// loops_<isa>.cpp after that set's kernels, inside nothing. Each loop calls
// one micro-kernel (the template instance benchmarks/mca_kernels.py models
// as the hot one) through a function pointer, as the layers do, on operands
// of a few KiB that stay in L1 between calls: what it measures is the
// kernel's own throughput, not the caches'. The values are arbitrary; the
// sums are never checked here (the test suite checks the layers).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "loops.h"

namespace fastconv::FASTCONV_ISA {

namespace loops_detail {

// Values drawn from [-1, 1] (no NaN, no denormal to slow a lane down),
// 64-byte aligned, with room past the end for a vector read from the last
// value.
template <class T>
struct Buffer {
    std::vector<T> mem;
    T* data;
    explicit Buffer(int64_t count) : mem(static_cast<size_t>(count + 64 + 16)) {
        std::mt19937 rng(7);
        std::uniform_real_distribution<double> value(-1.0, 1.0);
        for (auto& v : mem) v = static_cast<T>(value(rng));
        auto address = reinterpret_cast<std::uintptr_t>(mem.data());
        data = mem.data() + ((64 - address % 64) % 64) / sizeof(T);
    }
};

// The least seconds per call over batches of calls, each batch long enough
// (about 0.2 ms) that the clock's granularity does not count, until
// `seconds` have passed.
template <class Call>
double seconds_per_call(Call call, double seconds) {
    using Clock = std::chrono::steady_clock;
    call();
    int64_t batch = 1;
    for (;;) {  // size the batch
        const auto t0 = Clock::now();
        for (int64_t i = 0; i < batch; ++i) call();
        if (std::chrono::duration<double>(Clock::now() - t0).count() > 2e-4) break;
        batch *= 2;
    }
    double best = std::numeric_limits<double>::infinity();
    const auto start = Clock::now();
    do {
        const auto t0 = Clock::now();
        for (int64_t i = 0; i < batch; ++i) call();
        best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count() / double(batch));
    } while (std::chrono::duration<double>(Clock::now() - start).count() < seconds);
    return best;
}

template <class T>
const char* type_name() {
    return sizeof(T) == 4 ? "float" : "double";
}

// One input plane for the depthwise dL/dF dots: n = c = k = 1, h x w, an
// r x s kernel, "same" padding.
inline ConvShape plane_shape(int64_t h, int64_t w, int64_t r, int64_t s) {
    ConvShape p;
    p.n = 1, p.c = 1, p.k = 1, p.h = h, p.w = w, p.r = r, p.s = s;
    p.pad_top = (r - 1) / 2, p.pad_bottom = r - 1 - p.pad_top;
    p.pad_left = (s - 1) / 2, p.pad_right = s - 1 - p.pad_left;
    p.out_h = h, p.out_w = w;
    p.set_dense_strides();
    return p;
}

// direct_micro, NP pixels x NK filter vectors at stride SW, over `ntaps`
// taps whose packed weights fill 8-16 KiB, as the forward's chunks of taps do.
// With kEdges, direct_micro_edges (stride 1) over the same taps as a block
// at both edges of the input runs them: a third over all NP pixels, a third
// over all but the first, a third over all but the last.
template <class T, int NP, int NK, int SW = 1, bool kEdges = false>
loops::LoopResult direct_forward_loop(const char* kernel, double seconds) {
    static_assert(!kEdges || SW == 1);
    constexpr int64_t F = NK * kLanes<T>, ntaps = kEdges ? 129 : 128, run = ntaps / 3;
    Buffer<T> in(4096), w(ntaps * F), out(NP * F);
    std::vector<TapAt> at(ntaps);
    for (int64_t t = 0; t < ntaps; ++t) at[static_cast<size_t>(t)] = TapAt{(t * 53) % 2048, t * F};
    const std::string args =
        std::string(type_name<T>()) + ", " + std::to_string(NP) + ", " + std::to_string(NK) + ", " + std::to_string(SW) + ">";
    if constexpr (kEdges) {
        DirectMicroEdges<T> volatile fn = &direct_micro_edges<T, NP, NK, SW>;
        int64_t runs[kPixelRuns] = {};
        runs[kAllPixels] = runs[skip_first(1)] = runs[skip_last(1)] = run;
        const double s = seconds_per_call([&] { fn(in.data, SW, w.data, at.data(), runs, out.data, false); }, seconds);
        return {kernel, "direct_micro_edges<" + args, type_name<T>(), double(run * NK * (3 * NP - 2)), s};
    } else {
        DirectMicro<T> volatile fn = &direct_micro<T, NP, NK, SW>;
        const double s = seconds_per_call([&] { fn(in.data, SW, w.data, at.data(), ntaps, out.data, false); }, seconds);
        return {kernel, "direct_micro<" + args, type_name<T>(), double(ntaps * NP * NK), s};
    }
}

// row_micro on a packed panel: ntaps rows of NV vectors, MR weights a tap.
template <class T, int MR, int NV>
loops::LoopResult gemm_loop(double seconds) {
    constexpr int64_t W = NV * kLanes<T>, ntaps = 48;
    Buffer<T> b((ntaps + kRowsAhead) * W), a(ntaps * MR), c(MR * W);
    RowMicro<T> volatile fn = &row_micro<T, MR, NV>;
    const double s = seconds_per_call([&] { fn(b.data, W, nullptr, nullptr, ntaps, a.data, c.data, W, nullptr); }, seconds);
    return {"gemm", "row_micro<" + std::string(type_name<T>()) + ", " + std::to_string(MR) + ", " + std::to_string(NV) + ">",
            type_name<T>(), double(ntaps * MR * NV), s};
}

// direct_bw_micro: NJ taps x NK filter vectors over 4 rows of 14 pixels at
// stride 1 (the direct dL/dweight's).
template <class T, int NJ, int NK>
loops::LoopResult backward_weights_loop(double seconds) {
    constexpr int64_t F = NK * kLanes<T>, rows = 4, width = 14, row_step = width + 2;
    Buffer<T> x(rows * row_step + NJ + 16), gyt(rows * width * F), acc(NJ * F);
    const T* src[NJ];
    for (int j = 0; j < NJ; ++j) src[j] = x.data + j;
    DirectBwMicro<T> volatile fn = &direct_bw_micro<T, NJ, NK>;
    const double s = seconds_per_call([&] { fn(src, 1, row_step, 0, gyt.data, 1, rows, width, acc.data); }, seconds);
    return {"bw_weights", "direct_bw_micro<" + std::string(type_name<T>()) + ", " + std::to_string(NJ) + ", " + std::to_string(NK) + ">",
            type_name<T>(), double(NJ * NK * rows * width), s};
}

// winograd_bw_micro: NJ channels x KB filter blocks over a row of 28 tiles,
// every other element of the transformed input's arrays.
template <class T, int NJ, int KB>
loops::LoopResult winograd_bw_loop(double seconds) {
    constexpr int64_t F = 2 * kLanes<T>, tiles = 28, pitch = 2 * tiles + 16;
    Buffer<T> v(NJ * pitch), gyt(KB * tiles * F), acc(KB * NJ * F);
    const T* src[NJ];
    for (int j = 0; j < NJ; ++j) src[j] = v.data + j * pitch;
    WinogradBwMicro<T> volatile fn = &winograd_bw_micro<T, NJ, KB>;
    const double s = seconds_per_call([&] { fn(src, gyt.data, tiles * F, tiles, acc.data, NJ * F); }, seconds);
    return {"winograd_bw", "winograd_bw_micro<" + std::string(type_name<T>()) + ", " + std::to_string(NJ) + ", " + std::to_string(KB) + ">",
            type_name<T>(), double(NJ * 2 * KB * tiles), s};
}

// rows_micro: MR filters x NR rows x NV vectors over 96 taps of 3-wide kernel rows.
template <class T, int MR, int NR, int NV>
loops::LoopResult rows_loop(const char* kernel, double seconds) {
    constexpr int64_t W = NV * kLanes<T>, row_step = W + 16, ntaps = 96;
    Buffer<T> base(12 * row_step + NR * row_step + W), a(ntaps * MR), c(MR * NR * W);
    std::vector<int64_t> offset(ntaps);  // taps (channel, kr, ks) of a 3x3 kernel, 4 channels' rows in turn
    for (int64_t j = 0; j < ntaps; ++j) offset[static_cast<size_t>(j)] = (j / 3 % 12) * row_step + j % 3;
    RowsMicro<T> volatile fn = &rows_micro<T, MR, NR, NV>;
    const double s = seconds_per_call([&] { fn(base.data, row_step, offset.data(), ntaps, 3, 1, a.data, c.data); }, seconds);
    return {kernel, "rows_micro<" + std::string(type_name<T>()) + ", " + std::to_string(MR) + ", " + std::to_string(NR) + ", " + std::to_string(NV) + ">",
            type_name<T>(), double(ntaps * MR * NR * NV), s};
}

// rows_shared_micro with a 3-row kernel: MR filters x NR rows x NV vectors,
// 16 channels of 3 kernel columns.
template <class T, int MR, int NR, int NV>
loops::LoopResult rows_shared_loop(const char* kernel, double seconds) {
    constexpr int64_t W = NV * kLanes<T>, row_step = W + 16, R = 3, S = 3, channels = 16;
    Buffer<T> base(4 * (NR + R) * row_step + W), a(channels * R * S * MR), c(MR * NR * W);
    std::vector<int64_t> offset(channels * R * S);  // tap (channel, kr, ks): 4 channels' rows in turn
    for (int64_t j = 0; j < channels * R * S; ++j)
        offset[static_cast<size_t>(j)] = (j / (R * S) % 4) * (NR + R) * row_step + (j / S % R) * row_step + j % S;
    RowsShared<T> volatile fn = &rows_shared_micro<T, MR, NR, NV, R>;
    const double s = seconds_per_call(
        [&] { fn(base.data, row_step, offset.data(), channels, S, a.data, nullptr, c.data, W, nullptr); }, seconds);
    return {kernel,
            "rows_shared_micro<" + std::string(type_name<T>()) + ", " + std::to_string(MR) + ", " + std::to_string(NR) + ", " + std::to_string(NV) + ", 3>",
            type_name<T>(), double(channels * S * R * NR * MR * NV), s};
}

// plane_tile: kPlaneRows output rows of one block of columns, a 3x3 kernel
// at row stride 2 (a strided depthwise plane): one call per block, as in a layer.
template <class T>
loops::LoopResult plane_tile_loop(double seconds) {
    constexpr int RB = kPlaneRows;
    constexpr int64_t W = kRowBlock<T>, pitch = W + 16, R = 3, S = 3;
    Buffer<T> xp((2 * RB + R) * pitch + W), w(R * S), out(RB * W);
    const int64_t column[S] = {0, 1, 2};
    PlaneTile<T> volatile fn = &plane_tile<T, RB>;
    const double s =
        seconds_per_call([&] { fn(xp.data, 2 * pitch, pitch, column, R, S, w.data, T(0), out.data, W); }, seconds);
    return {"dw_fwd", "plane_tile<" + std::string(type_name<T>()) + ", " + std::to_string(RB) + ">", type_name<T>(),
            double(R * S * RB * (W / kLanes<T>)), s};
}

// plane_scatter: kScatterRows kernel rows x kScatterVectors vectors of sums
// over 16 filters, down 8 output rows at row stride 2 (a strided one-channel
// input's dL/dx), as one call of a layer.
template <class T>
loops::LoopResult scatter_loop(double seconds) {
    constexpr int RB = kScatterRows, NV = kScatterVectors;
    constexpr int64_t filters = 16, rows = 8, W = NV * kLanes<T>, pitch = W + 16;
    Buffer<T> dst((2 * rows + RB) * pitch), gy(rows * filters * W), w(filters * RB);
    PlaneScatter<T> volatile fn = &plane_scatter<T, RB, NV>;
    const ScatterRows<T> call{dst.data, 2 * pitch, pitch, gy.data, filters * W, W, w.data, RB, filters, rows};
    const double s = seconds_per_call([&] { fn(call); }, seconds);
    return {"dw_bwd_data",
            "plane_scatter<" + std::string(type_name<T>()) + ", " + std::to_string(RB) + ", " + std::to_string(NV) + ">",
            type_name<T>(), double(rows * filters * RB * NV), s};
}

// plane_dots, NT taps at once, over a 32 x 32 plane with a 5x5 kernel.
template <class T, int NT>
loops::LoopResult dots_loop(double seconds) {
    const ConvShape p = plane_shape(32, 32, 5, 5);
    const InputPlane ip(p, static_cast<const T*>(nullptr));
    const int64_t width = row_width<T>(p);
    Buffer<T> xp(ip.size()), gyp(p.out_h * width), out(NT);
    PlaneDots<T> volatile fn = &plane_dots<T, NT>;
    const double s = seconds_per_call([&] { fn(p, ip, gyp.data, width, xp.data, 0, 0, out.data); }, seconds);
    return {"dw_dots", "plane_dots<" + std::string(type_name<T>()) + ", " + std::to_string(NT) + ">", type_name<T>(),
            double(NT * p.out_h * (width / kLanes<T>)), s};
}

// plane_dots_filters, NK filters x NT taps, over a 24 x 24 plane with a 5x5
// kernel ("valid": LeNet's first layer).
template <class T, int NK, int NT>
loops::LoopResult filter_dots_loop(double seconds) {
    ConvShape p = plane_shape(28, 28, 5, 5);
    p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = 0, p.out_h = p.out_w = 24;
    p.k = NK;
    p.set_dense_strides();
    const InputPlane ip(p, static_cast<const T*>(nullptr));
    const int64_t width = row_width<T>(p), plane = p.out_h * width;
    const int64_t span = p.out_w / kLanes<T> * kLanes<T>;  // whole vectors: the instance without a tail
    Buffer<T> xp(ip.size()), gyp(NK * plane), part(NK * NT);
    PlaneDotsFilters<T> volatile fn = &plane_dots_filters<T, NK, NT, false>;
    const double s =
        seconds_per_call([&] { fn(p, ip, gyp.data, plane, width, span, xp.data, 0, NT, part.data); }, seconds);
    return {"filter_dots",
            "plane_dots_filters<" + std::string(type_name<T>()) + ", " + std::to_string(NK) + ", " + std::to_string(NT) + ", false>",
            type_name<T>(), double(NK * NT * p.out_h * (span / kLanes<T>)), s};
}

// plane_dots_shared, R x S taps, RG grad_y rows a step, over a 32 x 32 plane.
template <class T, int R, int S, int RG>
loops::LoopResult dots_shared_loop(double seconds) {
    const ConvShape p = plane_shape(32, 32, R, S);
    const InputPlane ip(p, static_cast<const T*>(nullptr));
    const int64_t width = row_width<T>(p), span = p.out_w / kLanes<T> * kLanes<T>;  // whole vectors
    Buffer<T> xp(ip.size()), gyp(p.out_h * width), out(R * S);
    PlaneDotsShared<T> volatile fn = &plane_dots_shared<T, R, S, RG, true, false>;
    const double s = seconds_per_call([&] { fn(ip, gyp.data, width, span, xp.data, p.out_h, out.data); }, seconds);
    return {"dw_dots_shared",
            "plane_dots_shared<" + std::string(type_name<T>()) + ", " + std::to_string(R) + ", " + std::to_string(S) + ", " + std::to_string(RG) + ", true, false>",
            type_name<T>(), double(R * S * p.out_h * (span / kLanes<T>)), s};
}

// im2col_dots_micro, the full block of filters x taps, over rows of 2 KiB of
// grad_y and columns (23 KiB for 2 filters and 9 taps): a call's loads and
// stores of its sums weigh about as in a layer of 28 x 28 pixels.
template <class T, int MK, int NT>
loops::LoopResult im2col_dots_loop(double seconds) {
    constexpr int64_t pixels = 2048 / static_cast<int64_t>(sizeof(T));
    Buffer<T> gy(MK * pixels), cols(NT * kDotRow<T>), acc(MK * NT * kLanes<T>);
    DotsMicro<T> volatile fn = &im2col_dots_micro<T, MK, NT>;
    const double s =
        seconds_per_call([&] { fn(gy.data, pixels, cols.data, pixels, nullptr, acc.data, NT * kLanes<T>); }, seconds);
    return {"im2col_dots",
            "im2col_dots_micro<" + std::string(type_name<T>()) + ", " + std::to_string(MK) + ", " + std::to_string(NT) + ">",
            type_name<T>(), double(MK * NT * pixels / kLanes<T>), s};
}

template <class T>
void run_type(std::vector<loops::LoopResult>& out, double seconds) {
    constexpr bool wide = FASTCONV_VECTOR_BYTES == 64;
    out.push_back(direct_forward_loop<T, FASTCONV_DIRECT_NP, 2>("direct_fwd", seconds));
    out.push_back(direct_forward_loop<T, DirectKernels<T, 3>::max_pixels, 3>("direct_fwd3", seconds));
    out.push_back(direct_forward_loop<T, FASTCONV_DIRECT_NP, 2, 2>("direct_fwd_s2", seconds));
    out.push_back(direct_forward_loop<T, DirectKernels<T, 3>::max_pixels, 3, 2>("direct_fwd3_s2", seconds));
    out.push_back(direct_forward_loop<T, FASTCONV_DIRECT_NP, 2, 1, true>("direct_fwd_edges", seconds));
    out.push_back(direct_forward_loop<T, DirectKernels<T, 3>::max_pixels, 3, 1, true>("direct_fwd3_edges", seconds));
    out.push_back(gemm_loop<T, FASTCONV_MR, FASTCONV_NV>(seconds));
    out.push_back(backward_weights_loop<T, FASTCONV_BW_NJ, FASTCONV_BW_NK>(seconds));
    out.push_back(winograd_bw_loop<T, FASTCONV_BW_NJ, FASTCONV_WINOGRAD_BW_BLOCKS>(seconds));
    if constexpr (wide) {
        out.push_back(rows_loop<T, 3, 2, 3>("rows", seconds));
        out.push_back(rows_loop<T, 1, rows_per_call(1, 3), 3>("rows_one_filter", seconds));
        out.push_back(rows_shared_loop<T, 3, 2, 3>("rows_shared", seconds));
    } else {
        out.push_back(rows_loop<T, 3, rows_per_call(3, 1), 1>("rows", seconds));
        out.push_back(rows_loop<T, 1, rows_per_call(1, 2), 2>("rows_one_filter", seconds));
        out.push_back(rows_shared_loop<T, 3, shared_rows(3, 1), 1>("rows_shared", seconds));
    }
    out.push_back(rows_shared_loop<T, 1, kSharedPlaneRows, 2>("dw_fwd_shared", seconds));
    out.push_back(rows_shared_loop<T, 1, shared_rows(1, 1), 1>("one_filter_shared", seconds));
    out.push_back(plane_tile_loop<T>(seconds));
    out.push_back(scatter_loop<T>(seconds));
    out.push_back(dots_loop<T, kTapGroup>(seconds));
    if constexpr (wide) out.push_back(dots_shared_loop<T, 5, 5, 2>(seconds));
    else out.push_back(dots_shared_loop<T, 3, 3, 4>(seconds));
    out.push_back(filter_dots_loop<T, FilterDotsMost::filters, FilterDotsMost::taps>(seconds));
    if constexpr (kIm2colDots) out.push_back(im2col_dots_loop<T, kDotFilters, kDotTaps>(seconds));
}

}  // namespace loops_detail

inline std::vector<loops::LoopResult> run_loops(double seconds_each) {
    std::vector<loops::LoopResult> out;
    loops_detail::run_type<float>(out, seconds_each);
    loops_detail::run_type<double>(out, seconds_each);
    return out;
}

}  // namespace fastconv::FASTCONV_ISA
