// Measured FMA peak of one core: independent chains of vector FMAs, enough of
// them to hide the FMA latency, timed with a steady clock. The benchmark
// reports each kernel's GFLOP/s as a share of this figure, and runs the loop
// on several threads at once to see whether the machine gives it its cores.
#include <immintrin.h>

#include <chrono>
#include <cstdint>

#include "peak_flops.h"

namespace fastconv {

namespace {

constexpr int kChains = 16;

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Each macro-step issues kChains independent FMAs of `lanes` flops*2 each;
// the loop returns the flops it did.
#define FASTCONV_FMA_LOOP(VEC, SET1, FMA, STORE, LANES, T)                                      \
    VEC acc[kChains];                                                                          \
    for (int i = 0; i < kChains; ++i) acc[i] = SET1(static_cast<T>(i) * T(1e-3));              \
    const VEC a = SET1(T(0.999999)), b = SET1(T(1e-7));                                        \
    for (int64_t it = 0; it < iterations; ++it)                                                \
        for (int i = 0; i < kChains; ++i) acc[i] = FMA(acc[i], a, b);                          \
    T sink[LANES];                                                                             \
    VEC total = acc[0];                                                                        \
    for (int i = 1; i < kChains; ++i) total = FMA(total, a, acc[i]);                           \
    STORE(sink, total);                                                                        \
    volatile T keep = sink[0];                                                                 \
    (void)keep;                                                                                \
    return 2.0 * LANES * kChains * static_cast<double>(iterations);

__attribute__((target("avx512f"))) double peak_avx512_f32(int64_t iterations) {
    FASTCONV_FMA_LOOP(__m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_storeu_ps, 16, float)
}
__attribute__((target("avx512f"))) double peak_avx512_f64(int64_t iterations) {
    FASTCONV_FMA_LOOP(__m512d, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_storeu_pd, 8, double)
}
__attribute__((target("avx2,fma"))) double peak_avx2_f32(int64_t iterations) {
    FASTCONV_FMA_LOOP(__m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_storeu_ps, 8, float)
}
__attribute__((target("avx2,fma"))) double peak_avx2_f64(int64_t iterations) {
    FASTCONV_FMA_LOOP(__m256d, _mm256_set1_pd, _mm256_fmadd_pd, _mm256_storeu_pd, 4, double)
}
#undef FASTCONV_FMA_LOOP

double fma_flops(Isa isa, bool float64, int64_t iterations) {
    switch (isa) {
        case Isa::avx512: return float64 ? peak_avx512_f64(iterations) : peak_avx512_f32(iterations);
        case Isa::avx2: return float64 ? peak_avx2_f64(iterations) : peak_avx2_f32(iterations);
        default: return 0.0;  // no vector FMA on the generic path
    }
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

}  // namespace fastconv
