// The kernel-loop bench (benchmarks/kernel_loops.py): each hot micro-kernel
// called over and over on operands that stay in the L1 data cache, timed, and
// its vector FMAs per second set against the measured FMA peak of the same
// instruction set and type. What llvm-mca predicts (benchmarks/mca_kernels.py)
// this measures, on the CPU at hand.
#pragma once

#include <string>
#include <vector>

namespace fastconv::loops {

struct LoopResult {
    std::string kernel;    // the id benchmarks/mca_kernels.py gives it
    std::string instance;  // the template instance timed
    std::string type;      // float or double
    double fma_per_call;   // vector FMAs in one call
    double seconds_per_call;
};

std::vector<LoopResult> run_avx2(double seconds_each);
std::vector<LoopResult> run_avx512(double seconds_each);

}  // namespace fastconv::loops
