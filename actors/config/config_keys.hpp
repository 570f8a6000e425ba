// The keys of a configuration file, declared once: for every key of the top level,
// `[log]` and `[[pools]]`, where its value lives in the structs of config.hpp, its type,
// what validate() requires of it and one line of description. The TOML reader
// (config_file.cpp), the validate() functions and docs/configuration.md follow these
// tables.
#pragma once

#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <caf/error.hpp>

#include "actors/config/config.hpp"

namespace snakepit {

/// The names of a choice (an enum) in value order, and how a file's text becomes one.
struct choice_set {
  /// Canonical names, indexed by the enum's value.
  std::vector<const char*> names;
  /// Text to value; may accept aliases ("warning" for warn). nullopt: not a choice.
  std::optional<int> (*parse)(std::string_view);
};

/// "is neither \"a\" nor \"b\"" for two names, "is not a, b or c" for more: the tail of
/// every message about a bad choice.
std::string describe_choices(const choice_set& choices);

/// A field of `S` of type `T`, reachable for reading and writing.
template<class S, class T>
struct field_ref {
  /// The field, to be set.
  T& (*get)(S&);
  /// The field, to be checked.
  const T& (*read)(const S&);
};

/// An integer field of any width, seen as int64_t; a file may write [lo, hi].
template<class S>
struct integer_ref {
  /// The value, widened.
  int64_t (*read)(const S&);
  /// Stores a value within [lo, hi].
  void (*set)(S&, int64_t);
  /// Smallest value a file may write (0 for unsigned fields).
  int64_t lo;
  /// Largest value a file may write (2^31-1 for counts unless made wide).
  int64_t hi;
};

/// An enum field seen as its index into `choices`.
template<class S>
struct choice_ref {
  /// The enum's value as an index.
  int (*read)(const S&);
  /// Stores the value of an index.
  void (*set)(S&, int);
  /// Its names.
  const choice_set* choices;
};

/// Environment variables in file order.
using env_list = std::vector<std::pair<std::string, std::string>>;

/// Where a key's value lives in `S`, by value type. A millisecond duration is written
/// `<key>_ms` or `<key>_s` in a file, a list of them `<key>_ms`; everything else
/// under the key's own name.
template<class S>
using key_field =
  std::variant<field_ref<S, std::string>, field_ref<S, bool>, integer_ref<S>,
               field_ref<S, double>, field_ref<S, std::chrono::milliseconds>,
               field_ref<S, std::chrono::seconds>, field_ref<S, std::vector<std::string>>,
               field_ref<S, env_list>,
               field_ref<S, std::vector<std::chrono::milliseconds>>, choice_ref<S>>;

/// One key of a configuration file.
template<class S>
struct config_key {
  /// The key as messages name it (durations without `_ms` / `_s`).
  const char* name;
  /// Where its value lives.
  key_field<S> field;
  /// One line for docs/configuration.md.
  const char* what;
  /// Integers and durations (in the field's unit): validate() requires at least
  /// `min`, else says `min_why` ("must be positive").
  int64_t min = std::numeric_limits<int64_t>::min();
  /// ... and at most `max`, else says `max_why`.
  int64_t max = std::numeric_limits<int64_t>::max();
  /// The problem when below `min`.
  std::string min_why{};
  /// The problem when above `max`.
  std::string max_why{};
  /// The range applies only when this holds (heartbeat keys while it is enabled).
  bool (*applies)(const S&) = nullptr;
  /// A further check on the whole struct: the problem, or "" when there is none.
  std::string (*check)(const S&) = nullptr;
};

/// 1-64 characters of [A-Za-z0-9_.-].
bool is_valid_pool_name(std::string_view name);

/// Top-level keys (`config`); the `[log]` and `[[pools]]` sections are not among them.
const std::vector<config_key<config>>& config_keys();

/// Keys of the `[log]` table (`log_config`).
const std::vector<config_key<log_config>>& log_keys();

/// Keys of each `[[pools]]` table (`pool_config`).
const std::vector<config_key<pool_config>>& pool_keys();

/// Keys of each `[[nodes]]` table (`node_config`).
const std::vector<config_key<node_config>>& node_keys();

/// Keys of the `[tls]` table (`tls_config`).
const std::vector<config_key<tls_config>>& tls_keys();

/// The spellings a file may use for `key`: "queue_timeout_ms" and "queue_timeout_s",
/// "retry_backoff_ms", or the name itself.
template<class S>
std::vector<std::string> file_names(const config_key<S>& key);

/// Applies the checks of `keys` to `s` in table order; the first problem as
/// `errc::invalid_config` with "<prefix><key>: <why>".
template<class S>
caf::error validate_keys(const S& s, const std::vector<config_key<S>>& keys,
                         const std::string& prefix);

} // namespace snakepit
