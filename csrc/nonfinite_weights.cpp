// Weights holding NaN or Inf. The fast kernels skip products that are zero
// for finite weights (taps that read only padding; in dL/dx, grad_y's zero
// border): with a NaN weight those products are NaN, and skipping them or
// not decides which outputs become NaN. These kernels follow PyTorch: the
// forward multiplies the zero padding (0 * NaN = NaN, as an im2col GEMM
// does), and dL/dx adds only products of existing grad_y values (as col2im
// does). Rare and slow, so plain loops.
#include <atomic>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "generic.h"
#include "nonfinite_weights.h"
#include "parallel.h"

namespace fastconv {

namespace {

template <class T>
bool finite_run(const T* a, int64_t count) {
    // NaN and Inf have every exponent bit set: adding one unit of the exponent
    // to the exponent bits then carries into the sign bit, for them alone.
    // Adds and ors vectorise at the baseline's SSE2 for float64 as well,
    // where comparing 64-bit integers needs SSE4.1 and stayed scalar (9.4 MB
    // of float64 weights 0.67 -> 0.16 ms, float32 0.16 -> 0.08, Zen 4).
    using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
    constexpr U exponent = sizeof(T) == 4 ? U(0x7f800000u) : U(0x7ff0000000000000ull);
    constexpr U exponent_unit = exponent & (~exponent + 1);  // its lowest bit
    constexpr int sign_bit = 8 * sizeof(T) - 1;
    U carried = 0;
    for (int64_t i = 0; i < count; ++i) {
        U bits;
        std::memcpy(&bits, a + i, sizeof(T));
        carried |= (bits & exponent) + exponent_unit;
    }
    return (carried >> sign_bit) == 0;
}

}  // namespace

// From a million values on, the team scans them: on the calling thread alone
// the others waited for it (deep_7x7's 9.4 MB of float32 weights, read
// before each of its calls: 0.2-0.3 ms; its 2-thread forward 0.987 of the
// time this way, deep_s2's 0.979, Zen 4).
template <class T>
bool all_finite(const T* a, int64_t count) {
    constexpr int64_t kTeamScan = int64_t(1) << 20;
    if (count < kTeamScan || max_threads() == 1) return finite_run(a, count);
    std::atomic<bool> finite{true};
    parallel_region(true, [&] {
        const auto [lo, hi] = thread_share(count);
        if (!finite_run(a + lo, hi - lo)) finite.store(false, std::memory_order_relaxed);
    });
    return finite.load(std::memory_order_relaxed);
}

template <class T>
void nonfinite_forward(const ConvShape& p, const T* x, const T* weight, const T* bias, T* y) {
    generic::conv_forward(p, x, weight, bias, y);  // im2col rows hold the padding's zeros
}

// dL/dx[n, c, ih, iw] = sum over filters k of its group, and over output pixels
// (oh, ow) and taps (kr, ks) with oh*sh - pt + kr*dh == ih and ow*sw - pl + ks*dw == iw,
// of weight[k, c, kr, ks] * grad_y[n, k, oh, ow]. Each task owns one (n, group):
// a fixed order, whatever the thread count.
template <class T>
void nonfinite_backward_data(const ConvShape& p, const T* grad_y, const T* weight, T* grad_x) {
    const int64_t cg = p.c_per_group(), kg = p.k_per_group();
    parallel_region(worth_parallel(conv_flops(p)), [&] {
#pragma omp for schedule(static)
        for (int64_t t = 0; t < p.n * p.groups; ++t) {
            const int64_t n = t / p.groups, g = t % p.groups;
            T* dx = grad_x + n * p.xs.n + g * cg * p.xs.c;
            for (int64_t c = 0; c < cg; ++c)
                for (int64_t ih = 0; ih < p.h; ++ih)
                    for (int64_t iw = 0; iw < p.w; ++iw) dx[c * p.xs.c + ih * p.xs.h + iw * p.xs.w] = T(0);
            for (int64_t kk = 0; kk < kg; ++kk) {
                const int64_t k = g * kg + kk;
                for (int64_t oh = 0; oh < p.out_h; ++oh)
                    for (int64_t ow = 0; ow < p.out_w; ++ow) {
                        const T gy = grad_y[n * p.ys.n + k * p.ys.c + oh * p.ys.h + ow * p.ys.w];
                        for (int64_t c = 0; c < cg; ++c)
                            for (int64_t kr = 0; kr < p.r; ++kr) {
                                const int64_t ih = oh * p.stride_h - p.pad_top + kr * p.dil_h;
                                if (ih < 0 || ih >= p.h) continue;
                                for (int64_t ks = 0; ks < p.s; ++ks) {
                                    const int64_t iw = ow * p.stride_w - p.pad_left + ks * p.dil_w;
                                    if (iw < 0 || iw >= p.w) continue;
                                    dx[c * p.xs.c + ih * p.xs.h + iw * p.xs.w] +=
                                        weight[((k * cg + c) * p.r + kr) * p.s + ks] * gy;
                                }
                            }
                    }
            }
        }
    });
}

#define FASTCONV_INSTANTIATE(T)                                                                   \
    template bool all_finite<T>(const T*, int64_t);                                               \
    template void nonfinite_forward<T>(const ConvShape&, const T*, const T*, const T*, T*);      \
    template void nonfinite_backward_data<T>(const ConvShape&, const T*, const T*, T*);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv
