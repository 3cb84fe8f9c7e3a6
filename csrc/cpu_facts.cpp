#include "cpu_facts.h"

#include <unistd.h>

#include <fstream>
#include <string>

namespace fastconv {

namespace {

// Size in bytes of the cache of `level` (1: data) from /sys, or 0.
int64_t sysfs_cache_size(int level) {
    for (int index = 0; index < 8; ++index) {
        const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
        std::ifstream level_file(dir + "level"), type_file(dir + "type"), size_file(dir + "size");
        int found_level = 0;
        std::string type, size;
        if (!(level_file >> found_level) || !(type_file >> type) || !(size_file >> size)) continue;
        if (found_level != level || type == "Instruction" || size.empty()) continue;
        int64_t value = 0;
        try {
            value = std::stoll(size);
        } catch (...) {
            continue;
        }
        const char unit = size.back();
        return unit == 'K' ? value * 1024 : unit == 'M' ? value * 1024 * 1024 : value;
    }
    return 0;
}

// sysfs first: it describes the cache one core sees (glibc's sysconf counts
// all of a package's L3 on some AMD CPUs: 256 MiB for 8 slices of 32 MiB).
int64_t os_cache_size(int level) {
    const int64_t from_sysfs = sysfs_cache_size(level);
    if (from_sysfs > 0) return from_sysfs;
    long value = 0;
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE) && defined(_SC_LEVEL3_CACHE_SIZE)
    value = sysconf(level == 1 ? _SC_LEVEL1_DCACHE_SIZE : level == 2 ? _SC_LEVEL2_CACHE_SIZE : _SC_LEVEL3_CACHE_SIZE);
#endif
    return value > 0 ? static_cast<int64_t>(value) : 0;
}

CacheSizes read_cache_sizes() {
    CacheSizes sizes;
    sizes.l1d = os_cache_size(1);
    sizes.l2 = os_cache_size(2);
    sizes.l3 = os_cache_size(3);
    sizes.reported = sizes.l1d > 0 && sizes.l2 > 0;
    if (sizes.l1d <= 0) sizes.l1d = kFallbackL1d;
    if (sizes.l2 <= 0) sizes.l2 = kFallbackL2;
    if (sizes.l3 < 0) sizes.l3 = 0;
    return sizes;
}

}  // namespace

const CacheSizes& cache_sizes() {
    static const CacheSizes sizes = read_cache_sizes();
    return sizes;
}

}  // namespace fastconv
