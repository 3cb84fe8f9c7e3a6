// A deliberate bug, compiled into fastconv._core only by the sanitizer CI
// build (-DFASTCONV_SANITIZER_CANARY=ON; never in a normal build). The test
// tests/test_sanitizer_canary.py triggers it in a subprocess: an
// AddressSanitizer or UndefinedBehaviorSanitizer report there proves the
// instrumentation of this module is live, so a clean sanitizer run means
// something.
#include "sanitizer_canary.h"

#include <climits>
#include <memory>
#include <stdexcept>

namespace fastconv {

int sanitizer_canary(const std::string& kind) {
    if (kind == "address") {
        // Heap out-of-bounds read, one element past the end. The index is
        // volatile so the compiler cannot see (and drop) the bad access.
        std::unique_ptr<int[]> a(new int[8]());
        volatile int i = 8;
        return a[i];
    }
    if (kind == "undefined") {
        // Signed integer overflow.
        volatile int big = INT_MAX;
        volatile int one = 1;
        return big + one;
    }
    throw std::invalid_argument("unknown canary '" + kind + "': expected 'address' or 'undefined'");
}

}  // namespace fastconv
