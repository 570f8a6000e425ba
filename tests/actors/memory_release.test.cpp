// The runtime's memory release (config::release_memory_interval): freed memory that
// the allocator keeps (fragmented between blocks still in use) goes back to the
// system, so the process's resident set shrinks.
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "actors/runtime/detail/memory_release.hpp"

namespace {

long resident_kb() {
  std::ifstream in{"/proc/self/status"};
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmRSS:", 0) == 0)
      return std::stol(line.substr(6));
  return -1;
}

} // namespace

TEST_SUITE("actors.memory_release") {
  TEST_CASE("free memory held between live blocks goes back to the system") {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    // The sanitizers bring their own allocator; glibc's arenas stay empty.
    MESSAGE("skipped under a sanitizer's allocator");
#else
    // 16 MiB in 64 KiB blocks (below glibc's mmap threshold: they come from an
    // arena), all touched; then every block but the last is freed. The last one
    // pins the arena's top, so free() alone cannot give the memory back.
    constexpr size_t block = 64 * 1024;
    std::vector<char*> blocks;
    for (int i = 0; i < 256; ++i) {
      auto* p = static_cast<char*>(std::malloc(block));
      REQUIRE(p != nullptr);
      std::memset(p, i, block);
      blocks.push_back(p);
    }
    for (size_t i = 0; i + 1 < blocks.size(); ++i)
      std::free(blocks[i]);
    auto before = resident_kb();
    CHECK(snakepit::detail::release_free_memory());
    auto after = resident_kb();
    std::free(blocks.back());
    INFO("resident before " << before << " KiB, after " << after << " KiB");
    CHECK(before - after >= 8 * 1024);
#endif
  }
}
