// The zero-padded window of input rows that a block of output rows reads,
// shared by the direct (filter-vectorised) kernels: tap j = (c, kr, ks) of
// output pixel ow of window row 0 reads window[offset[j] + ow * stride_w].
// Included by the instruction sets' kernels inside their namespace (as
// implicit_gemm.h is): each set's copy of these inline functions is compiled
// with its flags, and the linker keeps one copy of an inline function that
// several files share, so a shared one could run AVX-512 code on the AVX2 path.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "conv_shape.h"
#include "cpu_facts.h"
#include "implicit_gemm.h"

namespace fastconv::FASTCONV_ISA {

// A row of out_w outputs cut into the fewest micro-kernel calls of at most
// np pixels, as even as they go: `big` blocks of `size` pixels, then blocks
// of size - 1 (32 = 6 + 6 + 5 + 5 + 5 + 5 with np = 6, not 6 x 5 + 2). A
// call on few pixels leaves accumulators idle and, with fewer than the FMA
// latency times the FMA ports of them, waits on its own sums.
struct PixelBlocks {
    int64_t count = 0, size = 0, big = 0;

    PixelBlocks(int64_t out_w, int64_t np)
        : count((out_w + np - 1) / np), size((out_w + count - 1) / count), big(out_w - count * (size - 1)) {}

    int64_t start(int64_t b) const { return b * size - std::max<int64_t>(0, b - big); }
    int64_t pixels(int64_t b) const { return b < big ? size : size - 1; }
};

// The most edge pixels a direct kernel's tap leaves out at one end of a
// block: 3, all that a 7-wide kernel's "same" padding hides (1x7, 7x7;
// dilation 2 of 3x3 hides 2).
constexpr int kMaxSkip = 3;
// Which of the np pixels from ow0 on that kernel column ks reads inside the
// input, as a class: all (kAllPixels), all but the first s or the last s
// (skip_first(s), skip_last(s), 1 <= s <= kMaxSkip), none (kNoPixels), or
// some other run (kManyPixels): pixels that a direct kernel can leave out
// where a tap reads padding (BlockTaps). The classes a kernel runs over are
// numbered 0..kPixelRuns - 1, a tap's run in its list.
constexpr int8_t kAllPixels = 0, kPixelRuns = 2 * kMaxSkip + 1, kNoPixels = kPixelRuns, kManyPixels = kPixelRuns + 1;
constexpr int8_t skip_first(int s) { return static_cast<int8_t>(2 * s - 1); }
constexpr int8_t skip_last(int s) { return static_cast<int8_t>(2 * s); }
inline int8_t column_pixels(const ConvShape& p, int64_t ow0, int64_t np, int64_t ks) {
    const auto ceil_div = [](int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); };
    // Output columns ow read input column ow * stride + ks * dil - pad_left: inside for ow in [lo_ow, hi_ow).
    const int64_t shift = ks * p.dil_w - p.pad_left;
    const int64_t lo_ow = std::max<int64_t>(0, ceil_div(-shift, p.stride_w));
    const int64_t hi_ow = std::max<int64_t>(0, ceil_div(p.w - shift, p.stride_w));
    const int64_t lo = std::clamp<int64_t>(lo_ow - ow0, 0, np), hi = std::clamp<int64_t>(ow0 + np - hi_ow, 0, np);
    if (lo + hi >= np) return kNoPixels;
    if (lo == 0 && hi == 0) return kAllPixels;
    if (hi == 0 && lo <= kMaxSkip) return skip_first(static_cast<int>(lo));
    if (lo == 0 && hi <= kMaxSkip) return skip_last(static_cast<int>(hi));
    return kManyPixels;
}

struct InputWindow {
    // Output rows per window: at most kRows, or kMaxRows where asked.
    // Neighbouring windows copy the input rows they share twice (a 5-row
    // kernel copies 12 input rows for 8 output rows, 20 for 16).
    static constexpr int64_t kRows = 8, kMaxRows = 16;

    int64_t cols = 0;      // every column a tap of a row reads: iw = -pad_left ...
    int64_t out_rows = 0;  // output rows per window: at most most_rows, and a window of at most ~256 K values
    int64_t rows = 0;      // input rows those output rows read
    int64_t channels = 0;  // input channels of one group
    // The window is the input itself -- no copy -- without padding and with
    // whole input rows, or where the kernel skips every pixel that reads
    // padding (see the constructor). Rows are then `pitch` apart and channels
    // channel_stride, as in the input.
    bool in_place = false;
    int64_t pitch = 0, channel_stride = 0;
    std::vector<int64_t> offset;

    // out_w_rounded: output columns computed per row (>= out_w; the extra ones
    // are computed from zeros and dropped); most_rows: kRows or kMaxRows.
    // skipping: the pixel blocks of a kernel that leaves out up to kMaxSkip
    // first or last pixels of a tap where they read padding, and reads live
    // taps only (BlockTaps, LiveTaps). Where every tap's padded pixels of a
    // block are such a run ("same" 3x3 at stride 1 or 2, 5x5, 1x7 or 7x7 at
    // stride 1, say), such a kernel reads only real input, and the padded
    // input is read in place: a copy of each window into a padded buffer had
    // cost 11-17 % of the 3x3 forward on a core with two 512-bit FMA ports
    // (the input comes from L3).
    // Not for such a kernel on input rows of kWideRow values or more, from 8
    // channels on, padded or not: there a window holds only a few rows of
    // each of its channels, every one of them a separate stream of reads from
    // L3, and the copies took 0.60-0.87 of the time of reading in place (3x3
    // "same" and "valid", 16-64 channels, 1024-2048 wide, float32 and
    // float64, AVX-512 and AVX2, Zen 5); on rows of 256-512, 0.93-1.16 of it.
    // Only while a window of one output row stays within kWideWindow values
    // (4 MiB of float32 per thread), as the copy needs that workspace. The
    // kernels that pass no `skipping` (dL/dF, few filters) read wide rows in
    // place as before: copied, they were as fast or up to 14 % slower.
    static constexpr int64_t kWideRow = 1024, kWideWindow = int64_t(1) << 20;
    explicit InputWindow(const ConvShape& p, int64_t out_w_rounded = 0, int64_t most_rows = kRows,
                         const PixelBlocks* skipping = nullptr)
        : cols((std::max(p.out_w, out_w_rounded) - 1) * p.stride_w + (p.s - 1) * p.dil_w + 1),
          channels(p.c_per_group()) {
        const int64_t span_h = (p.r - 1) * p.dil_h + 1;
        out_rows = std::max<int64_t>(1, std::min({p.out_h, most_rows, kMaxRows}));
        while (out_rows > 1 && channels * ((out_rows - 1) * p.stride_h + span_h) * cols > (1 << 18)) --out_rows;
        rows = (out_rows - 1) * p.stride_h + span_h;
        const bool wide = skipping && p.w >= kWideRow && channels >= 8 && channels * span_h * cols <= kWideWindow;
        in_place = !wide && ((cols == p.w && p.in_place_planes()) ||
                             (skipping && p.xs.w == 1 && out_w_rounded <= p.out_w && skips_all_padding(p, *skipping)));
        pitch = in_place ? p.xs.h : cols;
        channel_stride = in_place ? p.xs.c : rows * cols;
        offset.resize(static_cast<size_t>(channels * p.r * p.s));
        for (int64_t c = 0; c < channels; ++c)
            for (int64_t kr = 0; kr < p.r; ++kr)
                for (int64_t ks = 0; ks < p.s; ++ks)
                    offset[static_cast<size_t>((c * p.r + kr) * p.s + ks)] =
                        c * channel_stride + kr * p.dil_h * pitch + ks * p.dil_w;
    }

    // Workspace elements a thread needs for its window, with room for the
    // vector of zeros that copying its last row may spill (copy_run).
    int64_t size() const { return in_place ? 1 : channels * rows * cols + kWindowSlack; }
    static constexpr int64_t kWindowSlack = kCopySlack<float>;  // the most a copy_run of any T spills

    // The window of output rows oh0... of the group whose first channel is
    // x_group: the input itself in place, else a copy in scratch.
    template <class T>
    const T* prepare(const ConvShape& p, const T* x_group, int64_t oh0, T* scratch) const {
        // In place, element (row, col) of the window is input (ih0 + row, col - pad_left),
        // so the base may lie before the input: only the real input is ever read.
        if (in_place) return x_group + (oh0 * p.stride_h - p.pad_top) * p.xs.h - p.pad_left;
        fill(p, x_group, oh0, scratch);
        return scratch;
    }

    // Asks the cache for rows [first, end) of the channels x rows input rows
    // that the window of output rows oh0... copies (rows of padding and
    // windows read in place have nothing to fetch, unless in_place_too),
    // so that a kernel can spread the next window's fetch over its work on
    // this one.
    int64_t source_rows(bool in_place_too = false) const { return in_place && !in_place_too ? 0 : channels * rows; }
    template <class T>
    void prefetch(const ConvShape& p, const T* x_group, int64_t oh0, int64_t first, int64_t end) const {
        source(p, x_group, oh0).fetch(first, end);
    }
    // Those rows, to fetch a share at a time (RowFetch); none for a
    // channels-last row, spread over C times the lines.
    template <class T>
    RowFetch source(const ConvShape& p, const T* x_group, int64_t oh0, bool in_place_too = false) const {
        if (p.xs.w != 1) return RowFetch{};
        constexpr int64_t size = sizeof(T);
        return RowFetch{reinterpret_cast<const char*>(x_group), p.xs.c * size, p.xs.h * size, p.w * size,
                        rows, oh0 * p.stride_h - p.pad_top, p.h, 0, source_rows(in_place_too)};
    }

  private:
    static bool skips_all_padding(const ConvShape& p, const PixelBlocks& blocks) {
        for (int64_t b = 0; b < blocks.count; ++b)
            for (int64_t ks = 0; ks < p.s; ++ks)
                if (column_pixels(p, blocks.start(b), blocks.pixels(b), ks) == kManyPixels) return false;
        return true;
    }

    // Copies the input rows that output rows oh0... read into dst, zeros in the padding.
    template <class T>
    void fill(const ConvShape& p, const T* x_group, int64_t oh0, T* dst) const {
        const int64_t ih0 = oh0 * p.stride_h - p.pad_top;
        const int64_t lo = std::min<int64_t>(cols, p.pad_left), hi = std::min<int64_t>(cols, p.pad_left + p.w);
        for (int64_t c = 0; c < channels; ++c)
            for (int64_t wr = 0; wr < rows; ++wr) {
                T* row = dst + (c * rows + wr) * cols;
                const int64_t ih = ih0 + wr;
                if (ih < 0 || ih >= p.h) {
                    std::fill(row, row + cols, T(0));
                    continue;
                }
                std::fill(row, row + lo, T(0));  // zeros only where no input lands
                const T* src = x_group + c * p.xs.c + ih * p.xs.h;
                if (p.xs.w == 1) {
                    // Vectors and a masked tail: rows are often short (a one-channel
                    // layer's dL/dx copies 32 channels of 28-value grad_y rows), and
                    // GCC's loop spent most of its time on set-up and tails (that
                    // dL/dx 12.7 -> 10.6 us per image, Zen 5, float32). The zeros it
                    // spills past hi land in the padding or the next row, both
                    // written after it, or in the window's slack.
                    copy_run(row + lo, src + (lo - p.pad_left), hi - lo);
                } else {
                    for (int64_t i = lo; i < hi; ++i) row[i] = src[(i - p.pad_left) * p.xs.w];
                }
                std::fill(row + std::max(lo, hi), row + cols, T(0));
            }
    }
};

// For each output row, the taps j = (c, kr, ks) whose kernel row reads a real
// input row (the others read only padding). Rows share a list when their
// range of valid kernel rows is the same, so there are at most R(R+1)/2
// lists however tall the output: computed once per call, not per task.
struct LiveTaps {
    std::vector<int32_t> taps;         // the distinct lists, one after another
    std::vector<int64_t> start, count;  // per output row: where its list is, and its length

    explicit LiveTaps(const ConvShape& p) : start(static_cast<size_t>(p.out_h)), count(static_cast<size_t>(p.out_h)) {
        const int64_t cg = p.c_per_group();
        struct Range {
            int64_t lo, hi, start;  // first kernel row, end, start in taps
        };
        std::vector<Range> ranges;
        int64_t total = 0;  // taps of all the distinct lists: one allocation, not one per doubling
        for (int64_t oh = 0; oh < p.out_h; ++oh) {
            int64_t lo = p.r, hi = 0;
            for (int64_t kr = 0; kr < p.r; ++kr) {
                const int64_t ih = oh * p.stride_h - p.pad_top + kr * p.dil_h;
                if (ih >= 0 && ih < p.h) lo = std::min(lo, kr), hi = kr + 1;
            }
            if (lo >= hi) lo = hi = 0;
            auto found = std::find_if(ranges.begin(), ranges.end(),
                                      [&](const Range& r) { return r.lo == lo && r.hi == hi; });
            if (found == ranges.end()) {
                ranges.push_back({lo, hi, total});
                total += cg * (hi - lo) * p.s;
                found = ranges.end() - 1;
            }
            start[static_cast<size_t>(oh)] = found->start;
            count[static_cast<size_t>(oh)] = cg * (hi - lo) * p.s;
        }
        taps.reserve(static_cast<size_t>(total));
        for (const Range& r : ranges)
            for (int64_t c = 0; c < cg; ++c)
                for (int64_t kr = r.lo; kr < r.hi; ++kr)
                    for (int64_t ks = 0; ks < p.s; ++ks) taps.push_back(static_cast<int32_t>((c * p.r + kr) * p.s + ks));
    }

    const int32_t* row(int64_t oh) const { return taps.data() + start[static_cast<size_t>(oh)]; }
    int64_t size(int64_t oh) const { return count[static_cast<size_t>(oh)]; }
};

// The taps j = (c, kr, ks) of a direct kernel in chunks of whole input
// channels whose packed weights (bytes_per_tap each) take at most half the
// L1 data cache: the kernel runs every pixel block of a window over one chunk
// before the next, so that the chunk's weights are read from L1. All taps
// form one chunk where their weights take at most 3/5 of it: one chunk has
// no partial sums to carry from chunk to chunk (the window's rows of them
// stored and loaded again). cifar's AVX2 float32 forward (18 KB of weights
// per block, 32 KiB L1) ran 3-5 % faster so on Zen 4; larger layers taken in
// chunks of 3/5 were up to 4 % slower (resnet_3x3). The chunk size comes
// from the cache size the OS reports, not from the CPU's vendor.
struct TapChunks {
    int64_t count = 1;  // chunks
    int64_t taps = 0;   // taps per chunk (the last may have fewer)

    TapChunks(const ConvShape& p, int64_t bytes_per_tap) {
        const int64_t per_channel = p.r * p.s, channels = p.c_per_group();
        const int64_t l1d = cache_sizes().l1d;
        if (bytes_per_tap * per_channel * channels <= l1d * 3 / 5) {
            taps = channels * per_channel;
            return;
        }
        const int64_t fit = std::max<int64_t>(1, l1d / 2 / (bytes_per_tap * per_channel));
        count = (channels + fit - 1) / fit;
        taps = (channels + count - 1) / count * per_channel;  // even chunks
    }
};

// Where a tap reads: its input's offset in the window (InputWindow::offset)
// and its packed weights' offset. Resolved once per call, so that the
// micro-kernel spends two loads per tap on addresses rather than a chain of
// index loads, shifts and multiplies that competes with its FMAs for ports.
struct TapAt {
    int64_t in, w;
};

// For each output row and block of a row's pixels: the row's live taps without
// those that read only padding, in runs by the pixels of the block that read
// inside the input -- all of them, then all but the first, all but the last,
// all but the first two, ... (column_pixels' classes in order). The
// micro-kernel (direct_micro_edges) takes the first run over the block and
// each other over its pixels but those, in one call, so it leaves out the
// padded pixels: a 3x3 kernel on a 7x7 image reads padding in 18 % of its
// products, a 1x7 kernel on a 28-wide one in 6 % (and its windows were
// copied, for the pixels padded for the first two and three taps). Runs
// rather than a mark per tap: a branch per tap on the mark cost an edge block
// 5-10 % of its FMA rate (in L1, AVX2 6 pixels x 2 vectors: 87-90 % marked,
// 94-98 % in runs; each edge pixel's sum now takes the taps of its run after
// the others). Taps padded for pixels at both ends of a block, or for more
// than kMaxSkip at one, go with "all" and read the window's zeros. Blocks away
// from the edges use the row's list unchanged.
class BlockTaps {
  public:
    struct List {
        const TapAt* at;             // where each tap reads, run after run
        int64_t runs[kPixelRuns];    // taps in each run: runs[kAllPixels], runs[skip_first(1)], ...
        bool edges;                  // taps in runs other than the first
    };

    // The pixel blocks of a row; tap j reads the window at offset[j] and its
    // weights at j * weights_per_tap; each block's list comes split into
    // `chunks` (worked out here, once, rather than searched for in every call).
    BlockTaps(const ConvShape& p, const LiveTaps& live, const PixelBlocks& blocks, const std::vector<int64_t>& offset,
              int64_t weights_per_tap, const TapChunks& chunks)
        : blocks_(blocks.count), chunks_(chunks.count), list_of_row_(static_cast<size_t>(p.out_h)) {
        // Each block's class of each kernel column; blocks away from the edges have none but kAllPixels.
        std::vector<std::vector<int8_t>> signatures;  // distinct column classes, [signature][ks]
        std::vector<int64_t> signature_of_block(static_cast<size_t>(blocks_));
        for (int64_t b = 0; b < blocks_; ++b) {
            const int64_t ow0 = blocks.start(b), np = blocks.pixels(b);
            std::vector<int8_t> cls(static_cast<size_t>(p.s));
            for (int64_t ks = 0; ks < p.s; ++ks) {
                // Taps padded for other runs of pixels (kManyPixels) read the window's zeros.
                const int8_t c = column_pixels(p, ow0, np, ks);
                cls[static_cast<size_t>(ks)] = c == kManyPixels ? kAllPixels : c;
            }
            auto found = std::find(signatures.begin(), signatures.end(), cls);
            signature_of_block[static_cast<size_t>(b)] = found - signatures.begin();
            if (found == signatures.end()) signatures.push_back(cls);
        }
        // The distinct row lists of `live`, each filtered once per signature.
        std::vector<std::pair<const int32_t*, int64_t>> lists;  // (first tap, count)
        for (int64_t oh = 0; oh < p.out_h; ++oh) {
            const std::pair<const int32_t*, int64_t> list{live.row(oh), live.size(oh)};
            auto found = std::find(lists.begin(), lists.end(), list);
            list_of_row_[static_cast<size_t>(oh)] = found - lists.begin();
            if (found == lists.end()) lists.push_back(list);
        }
        // Each (row list, signature)'s taps chunk by chunk, and each chunk's
        // taps in runs by their class in order (kNoPixels ones left out), each
        // run in the taps' order.
        struct Runs {
            size_t start;
            int64_t count[kPixelRuns];  // by class
        };
        std::vector<Runs> runs;  // [list][signature][chunk]
        size_t most = 0;  // taps of every list under every signature
        for (const auto& list : lists) most += static_cast<size_t>(list.second) * signatures.size();
        at_.reserve(most);
        std::vector<int8_t> tap_class;  // of each tap of a list, under one signature
        for (const auto& [list, count] : lists)
            for (const std::vector<int8_t>& cls : signatures) {
                // A list holds whole kernel rows (LiveTaps), so its taps' columns go
                // 0..S-1 in turn: counted, where list[t] % S took a division per tap
                // and run (rect_1x7: 28 us a call on the calling thread, the others
                // waiting: 0.82 % of its 2-thread forward's samples, 0.30 % now).
                tap_class.resize(static_cast<size_t>(count));
                for (int64_t t = 0, ks = 0; t < count; ++t, ks = ks + 1 == p.s ? 0 : ks + 1)
                    tap_class[static_cast<size_t>(t)] = cls[static_cast<size_t>(ks)];
                int64_t t0 = 0;
                for (int64_t c = 0; c < chunks_; ++c) {
                    // The list's taps ascend: chunk c holds those in [c * chunks.taps, (c + 1) * chunks.taps).
                    int64_t t1 = t0;
                    while (t1 < count && list[t1] < (c + 1) * chunks.taps) ++t1;
                    Runs r{at_.size(), {}};
                    for (int8_t run = 0; run < kPixelRuns; ++run)
                        for (int64_t t = t0; t < t1; ++t)
                            if (tap_class[static_cast<size_t>(t)] == run) {
                                at_.push_back(TapAt{offset[static_cast<size_t>(list[t])], list[t] * weights_per_tap});
                                ++r.count[run];
                            }
                    runs.push_back(r);
                    t0 = t1;
                }
            }
        lists_.resize(lists.size() * static_cast<size_t>(blocks_ * chunks_));
        for (size_t l = 0; l < lists.size(); ++l)
            for (int64_t b = 0; b < blocks_; ++b)
                for (int64_t c = 0; c < chunks_; ++c) {
                    const size_t span = l * signatures.size() + static_cast<size_t>(signature_of_block[static_cast<size_t>(b)]);
                    const Runs& r = runs[span * static_cast<size_t>(chunks_) + static_cast<size_t>(c)];
                    List& list = lists_[(l * static_cast<size_t>(blocks_) + static_cast<size_t>(b)) *
                                            static_cast<size_t>(chunks_) +
                                        static_cast<size_t>(c)];
                    list.at = at_.data() + r.start;
                    std::copy(r.count, r.count + kPixelRuns, list.runs);
                    list.edges = std::any_of(r.count + 1, r.count + kPixelRuns, [](int64_t n) { return n > 0; });
                }
    }
    BlockTaps(const BlockTaps&) = delete;  // lists_ points into at_
    BlockTaps& operator=(const BlockTaps&) = delete;

    // The taps of pixel block b of output row oh in chunk `chunk`.
    const List& at(int64_t oh, int64_t b, int64_t chunk) const {
        return lists_[static_cast<size_t>((list_of_row_[static_cast<size_t>(oh)] * blocks_ + b) * chunks_ + chunk)];
    }

  private:
    int64_t blocks_, chunks_;
    std::vector<int64_t> list_of_row_;
    std::vector<TapAt> at_;
    std::vector<List> lists_;  // [row list][block][chunk]
};

}  // namespace fastconv::FASTCONV_ISA
