// What every fuzz target shares: the libFuzzer entry point it defines, the one-line
// property check that turns a broken invariant into a crash libFuzzer reports, and
// the input as text. Each `<target>_fuzz.cpp` is built twice: against libFuzzer
// (scripts/fuzz, clang) and against replay_main.cpp (CTest label `fuzz`, any compiler).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

/// The entry point libFuzzer calls with each input; always returns 0.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace snakepit::fuzz {

/// The input as text.
inline std::string_view text_of(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

/// Aborts (a finding) with `what` when `ok` is false: a parser's promise is broken.
inline void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz property broken: %s\n", what);
    std::abort();
  }
}

} // namespace snakepit::fuzz
