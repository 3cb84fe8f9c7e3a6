// Portable kernels: plain C++ that any x86-64 (or other) compiler can build.
// Same contracts as kernels.h.
#pragma once

#include "conv_shape.h"

namespace fastconv::generic {

template <class T>
void conv_forward(const ConvShape& p, const T* x, const T* weight, const T* bias, T* y);
template <class T>
void conv_backward_data(const ConvShape& p, const T* grad_y, const T* weight, T* grad_x);
template <class T>
void conv_backward_weights(const ConvShape& p, const T* grad_y, const T* x, T* grad_weight, T* grad_bias);
template <class T>
void conv_backward_bias(const ConvShape& p, const T* grad_y, T* grad_bias);

}  // namespace fastconv::generic
