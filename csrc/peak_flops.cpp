// Measured FMA peak of one core: independent chains of vector FMAs, enough of
// them to hide the FMA latency, timed with a steady clock. The benchmark
// reports each kernel's GFLOP/s as a share of this figure, and runs the loop
// on several threads at once to see whether the machine gives it its cores.
// Also the core's clock, from a dependent chain of integer adds, so that the
// FMAs per cycle (and so the FMA ports) come from measurements, not a name.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "peak_flops.h"

namespace fastconv {

namespace {

// Accumulator chains per ISA: as many as its registers hold beside the loop's
// two constants, with room to spare so the compiler never spills one (a
// spilled chain runs through a store and a load and slows every FMA behind
// it). 12 chains hide a 6-cycle FMA latency on two ports; 24 (of AVX-512's 32
// registers) hide 12 cycles. A 4-5 cycle latency on two ports needs 8-10.
constexpr int kChainsAvx2 = 12;    // of 16 ymm registers
constexpr int kChainsAvx512 = 24;  // of 32 zmm registers

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Each macro-step issues CHAINS independent FMAs of `lanes` flops*2 each;
// the loop returns the flops it did. The loops over the chains are unrolled
// in full (GCC stops short of 24 by itself), else the accumulators live in
// an array in memory instead of in registers.
#define FASTCONV_FMA_LOOP(VEC, SET1, FMA, STORE, LANES, T, CHAINS)                              \
    VEC acc[CHAINS];                                                                           \
    _Pragma("GCC unroll 32") for (int i = 0; i < CHAINS; ++i) acc[i] = SET1(static_cast<T>(i) * T(1e-3)); \
    const VEC a = SET1(T(0.999999)), b = SET1(T(1e-7));                                        \
    for (int64_t it = 0; it < iterations; ++it)                                                \
        _Pragma("GCC unroll 32") for (int i = 0; i < CHAINS; ++i) acc[i] = FMA(acc[i], a, b);  \
    T sink[LANES];                                                                             \
    VEC total = acc[0];                                                                        \
    _Pragma("GCC unroll 32") for (int i = 1; i < CHAINS; ++i) total = FMA(total, a, acc[i]);   \
    STORE(sink, total);                                                                        \
    volatile T keep = sink[0];                                                                 \
    (void)keep;                                                                                \
    return 2.0 * LANES * CHAINS * static_cast<double>(iterations);

__attribute__((target("avx512f"))) double peak_avx512_f32(int64_t iterations) {
    FASTCONV_FMA_LOOP(__m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_storeu_ps, 16, float, kChainsAvx512)
}
__attribute__((target("avx512f"))) double peak_avx512_f64(int64_t iterations) {
    FASTCONV_FMA_LOOP(__m512d, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_storeu_pd, 8, double, kChainsAvx512)
}
__attribute__((target("avx2,fma"))) double peak_avx2_f32(int64_t iterations) {
    FASTCONV_FMA_LOOP(__m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_storeu_ps, 8, float, kChainsAvx2)
}
__attribute__((target("avx2,fma"))) double peak_avx2_f64(int64_t iterations) {
    FASTCONV_FMA_LOOP(__m256d, _mm256_set1_pd, _mm256_fmadd_pd, _mm256_storeu_pd, 4, double, kChainsAvx2)
}
#undef FASTCONV_FMA_LOOP

double fma_flops(Isa isa, bool float64, int64_t iterations) {
    switch (isa) {
        case Isa::avx512: return float64 ? peak_avx512_f64(iterations) : peak_avx512_f32(iterations);
        case Isa::avx2: return float64 ? peak_avx2_f64(iterations) : peak_avx2_f32(iterations);
        default: return 0.0;  // no vector FMA on the generic path
    }
}

// Integer adds per asm block of add_chain_cycles.
constexpr int kAddsPerBlock = 100;

// Runs `blocks` x kAddsPerBlock adds, each depending on the one before: one
// cycle each on every x86-64 core, so the count is the cycles they take (the
// loop counter's own add and branch run beside the chain). Register-register
// adds: some cores (Golden Cove) fold a chain of adds of an immediate in the
// renamer, faster than one per cycle, but not adds of an unknown register.
double add_chain_cycles(int64_t blocks) {
#if defined(__x86_64__)
    volatile uint64_t one = 1;  // a value the compiler (and the renamer) cannot know
    uint64_t step = one, sum = 0;
    for (int64_t i = 0; i < blocks; ++i)
        asm volatile(".rept 100\n\tadd %1, %0\n\t.endr" : "+r"(sum) : "r"(step));
    static_assert(kAddsPerBlock == 100, "the .rept count above");
    volatile uint64_t keep = sum;
    (void)keep;
    return static_cast<double>(blocks) * kAddsPerBlock;
#else
    (void)blocks;
    return 0.0;
#endif
}

}  // namespace

double measure_peak_gflops(Isa isa, bool float64, int64_t iterations) {
    const auto start = std::chrono::steady_clock::now();
    const double flops = fma_flops(isa, float64, iterations);
    return flops / seconds_since(start) / 1e9;
}

double measure_peak_gflops_together(Isa isa, bool float64, int64_t iterations, int threads) {
    double flops = 0;
    const auto start = std::chrono::steady_clock::now();
#ifdef _OPENMP
    // The kernels' own OpenMP team, so that its threads land where theirs do.
#pragma omp parallel num_threads(threads) reduction(+ : flops)
    flops += fma_flops(isa, float64, iterations);
#else
    (void)threads;
    flops = fma_flops(isa, float64, iterations);
#endif
    return flops / seconds_since(start) / 1e9;
}

int vector_bits(Isa isa) {
    switch (isa) {
        case Isa::avx512: return 512;
        case Isa::avx2: return 256;
        default: return 128;  // SSE2, the x86-64 baseline the generic code is compiled for
    }
}

int vector_registers(Isa isa) { return isa == Isa::avx512 ? 32 : 16; }

FmaRate measure_fma_rate(Isa isa, int64_t iterations, int rounds) {
    FmaRate rate;
    if (isa == Isa::generic) return rate;
    // The FMAs and the add chain take turns in short slices (about a
    // millisecond each at the default count): a core that lowers its clock
    // for wide vectors keeps the lower clock for a while after them, so the
    // adds run at the FMAs' clock. Each figure is its best slice's: on a
    // shared machine a slice that another process (or the hypervisor) takes
    // time from only ever reads low, and among a hundred some run whole.
    constexpr int kSlices = 32;
    const int64_t fma_iterations = std::max<int64_t>(1, iterations / kSlices);
    const int64_t blocks = std::max<int64_t>(1, iterations / (20 * kSlices));
    for (int slice = 0; slice < kSlices * std::max(rounds, 1); ++slice) {
        auto start = std::chrono::steady_clock::now();
        const double flops = fma_flops(isa, false, fma_iterations);
        rate.peak_gflops = std::max(rate.peak_gflops, flops / seconds_since(start) / 1e9);
        start = std::chrono::steady_clock::now();
        const double cycles = add_chain_cycles(blocks);
        rate.clock_ghz = std::max(rate.clock_ghz, cycles / seconds_since(start) / 1e9);
    }
    const int lanes = vector_bits(isa) / 32;  // float32 lanes
    if (rate.clock_ghz > 0) rate.fma_per_cycle = rate.peak_gflops / (2.0 * lanes * rate.clock_ghz);
    return rate;
}

}  // namespace fastconv
