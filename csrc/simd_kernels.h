// The vectorised kernels, one namespace per instruction set (kernels_avx2.cpp,
// kernels_avx512.cpp compile the same templates with different flags). Same
// contracts as kernels.h.
#pragma once

#include "conv_shape.h"

#define FASTCONV_DECLARE_SIMD_KERNELS(ISA)                                                          \
    namespace fastconv::ISA {                                                                       \
    template <class T>                                                                              \
    void conv_forward(const ConvShape& p, const T* x, const T* weight, const T* bias, T* y);       \
    template <class T>                                                                              \
    void conv_backward_data(const ConvShape& p, const T* grad_y, const T* weight, T* grad_x);      \
    template <class T>                                                                              \
    void conv_backward_weights(const ConvShape& p, const T* grad_y, const T* x, T* grad_weight,    \
                               T* grad_bias);                                                     \
    template <class T>                                                                              \
    void conv_backward_bias(const ConvShape& p, const T* grad_y, T* grad_bias);                    \
    }

FASTCONV_DECLARE_SIMD_KERNELS(avx2)
FASTCONV_DECLARE_SIMD_KERNELS(avx512)
#undef FASTCONV_DECLARE_SIMD_KERNELS
