// Geometry of one 2-D convolution, shared by every kernel.
//
// All sizes are 64-bit so that index arithmetic never overflows, whatever the
// tensor sizes. Python validates user input; `check()` here guards the
// kernels' own invariants (a violated one is a bug in the caller, reported as
// std::invalid_argument, which pybind11 turns into ValueError).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace fastconv {

// Element strides of a 4-D tensor seen as (N, C, H, W): dense NCHW, or NHWC
// (channels last) seen through a transposed view, or any other.
struct Strides {
    int64_t n = 0, c = 0, h = 0, w = 0;
    static Strides dense(int64_t channels, int64_t height, int64_t width) {
        return Strides{channels * height * width, height * width, width, 1};
    }
    bool operator==(const Strides& o) const { return n == o.n && c == o.c && h == o.h && w == o.w; }
};

struct ConvShape {
    int64_t n = 0, c = 0, h = 0, w = 0;  // input: batch, channels, height, width (NCHW)
    int64_t k = 0;                       // filters (output channels)
    int64_t r = 0, s = 0;                // kernel height, kernel width
    int64_t groups = 1;
    int64_t stride_h = 1, stride_w = 1;
    int64_t dil_h = 1, dil_w = 1;
    int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
    int64_t out_h = 0, out_w = 0;        // output height, width
    Strides xs, ys;                      // element strides of x (and grad_x), y (and grad_y)

    int64_t c_per_group() const { return c / groups; }
    int64_t k_per_group() const { return k / groups; }
    bool x_dense() const { return xs == Strides::dense(c, h, w); }
    bool y_dense() const { return ys == Strides::dense(k, out_h, out_w); }
    // Unpadded input in dense planes (any batch stride): windows of input
    // rows can be read where they are.
    bool in_place_planes() const {
        return pad_top == 0 && pad_bottom == 0 && pad_left == 0 && pad_right == 0 && xs.w == 1 && xs.h == w &&
               xs.c == h * w;
    }
    void set_dense_strides() {
        xs = Strides::dense(c, h, w);
        ys = Strides::dense(k, out_h, out_w);
    }

    // Output size along one axis for a padded input of `size`, or -1 when the
    // dilated kernel does not fit.
    static int64_t out_size(int64_t size, int64_t pad_lo, int64_t pad_hi, int64_t kernel,
                            int64_t dilation, int64_t stride) {
        const int64_t span = (kernel - 1) * dilation + 1;
        const int64_t padded = size + pad_lo + pad_hi;
        if (padded < span) return -1;
        return (padded - span) / stride + 1;
    }

    void check() const {
        auto fail = [](const std::string& what) {
            throw std::invalid_argument("fastconv internal: " + what);
        };
        if (n < 0 || c < 1 || h < 1 || w < 1 || k < 1 || r < 1 || s < 1) fail("non-positive size");
        if (groups < 1 || c % groups != 0 || k % groups != 0) fail("groups do not divide channels");
        if (stride_h < 1 || stride_w < 1 || dil_h < 1 || dil_w < 1) fail("stride/dilation < 1");
        if (pad_top < 0 || pad_bottom < 0 || pad_left < 0 || pad_right < 0) fail("negative padding");
        // Python refuses these too; here they keep every sum of sizes, and
        // the 32-bit tap numbers, far from overflowing.
        constexpr int64_t kMax = (int64_t(1) << 31) - 1;
        for (int64_t v : {n, c, h, w, k, r, s, stride_h, stride_w, dil_h, dil_w, pad_top, pad_bottom, pad_left, pad_right})
            if (v > kMax) fail("a size, stride, dilation or padding above 2**31 - 1");
        if (c_per_group() * r * s > kMax) fail("more than 2**31 - 1 weights per filter");
        if (out_h != out_size(h, pad_top, pad_bottom, r, dil_h, stride_h) ||
            out_w != out_size(w, pad_left, pad_right, s, dil_w, stride_w))
            fail("output size does not match the geometry");
    }
};

// Multiply-adds x 2 of a convolution of shape p: its FLOP count.
inline double conv_flops(const ConvShape& p) {
    return 2.0 * static_cast<double>(p.n) * static_cast<double>(p.k) * static_cast<double>(p.c_per_group()) *
           static_cast<double>(p.r * p.s) * static_cast<double>(p.out_h * p.out_w);
}

// The half-open range [lo, hi) of i in [0, count) for which
// 0 <= start + i * step < limit (step >= 1). Used to skip padding taps
// without a branch per element.
inline void valid_range(int64_t start, int64_t step, int64_t count, int64_t limit,
                        int64_t& lo, int64_t& hi) {
    lo = start >= 0 ? 0 : (-start + step - 1) / step;
    hi = start >= limit ? 0 : (limit - start + step - 1) / step;
    if (hi > count) hi = count;
    if (lo > hi) lo = hi;
}

}  // namespace fastconv
