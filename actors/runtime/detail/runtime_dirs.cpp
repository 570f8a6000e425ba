#include "actors/runtime/detail/runtime_dirs.hpp"

#include <sys/types.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>

#include "adapters/process_registry.hpp"

namespace snakepit::detail {

void sweep_runtime_dirs(const std::filesystem::path& parent, const std::string& skip) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (auto& entry : fs::directory_iterator{parent, ec}) {
    auto name = entry.path().filename().string();
    if (name == skip || name.rfind("snakepit-", 0) != 0 || !entry.is_directory(ec))
      continue;
    std::ifstream in{entry.path() / "owner"};
    long pid = 0;
    uint64_t start = 0;
    if (!(in >> pid >> start) || pid <= 0)
      continue; // not ours to judge
    auto now_start = adapters::process_start_time(static_cast<pid_t>(pid));
    if (now_start && *now_start == start)
      continue; // its host is alive
    fs::remove_all(entry.path(), ec);
  }
}

void claim_and_sweep_runtime_dirs(const std::string& dir) {
  auto me = ::getpid();
  auto my_start = adapters::process_start_time(me);
  {
    std::ofstream out{dir + "/owner"};
    out << me << ' ' << (my_start ? *my_start : 0) << '\n';
  }
  std::filesystem::path p{dir};
  sweep_runtime_dirs(p.parent_path(), p.filename().string());
}

} // namespace snakepit::detail
