#pragma once

#include <cstdint>

#include "isa.h"

namespace fastconv {

// GFLOP/s of one thread running `iterations` rounds of independent vector
// FMAs with the given instruction set (0 for Isa::generic).
double measure_peak_gflops(Isa isa, bool float64, int64_t iterations);

}  // namespace fastconv
