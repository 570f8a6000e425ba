// Scratch files for tests: a private directory removed at scope exit, a fresh file
// name, and reading a whole file back.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>

#include <doctest/doctest.h>

namespace snakepit::testing {

/// A private directory under /tmp (never the user's state dir), removed with all its
/// contents at scope exit.
struct temp_dir {
  /// `tag` names the directory, e.g. /tmp/snakepit-<tag>-XXXXXX.
  explicit temp_dir(const std::string& tag = "test") {
    auto tmpl = "/tmp/snakepit-" + tag + "-XXXXXX";
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }

  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }

  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  /// The directory.
  std::string path;
};

/// Creates an empty file /tmp/snakepit-<tag>-XXXXXX and returns its name; the caller
/// removes it.
inline std::string temp_file(const std::string& tag) {
  auto tmpl = "/tmp/snakepit-" + tag + "-XXXXXX";
  int fd = ::mkstemp(tmpl.data());
  REQUIRE(fd >= 0);
  ::close(fd);
  return tmpl;
}

/// The whole content of the file at `path` ("" if it cannot be read).
inline std::string read_file(const std::string& path) {
  std::ifstream in{path};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

} // namespace snakepit::testing
