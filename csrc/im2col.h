// Building one tile of the im2col matrix for one output row: the input values
// that the kernel taps see, zero where a tap falls into the padding.
#pragma once

#include <algorithm>
#include <cstdint>

#include "conv_shape.h"

namespace fastconv {

// col[j * ld + i] = x_group[c, ih, iw] for tap j = (c, kr, ks) and output
// column ow = ow0 + i (i < cols) of output row oh; 0 in the padding.
// `x_group` points at the first channel of the group; `channels` = C/groups.
template <class T>
void im2col_row(const ConvShape& p, const T* x_group, int64_t channels, int64_t oh,
                int64_t ow0, int64_t cols, T* col, int64_t ld) {
    for (int64_t c = 0; c < channels; ++c) {
        for (int64_t kr = 0; kr < p.r; ++kr) {
            const int64_t ih = oh * p.stride_h - p.pad_top + kr * p.dil_h;
            for (int64_t ks = 0; ks < p.s; ++ks) {
                T* dst = col + ((c * p.r + kr) * p.s + ks) * ld;
                if (ih < 0 || ih >= p.h) {
                    std::fill(dst, dst + cols, T(0));
                    continue;
                }
                const int64_t iw0 = ow0 * p.stride_w - p.pad_left + ks * p.dil_w;
                int64_t lo, hi;
                valid_range(iw0, p.stride_w, cols, p.w, lo, hi);
                const T* src = x_group + c * p.xs.c + ih * p.xs.h + iw0 * p.xs.w;
                const int64_t step = p.stride_w * p.xs.w;
                std::fill(dst, dst + lo, T(0));
                if (step == 1) {
                    std::copy(src + lo, src + hi, dst + lo);
                } else {
                    for (int64_t i = lo; i < hi; ++i) dst[i] = src[i * step];
                }
                std::fill(dst + hi, dst + cols, T(0));
            }
        }
    }
}

// How many output columns one tile holds so that it stays near `budget`
// elements (and holds at least one column).
inline int64_t tile_columns(int64_t rows, int64_t total_cols, int64_t budget = 1 << 15) {
    return std::max<int64_t>(1, std::min<int64_t>(total_cols, budget / std::max<int64_t>(rows, 1)));
}

}  // namespace fastconv
