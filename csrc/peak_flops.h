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

// Width in bits and number of the vector registers the ISA's kernels use
// (generic: SSE2's, the x86-64 baseline).
int vector_bits(Isa isa);
int vector_registers(Isa isa);

// One thread's float32 FMA peak with `isa`, the clock it ran at (from a
// chain of dependent integer adds, one cycle each on every x86-64 core), and
// their ratio in vector FMAs per cycle at the ISA's width:
// peak / (2 x lanes x clock). All 0 for Isa::generic (no vector FMA), and
// the clock 0 off x86-64.
struct FmaRate {
    double peak_gflops = 0;
    double clock_ghz = 0;
    double fma_per_cycle = 0;
};
FmaRate measure_fma_rate(Isa isa, int64_t iterations, int rounds);

}  // namespace fastconv
