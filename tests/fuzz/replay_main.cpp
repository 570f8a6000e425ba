// Runs a fuzz target's LLVMFuzzerTestOneInput over saved inputs, without libFuzzer:
// every file named, or found (not recursively) in a directory named, on the command
// line. CTest runs it over the seed corpus and the regressions of each target, so that
// a fixed crash stays fixed in the ordinary build. Exits 1 when no input was found (a
// moved corpus must not pass silently); a crashing input aborts the process.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_target.hpp"

namespace {

namespace fs = std::filesystem;

std::vector<fs::path> inputs_of(const std::vector<std::string>& args) {
  std::vector<fs::path> found;
  for (const auto& arg : args) {
    std::error_code ec;
    if (fs::is_directory(arg, ec)) {
      for (const auto& entry : fs::directory_iterator{arg, ec})
        if (entry.is_regular_file())
          found.push_back(entry.path());
    } else if (fs::is_regular_file(arg, ec)) {
      found.emplace_back(arg);
    }
  }
  std::sort(found.begin(), found.end());
  return found;
}

} // namespace

int main(int argc, char** argv) {
  auto inputs = inputs_of({argv + 1, argv + argc});
  if (inputs.empty()) {
    std::fprintf(stderr, "replay: no inputs found\n");
    return 1;
  }
  for (const auto& path : inputs) {
    std::ifstream in{path, std::ios::binary};
    std::string bytes{std::istreambuf_iterator<char>{in}, {}};
    std::fprintf(stderr, "replay: %s (%zu bytes)\n", path.c_str(), bytes.size());
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  }
  std::printf("replay: %zu inputs, no finding\n", inputs.size());
  return 0;
}
