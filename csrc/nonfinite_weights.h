// Kernels for weights that hold NaN or Inf (nonfinite_weights.cpp).
#pragma once

#include <cstdint>

#include "conv_shape.h"

namespace fastconv {

// Whether no element of a[0, count) is NaN or Inf (weights, planes of input).
template <class T>
bool all_finite(const T* a, int64_t count);

template <class T>
void nonfinite_forward(const ConvShape& p, const T* x, const T* weight, const T* bias, T* y);

template <class T>
void nonfinite_backward_data(const ConvShape& p, const T* grad_y, const T* weight, T* grad_x);

}  // namespace fastconv
