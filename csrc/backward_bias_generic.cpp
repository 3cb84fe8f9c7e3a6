// dL/dbias, portable C++ (backward_bias_impl.h at the baseline instruction set).
#include "generic.h"

#define FASTCONV_ISA generic
#include "backward_bias_impl.h"

namespace fastconv::generic {
template void conv_backward_bias<float>(const ConvShape&, const float*, float*);
template void conv_backward_bias<double>(const ConvShape&, const double*, double*);
}  // namespace fastconv::generic
