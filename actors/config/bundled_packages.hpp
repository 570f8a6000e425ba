// Where the worker packages that ship with snakepit are found at run time: the Python
// bridge (`snakepit_bridge` and its generated protobuf modules) and the Node.js bridge.
// An installed snakepit has them under <prefix>/share/snakepit; a program run from the
// build tree uses the source and build tree. Upstream finds its priv/python directory
// through `:code.priv_dir(:snakepit)`; this is that lookup (docs/install.md).
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace snakepit {

/// Where a bundled package was found.
enum class package_origin {
  /// `config::python_path`, given by the host (not searched).
  config,
  /// The environment variable SNAKEPIT_PYTHON_PACKAGE_DIR.
  environment,
  /// <prefix>/share/snakepit of an installed snakepit.
  installed,
  /// The source and build tree this library was built in.
  build_tree,
  /// Nowhere: a worker of the bundled bridge cannot import it.
  none,
};

/// "config python_path", "SNAKEPIT_PYTHON_PACKAGE_DIR", "installed", "build tree",
/// "not found".
const char* to_string(package_origin x);

/// The PYTHONPATH entries that make `snakepit_bridge` and its generated modules
/// importable, and where they came from.
struct python_package {
  /// The entries, in order; empty when `origin` is `none`.
  std::vector<std::string> path;
  /// Where they came from.
  package_origin origin = package_origin::none;
};

/// Resolves the Python package: `python_path` if not empty, else the directories in
/// SNAKEPIT_PYTHON_PACKAGE_DIR (':'-separated), else <prefix>/share/snakepit/python of
/// an installed snakepit, else the build tree's python/ and <build>/python.
python_package find_python_package(const std::vector<std::string>& python_path);

/// The Node.js bridge script (`bridge.js`), installed or in the source tree.
struct node_bridge {
  /// Absolute path of bridge.js; empty when `origin` is `none`.
  std::string script;
  /// Where it came from (`installed`, `build_tree` or `none`).
  package_origin origin = package_origin::none;
};

/// Finds the Node.js bridge: <prefix>/share/snakepit/node/bridge.js of an installed
/// snakepit, else node/bridge.js of the source tree.
node_bridge find_node_bridge();

/// <prefix>/share/snakepit of the installed snakepit this program uses, if any: the
/// prefix the program was built against (programs that link `snakepit::snakepit` from
/// an installed CMake package), else the prefix the executable itself lives in
/// (<prefix>/bin/program, e.g. the installed `snakepit` command).
std::optional<std::string> installed_share_dir();

} // namespace snakepit
