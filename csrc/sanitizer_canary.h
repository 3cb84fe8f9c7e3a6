// See sanitizer_canary.cpp: built only with -DFASTCONV_SANITIZER_CANARY=ON.
#pragma once

#include <string>

namespace fastconv {

// Performs a deliberate bad access of `kind` ("address": heap out-of-bounds
// read; "undefined": signed overflow); throws std::invalid_argument otherwise.
int sanitizer_canary(const std::string& kind);

}  // namespace fastconv
