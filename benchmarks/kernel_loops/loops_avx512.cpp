// The AVX-512 kernels, built from the very source (and, by CMake, with the
// very flags) of the extension's, then their loops.
#include "kernels_avx512.cpp"  // NOLINT(bugprone-suspicious-include)
#include "loops_impl.h"

namespace fastconv::loops {
std::vector<LoopResult> run_avx512(double seconds_each) { return avx512::run_loops(seconds_each); }
}  // namespace fastconv::loops
