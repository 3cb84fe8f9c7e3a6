// Chooses the kernel implementation behind kernels.h.
#include <atomic>
#include <stdexcept>
#include <string>

#include "generic.h"
#include "isa.h"
#include "kernels.h"
#include "nonfinite_weights.h"
#include "simd_kernels.h"

namespace fastconv {

namespace {
std::atomic<int> g_isa{static_cast<int>(best_isa())};

int64_t weight_count(const ConvShape& p) { return p.k * p.c_per_group() * p.r * p.s; }
}  // namespace

Isa active_isa() { return static_cast<Isa>(g_isa.load(std::memory_order_relaxed)); }

void set_active_isa(Isa isa) {
    if (!cpu_supports(isa))
        throw std::invalid_argument(std::string("this CPU cannot run the ") + isa_name(isa) + " kernels");
    g_isa.store(static_cast<int>(isa), std::memory_order_relaxed);
}

template <class T>
void conv_forward(const ConvShape& p, const T* x, const T* weight, const T* bias, T* y) {
    if (!all_finite(weight, weight_count(p))) return nonfinite_forward(p, x, weight, bias, y);
    switch (active_isa()) {
        case Isa::avx512: return avx512::conv_forward(p, x, weight, bias, y);
        case Isa::avx2: return avx2::conv_forward(p, x, weight, bias, y);
        default: return generic::conv_forward(p, x, weight, bias, y);
    }
}

template <class T>
void conv_backward_data(const ConvShape& p, const T* grad_y, const T* weight, T* grad_x) {
    if (!all_finite(weight, weight_count(p))) return nonfinite_backward_data(p, grad_y, weight, grad_x);
    switch (active_isa()) {
        case Isa::avx512: return avx512::conv_backward_data(p, grad_y, weight, grad_x);
        case Isa::avx2: return avx2::conv_backward_data(p, grad_y, weight, grad_x);
        default: return generic::conv_backward_data(p, grad_y, weight, grad_x);
    }
}

template <class T>
void conv_backward_weights(const ConvShape& p, const T* grad_y, const T* x, T* grad_weight, T* grad_bias) {
    switch (active_isa()) {
        case Isa::avx512: return avx512::conv_backward_weights(p, grad_y, x, grad_weight, grad_bias);
        case Isa::avx2: return avx2::conv_backward_weights(p, grad_y, x, grad_weight, grad_bias);
        default: return generic::conv_backward_weights(p, grad_y, x, grad_weight, grad_bias);
    }
}

template <class T>
void conv_backward_bias(const ConvShape& p, const T* grad_y, T* grad_bias) {
    switch (active_isa()) {
        case Isa::avx512: return avx512::conv_backward_bias(p, grad_y, grad_bias);
        case Isa::avx2: return avx2::conv_backward_bias(p, grad_y, grad_bias);
        default: return generic::conv_backward_bias(p, grad_y, grad_bias);
    }
}

#define FASTCONV_INSTANTIATE(T)                                                              \
    template void conv_forward<T>(const ConvShape&, const T*, const T*, const T*, T*);      \
    template void conv_backward_data<T>(const ConvShape&, const T*, const T*, T*);          \
    template void conv_backward_weights<T>(const ConvShape&, const T*, const T*, T*, T*);  \
    template void conv_backward_bias<T>(const ConvShape&, const T*, T*);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv
