#pragma once

#include <cstdint>

#include "isa.h"

namespace fastconv {

// GFLOP/s of one thread running `iterations` rounds of independent vector
// FMAs with the given instruction set (0 for Isa::generic).
double measure_peak_gflops(Isa isa, bool float64, int64_t iterations);

// GFLOP/s of `threads` threads running that loop at once, over the time they
// take together: about threads times one thread's figure when each has a
// core of its own, less where they share cores (one thread without OpenMP).
double measure_peak_gflops_together(Isa isa, bool float64, int64_t iterations, int threads);

}  // namespace fastconv
