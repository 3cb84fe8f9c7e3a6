// The narrow interface between the bindings and the convolution kernels.
//
// x and grad_x are (N, C, H, W), y and grad_y (N, K, out_h, out_w), each
// addressed through the element strides in ConvShape (xs, ys): dense NCHW, or
// channels-last data seen through a transposed view. weight (K, C/groups, R, S)
// and bias are C-contiguous. Kernels overwrite their outputs; they never
// allocate them. Every output element is computed by exactly one task in a
// fixed order, so results do not depend on the number of threads.
#pragma once

#include "conv_shape.h"

namespace fastconv {

// y = conv(x, weight) + bias; bias may be null.
template <class T>
void conv_forward(const ConvShape& p, const T* x, const T* weight, const T* bias, T* y);

// grad_x = dL/dx given grad_y = dL/dy.
template <class T>
void conv_backward_data(const ConvShape& p, const T* grad_y, const T* weight, T* grad_x);

// grad_weight = dL/dweight; and grad_bias = dL/dbias where it is not null,
// in the same pass over grad_y where the kernel can (the same bits as
// conv_backward_bias either way).
template <class T>
void conv_backward_weights(const ConvShape& p, const T* grad_y, const T* x, T* grad_weight, T* grad_bias);

// grad_bias = dL/dbias: grad_y summed over batch and pixels.
template <class T>
void conv_backward_bias(const ConvShape& p, const T* grad_y, T* grad_bias);

}  // namespace fastconv
