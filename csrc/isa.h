// Instruction sets the kernels are compiled for, and which one this CPU runs.
#pragma once

#include <string>

namespace fastconv {

enum class Isa { generic = 0, avx2 = 1, avx512 = 2 };

inline const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::avx512: return "avx512";
        case Isa::avx2: return "avx2";
        default: return "generic";
    }
}

// Whether this CPU (and OS) can run kernels built for `isa`.
inline bool cpu_supports(Isa isa) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    switch (isa) {
        case Isa::avx512:
            return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                   __builtin_cpu_supports("fma");
        case Isa::avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        default: return true;
    }
#else
    return isa == Isa::generic;
#endif
}

inline Isa best_isa() {
    if (cpu_supports(Isa::avx512)) return Isa::avx512;
    if (cpu_supports(Isa::avx2)) return Isa::avx2;
    return Isa::generic;
}

// The ISA the kernels use now: the best one, unless set_active_isa chose another.
Isa active_isa();
// Chooses the ISA; throws std::invalid_argument if this CPU cannot run it.
void set_active_isa(Isa isa);

}  // namespace fastconv
