// A stride-1 convolution with dilation d splits into d_h x d_w undilated
// ones: output (a + d_h * i, b + d_w * j) reads only input pixels whose row
// is a - pad_top (mod d_h) and column b - pad_left (mod d_w), so each output
// phase (a, b) is the undilated convolution of that input phase, both seen
// through every d-th row and column (strides times d). Kernels that exist
// only for dilation 1 (Winograd's) take dilated layers this way.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "conv_shape.h"

namespace fastconv {

struct DilationPhase {
    ConvShape q;                  // the undilated convolution of the phase
    int64_t x_offset, y_offset;   // of its first input and output element
};

namespace detail {
// One axis of a phase: output a + dil * i (i < out) reads input
// a - pad + dil * (i + k), k < kernel, i.e. phase first = (a - pad) mod dil,
// position u = i + k - pad_lo of it. Returns false where the phase has no
// outputs or reads no input pixel.
inline bool phase_axis(int64_t a, int64_t pad, int64_t dil, int64_t kernel, int64_t size, int64_t out_size,
                       int64_t& first, int64_t& out, int64_t& in, int64_t& pad_lo, int64_t& pad_hi) {
    out = (out_size - a + dil - 1) / dil;
    const int64_t e = a - pad;
    const int64_t shift = e >= 0 ? e / dil : -((-e + dil - 1) / dil);  // floor(e / dil)
    first = e - shift * dil;
    pad_lo = -shift;  // >= 0: a < dil and pad >= 0
    in = size > first ? (size - first + dil - 1) / dil : 0;
    // The last output reads u up to out - 1 + kernel - 1 - pad_lo; rows past it are dropped.
    const int64_t last = out - 1 + kernel - 1 - pad_lo;
    in = std::min(in, last + 1);
    pad_hi = last + 1 - in;
    return out > 0 && in > 0 && pad_hi >= 0;
}
}  // namespace detail

// The phases of p (stride 1; dilation above 1 along some axis), or none where
// some phase reads no input (a border of outputs over padding alone).
inline std::vector<DilationPhase> dilation_phases(const ConvShape& p) {
    std::vector<DilationPhase> phases;
    for (int64_t a = 0; a < p.dil_h; ++a)
        for (int64_t b = 0; b < p.dil_w; ++b) {
            DilationPhase ph{p, 0, 0};
            ConvShape& q = ph.q;
            int64_t row0 = 0, col0 = 0;
            if (!detail::phase_axis(a, p.pad_top, p.dil_h, p.r, p.h, p.out_h, row0, q.out_h, q.h, q.pad_top,
                                    q.pad_bottom) ||
                !detail::phase_axis(b, p.pad_left, p.dil_w, p.s, p.w, p.out_w, col0, q.out_w, q.w, q.pad_left,
                                    q.pad_right)) {
                if (a < p.out_h && b < p.out_w) return {};  // outputs that read padding alone
                continue;  // no outputs in this phase
            }
            q.dil_h = q.dil_w = 1;
            q.xs = Strides{p.xs.n, p.xs.c, p.dil_h * p.xs.h, p.dil_w * p.xs.w};
            q.ys = Strides{p.ys.n, p.ys.c, p.dil_h * p.ys.h, p.dil_w * p.ys.w};
            ph.x_offset = row0 * p.xs.h + col0 * p.xs.w;
            ph.y_offset = a * p.ys.h + b * p.ys.w;
            q.check();
            phases.push_back(ph);
        }
    return phases;
}

}  // namespace fastconv
