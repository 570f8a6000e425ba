#include "actors/runtime/detail/runtime_dirs.hpp"

#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <thread>

#include "adapters/process_registry.hpp"

namespace snakepit::detail {

namespace {

/// Removes a dead host's directory with its `owner` file last: a removal that
/// races with the host's exiting workers (a file appears while it runs) keeps the
/// owner file, so that the next sweep can still judge the directory and retry.
void remove_dead_dir(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (int attempt = 0; attempt < 3; ++attempt) {
    bool only_owner = true;
    for (auto& e : fs::directory_iterator{dir, ec})
      if (e.path().filename() != "owner")
        fs::remove_all(e.path(), ec);
    for (auto& e : fs::directory_iterator{dir, ec})
      if (e.path().filename() != "owner")
        only_owner = false;
    if (only_owner) {
      fs::remove(dir / "owner", ec);
      fs::remove(dir, ec);
      if (!fs::exists(dir, ec))
        return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
  }
}

} // namespace

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
    remove_dead_dir(entry.path());
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
