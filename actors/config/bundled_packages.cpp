#include "actors/config/bundled_packages.hpp"

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

// Defined (weakly) by a source file that the installed CMake package adds to every
// program linking `snakepit::snakepit` (cmake/snakepit_installed_prefix.cpp.in): the
// prefix that package was found in. Null in programs built in this tree.
extern "C" __attribute__((weak)) const char* snakepit_installed_prefix();

namespace snakepit {

namespace {

bool is_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

/// `<dir>/snakepit_bridge/__init__.py` exists.
bool has_python_package(const std::string& dir) {
  return is_file(dir + "/snakepit_bridge/__init__.py");
}

/// The directory of the running executable's parent folder: <prefix> for
/// <prefix>/bin/program.
std::optional<std::string> executable_prefix() {
  char buf[PATH_MAX];
  auto n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0)
    return std::nullopt;
  std::string exe(buf, static_cast<size_t>(n));
  auto slash = exe.rfind('/');
  if (slash == std::string::npos || slash == 0)
    return std::nullopt;
  auto bin = exe.substr(0, slash);
  auto parent = bin.rfind('/');
  if (parent == std::string::npos)
    return std::nullopt;
  return bin.substr(0, parent);
}

/// `<prefix>/share/snakepit` if it holds an installed Python package.
std::optional<std::string> share_dir_of(const std::string& prefix) {
  auto share = prefix + "/share/snakepit";
  if (has_python_package(share + "/python"))
    return share;
  return std::nullopt;
}

std::vector<std::string> split_path(const std::string& list) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= list.size()) {
    auto end = list.find(':', pos);
    if (end == std::string::npos)
      end = list.size();
    if (end > pos)
      out.push_back(list.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

} // namespace

const char* to_string(package_origin x) {
  switch (x) {
  case package_origin::config:
    return "config python_path";
  case package_origin::environment:
    return "SNAKEPIT_PYTHON_PACKAGE_DIR";
  case package_origin::installed:
    return "installed";
  case package_origin::build_tree:
    return "build tree";
  case package_origin::none:
    break;
  }
  return "not found";
}

std::optional<std::string> installed_share_dir() {
  if (snakepit_installed_prefix != nullptr)
    if (auto* prefix = snakepit_installed_prefix(); prefix && *prefix)
      if (auto share = share_dir_of(prefix))
        return share;
  if (auto prefix = executable_prefix())
    return share_dir_of(*prefix);
  return std::nullopt;
}

python_package find_python_package(const std::vector<std::string>& python_path) {
  if (!python_path.empty())
    return {python_path, package_origin::config};
  if (auto* env = ::getenv("SNAKEPIT_PYTHON_PACKAGE_DIR"); env && *env)
    return {split_path(env), package_origin::environment};
  if (auto share = installed_share_dir())
    return {{*share + "/python"}, package_origin::installed};
  if (has_python_package(SNAKEPIT_BUILD_SOURCE_DIR "/python"))
    return {{SNAKEPIT_BUILD_SOURCE_DIR "/python", SNAKEPIT_BUILD_BINARY_DIR "/python"},
            package_origin::build_tree};
  return {};
}

node_bridge find_node_bridge() {
  if (auto share = installed_share_dir(); share && is_file(*share + "/node/bridge.js"))
    return {*share + "/node/bridge.js", package_origin::installed};
  if (is_file(SNAKEPIT_BUILD_SOURCE_DIR "/node/bridge.js"))
    return {SNAKEPIT_BUILD_SOURCE_DIR "/node/bridge.js", package_origin::build_tree};
  return {};
}

} // namespace snakepit
