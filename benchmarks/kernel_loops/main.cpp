// kernel_loops [seconds_each]: for each instruction set this CPU runs, its FMA
// peak per type (the best of 5 runs of fastconv's own peak loop), then each
// hot micro-kernel's loop (loops_impl.h). Tab-separated, for
// benchmarks/kernel_loops.py to turn into a table:
//   peak  <isa> <type> <GFLOP/s>
//   loop  <isa> <kernel> <type> <instance> <vector FMAs per call> <seconds per call>
#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "isa.h"
#include "loops.h"
#include "peak_flops.h"

int main(int argc, char** argv) {
    using namespace fastconv;
    const double seconds_each = argc > 1 ? std::atof(argv[1]) : 0.3;
    for (Isa isa : {Isa::avx2, Isa::avx512}) {
        if (!cpu_supports(isa)) continue;
        for (bool float64 : {false, true}) {
            double peak = 0;
            for (int i = 0; i < 5; ++i) peak = std::max(peak, measure_peak_gflops(isa, float64, 20'000'000));
            std::printf("peak\t%s\t%s\t%.3f\n", isa_name(isa), float64 ? "double" : "float", peak);
        }
        const auto results = isa == Isa::avx512 ? loops::run_avx512(seconds_each) : loops::run_avx2(seconds_each);
        for (const auto& r : results)
            std::printf("loop\t%s\t%s\t%s\t%s\t%.0f\t%.9g\n", isa_name(isa), r.kernel.c_str(), r.type.c_str(),
                        r.instance.c_str(), r.fma_per_call, r.seconds_per_call);
        std::fflush(stdout);
    }
    return 0;
}
