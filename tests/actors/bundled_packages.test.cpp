// Where the worker packages are found at run time (docs/install.md): a given
// python_path wins, then SNAKEPIT_PYTHON_PACKAGE_DIR, then an installed prefix, then
// the build tree (what this test binary, run from the build tree, gets). The installed
// case is covered by the `package` test, which installs and runs from a prefix.
#include <doctest/doctest.h>

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "actors/config/bundled_packages.hpp"
#include "actors/config/config.hpp"

using snakepit::find_python_package;
using snakepit::package_origin;

namespace {

using strings = std::vector<std::string>;

/// Sets an environment variable for one scope, restoring the old value.
class scoped_env {
 public:
  scoped_env(const char* name, const char* value) : name_(name) {
    if (auto* old = ::getenv(name))
      old_ = old;
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~scoped_env() {
    if (old_)
      ::setenv(name_, old_->c_str(), 1);
    else
      ::unsetenv(name_);
  }
  scoped_env(const scoped_env&) = delete;
  scoped_env& operator=(const scoped_env&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

std::string canonical(const std::string& path) {
  return std::filesystem::weakly_canonical(path).string();
}

} // namespace

TEST_SUITE("actors.config.bundled_packages") {
  TEST_CASE("a given python_path is used as it is, named as the config's") {
    scoped_env env{"SNAKEPIT_PYTHON_PACKAGE_DIR", "/ignored"};
    auto pkg = find_python_package({"/opt/a", "/opt/b"});
    CHECK(pkg.origin == package_origin::config);
    CHECK(pkg.path == strings{"/opt/a", "/opt/b"});
    snakepit::config cfg;
    cfg.python_path = {"/opt/a", "/opt/b"};
    CHECK(cfg.effective_python_path() == "/opt/a:/opt/b");
  }

  TEST_CASE("SNAKEPIT_PYTHON_PACKAGE_DIR replaces the search, ':' separating entries") {
    scoped_env env{"SNAKEPIT_PYTHON_PACKAGE_DIR", "/x/python::/y/gen"};
    auto pkg = find_python_package({});
    CHECK(pkg.origin == package_origin::environment);
    CHECK(pkg.path == strings{"/x/python", "/y/gen"});
    CHECK(snakepit::config{}.effective_python_path() == "/x/python:/y/gen");
  }

  TEST_CASE("run from the build tree, the package is the source tree's and the build's") {
    scoped_env env{"SNAKEPIT_PYTHON_PACKAGE_DIR", nullptr};
    auto pkg = find_python_package({});
    CHECK(pkg.origin == package_origin::build_tree);
    REQUIRE(pkg.path.size() == 2);
    CHECK(canonical(pkg.path[0]) == canonical(SNAKEPIT_TEST_SOURCE_DIR "/python"));
    CHECK(std::filesystem::exists(pkg.path[0] + "/snakepit_bridge/__init__.py"));
    CHECK(std::filesystem::exists(pkg.path[1] + "/snakepit_bridge_pb2.py"));
    CHECK_FALSE(snakepit::installed_share_dir());
  }

  TEST_CASE("the node bridge of the source tree is found from the build tree") {
    auto node = snakepit::find_node_bridge();
    CHECK(node.origin == package_origin::build_tree);
    CHECK(canonical(node.script) ==
          canonical(SNAKEPIT_TEST_SOURCE_DIR "/node/bridge.js"));
  }

  TEST_CASE("every origin has a name for the doctor's line") {
    CHECK(std::string{to_string(package_origin::installed)} == "installed");
    CHECK(std::string{to_string(package_origin::build_tree)} == "build tree");
    CHECK(std::string{to_string(package_origin::environment)} ==
          "SNAKEPIT_PYTHON_PACKAGE_DIR");
    CHECK(std::string{to_string(package_origin::none)} == "not found");
  }
}
