// What the kernels know of the CPU beyond its instruction sets: the sizes of
// the data caches one core sees, read once from the OS (sysfs, else sysconf)
// and never guessed from the vendor's name.
#pragma once

#include <cstdint>

namespace fastconv {

struct CacheSizes {
    int64_t l1d = 0;  // bytes of level-1 data cache per core
    int64_t l2 = 0;   // bytes of level-2 cache per core
    int64_t l3 = 0;   // bytes of level-3 cache (shared), 0 if none reported
    bool reported = false;  // false: the OS told nothing and l1d/l2 are the fallbacks below
};

// Fallbacks where the OS reports nothing: the smallest sizes of current x86-64 cores.
constexpr int64_t kFallbackL1d = 32 * 1024, kFallbackL2 = 256 * 1024;
// What a kernel that sizes its work to the L3 takes where none is reported
// (CacheSizes::l3 stays 0, and `info` says so).
constexpr int64_t kFallbackL3 = 8 * 1024 * 1024;

// Read once, on first use; thread-safe.
const CacheSizes& cache_sizes();

// The L3's bytes, for a kernel that sizes its work to it: kFallbackL3 where none is reported.
inline int64_t l3_or_fallback() { return cache_sizes().l3 > 0 ? cache_sizes().l3 : kFallbackL3; }

}  // namespace fastconv
