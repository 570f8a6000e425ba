// TOML configuration files for a runtime (upstream's `config :snakepit, pools: [...]`):
// turns a file into the plain `snakepit::config` structs, checking every key, type and
// value before anything starts. The keys are the tables of config_keys.hpp, listed in
// docs/configuration.md.
#pragma once

#include <string>
#include <string_view>

#include <caf/expected.hpp>

#include "actors/config/config.hpp"

namespace snakepit {

/// Parses TOML text into a config. `origin` names the text in error messages (usually
/// the file name). Unknown keys, wrong types, names that are no choice, a pool without
/// `adapter` and any value `pool_config::validate()` rejects give
/// `errc::invalid_config` with the key path, e.g.
/// `pools.toml: pools[0].pool_size: expected integer, got string`. The interpreter
/// itself is checked later, by `config::validate()` at start.
caf::expected<config> parse_config(std::string_view toml_text,
                                   std::string origin = "config");

/// Reads and parses the file at `path`; relative `python_path` entries are taken
/// relative to the file's directory.
caf::expected<config> load_config(const std::string& path);

} // namespace snakepit
