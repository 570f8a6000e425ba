#include "actors/config/config_file.hpp"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "adapters/errors.hpp"

namespace snakepit {

namespace {

using setter = std::function<caf::error(const toml::node&, const std::string& path)>;

/// One accepted key: the struct field it sets (two keys of one field conflict, e.g.
/// `queue_timeout_ms` and `queue_timeout_s`) and how.
struct key_spec {
  std::string field;
  setter set;
};

using key_table = std::map<std::string, key_spec>;

/// Durations given in seconds may not exceed this (about 31 years), so that the
/// millisecond count cannot overflow.
constexpr int64_t max_duration_s = int64_t{1} << 30;

const char* type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string:
      return "string";
    case toml::node_type::integer:
      return "integer";
    case toml::node_type::floating_point:
      return "float";
    case toml::node_type::boolean:
      return "boolean";
    case toml::node_type::array:
      return "array";
    case toml::node_type::table:
      return "table";
    case toml::node_type::date:
      return "date";
    case toml::node_type::time:
      return "time";
    case toml::node_type::date_time:
      return "date-time";
    default:
      return "nothing";
  }
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j)
    row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

/// Builds the errors of one document; every message starts with the origin.
class context {
public:
  explicit context(std::string origin) : origin_(std::move(origin)) {
  }

  caf::error fail(const std::string& path, const std::string& what) const {
    return make_error(errc::invalid_config, fmt::format("{}: {}: {}", origin_, path, what));
  }

  caf::error wrong_type(const std::string& path, const char* want,
                        const toml::node& got) const {
    return fail(path, fmt::format("expected {}, got {}", want, type_name(got)));
  }

  caf::error rethrow(const caf::error& err) const {
    return make_error(errc::invalid_config, fmt::format("{}: {}", origin_, message_of(err)));
  }

  const std::string& origin() const {
    return origin_;
  }

private:
  std::string origin_;
};

setter string_field(const context& c, std::string& out) {
  return [&c, &out](const toml::node& n, const std::string& path) -> caf::error {
    if (!n.is_string())
      return c.wrong_type(path, "string", n);
    out = n.as_string()->get();
    return caf::none;
  };
}

setter bool_field(const context& c, bool& out) {
  return [&c, &out](const toml::node& n, const std::string& path) -> caf::error {
    if (!n.is_boolean())
      return c.wrong_type(path, "boolean", n);
    out = n.as_boolean()->get();
    return caf::none;
  };
}

caf::error read_integer(const context& c, const toml::node& n, const std::string& path,
                        int64_t lo, int64_t hi, int64_t& out) {
  if (!n.is_integer())
    return c.wrong_type(path, "integer", n);
  out = n.as_integer()->get();
  if (out < lo)
    return c.fail(path, lo == 0 ? std::string{"must not be negative"}
                                : fmt::format("must be at least {}", lo));
  if (out > hi)
    return c.fail(path, fmt::format("must be at most {}", hi));
  return caf::none;
}

setter count_field(const context& c, size_t& out) {
  return [&c, &out](const toml::node& n, const std::string& path) -> caf::error {
    int64_t v = 0;
    if (auto err = read_integer(c, n, path, 0, std::numeric_limits<int32_t>::max(), v))
      return err;
    out = static_cast<size_t>(v);
    return caf::none;
  };
}

/// A size in bytes: any non-negative 64-bit integer.
setter bytes_field(const context& c, size_t& out) {
  return [&c, &out](const toml::node& n, const std::string& path) -> caf::error {
    int64_t v = 0;
    if (auto err = read_integer(c, n, path, 0, std::numeric_limits<int64_t>::max(), v))
      return err;
    out = static_cast<size_t>(v);
    return caf::none;
  };
}

setter int_field(const context& c, int& out) {
  return [&c, &out](const toml::node& n, const std::string& path) -> caf::error {
    int64_t v = 0;
    if (auto err = read_integer(c, n, path, std::numeric_limits<int>::min(),
                                std::numeric_limits<int>::max(), v))
      return err;
    out = static_cast<int>(v);
    return caf::none;
  };
}

/// `<field>_ms` (scale 1) or `<field>_s` (scale 1000) into a millisecond field.
setter millis_field(const context& c, std::chrono::milliseconds& out, int64_t scale) {
  return [&c, &out, scale](const toml::node& n, const std::string& path) -> caf::error {
    int64_t v = 0;
    if (auto err = read_integer(c, n, path, std::numeric_limits<int64_t>::min() / 1000,
                                max_duration_s * (scale == 1 ? 1000 : 1), v))
      return err;
    out = std::chrono::milliseconds{v * scale};
    return caf::none;
  };
}

setter seconds_field(const context& c, std::chrono::seconds& out) {
  return [&c, &out](const toml::node& n, const std::string& path) -> caf::error {
    int64_t v = 0;
    if (auto err = read_integer(c, n, path, std::numeric_limits<int64_t>::min() / 1000,
                                max_duration_s, v))
      return err;
    out = std::chrono::seconds{v};
    return caf::none;
  };
}

setter strings_field(const context& c, std::vector<std::string>& out) {
  return [&c, &out](const toml::node& n, const std::string& path) -> caf::error {
    auto arr = n.as_array();
    if (!arr)
      return c.wrong_type(path, "array of strings", n);
    std::vector<std::string> items;
    for (size_t i = 0; i < arr->size(); ++i) {
      auto& item = *arr->get(i);
      if (!item.is_string())
        return c.wrong_type(fmt::format("{}[{}]", path, i), "string", item);
      items.push_back(item.as_string()->get());
    }
    out = std::move(items);
    return caf::none;
  };
}

setter env_field(const context& c, std::vector<std::pair<std::string, std::string>>& out) {
  return [&c, &out](const toml::node& n, const std::string& path) -> caf::error {
    auto tbl = n.as_table();
    if (!tbl)
      return c.wrong_type(path, "table of strings", n);
    std::vector<std::pair<std::string, std::string>> items;
    for (auto&& [k, v] : *tbl) {
      std::string key{k.str()};
      if (!v.is_string())
        return c.wrong_type(path + "." + key, "string", v);
      items.emplace_back(key, v.as_string()->get());
    }
    out = std::move(items);
    return caf::none;
  };
}

setter uint64_field(const context& c, uint64_t& out) {
  return [&c, &out](const toml::node& n, const std::string& path) -> caf::error {
    int64_t v = 0;
    if (auto err = read_integer(c, n, path, 0, std::numeric_limits<int64_t>::max(), v))
      return err;
    out = static_cast<uint64_t>(v);
    return caf::none;
  };
}

/// A number (integer or float).
setter number_field(const context& c, double& out) {
  return [&c, &out](const toml::node& n, const std::string& path) -> caf::error {
    if (n.is_floating_point())
      out = n.as_floating_point()->get();
    else if (n.is_integer())
      out = static_cast<double>(n.as_integer()->get());
    else
      return c.wrong_type(path, "number", n);
    return caf::none;
  };
}

/// An array of milliseconds (`<field>_ms = [50, 100]`).
setter millis_list_field(const context& c, std::vector<std::chrono::milliseconds>& out) {
  return [&c, &out](const toml::node& n, const std::string& path) -> caf::error {
    auto arr = n.as_array();
    if (!arr)
      return c.wrong_type(path, "array of integers", n);
    std::vector<std::chrono::milliseconds> items;
    for (size_t i = 0; i < arr->size(); ++i) {
      int64_t v = 0;
      if (auto err = read_integer(c, *arr->get(i), fmt::format("{}[{}]", path, i), 0,
                                  max_duration_s * 1000, v))
        return err;
      items.emplace_back(v);
    }
    out = std::move(items);
    return caf::none;
  };
}

/// Registers `<field>_ms` and `<field>_s` for a millisecond field.
void add_millis(key_table& keys, const context& c, const std::string& field,
                std::chrono::milliseconds& out) {
  keys[field + "_ms"] = {field, millis_field(c, out, 1)};
  keys[field + "_s"] = {field, millis_field(c, out, 1000)};
}

caf::error apply(const context& c, const toml::table& tbl, const std::string& prefix,
                 const key_table& keys) {
  std::map<std::string, std::string> seen; // field -> key that set it
  for (auto&& [k, v] : tbl) {
    std::string key{k.str()};
    auto path = prefix.empty() ? key : prefix + "." + key;
    auto it = keys.find(key);
    if (it == keys.end()) {
      std::string best;
      size_t best_dist = 3;
      for (auto& [known, spec] : keys) {
        auto d = edit_distance(key, known);
        if (d < best_dist) {
          best_dist = d;
          best = known;
        }
      }
      return c.fail(path, best.empty() ? std::string{"unknown key"}
                                       : fmt::format("unknown key (did you mean {}?)", best));
    }
    auto [pos, fresh] = seen.emplace(it->second.field, key);
    if (!fresh)
      return c.fail(path, fmt::format("conflicts with {} (give one of them)", pos->second));
    if (auto err = it->second.set(v, path))
      return err;
  }
  return caf::none;
}

key_table pool_keys(const context& c, pool_config& p) {
  key_table keys;
  keys["name"] = {"name", string_field(c, p.name)};
  keys["pool_size"] = {"pool_size", count_field(c, p.pool_size)};
  keys["adapter"] = {"adapter", string_field(c, p.adapter)};
  keys["worker_profile"] = {"worker_profile", string_field(c, p.worker_profile)};
  keys["threads_per_worker"] = {"threads_per_worker", count_field(c, p.threads_per_worker)};
  keys["affinity"] = {"affinity", string_field(c, p.affinity)};
  keys["capacity_strategy"] = {"capacity_strategy", string_field(c, p.capacity_strategy)};
  keys["adapter_args"] = {"adapter_args", strings_field(c, p.adapter_args)};
  keys["adapter_env"] = {"adapter_env", env_field(c, p.adapter_env)};
  keys["direct_dispatch"] = {"direct_dispatch", bool_field(c, p.direct_dispatch)};
  keys["max_queue_size"] = {"max_queue_size", count_field(c, p.max_queue_size)};
  keys["max_message_bytes"] = {"max_message_bytes", bytes_field(c, p.max_message_bytes)};
  add_millis(keys, c, "queue_timeout", p.queue_timeout);
  add_millis(keys, c, "request_timeout", p.request_timeout);
  keys["startup_concurrency"] = {"startup_concurrency", count_field(c, p.startup_concurrency)};
  add_millis(keys, c, "worker_ready_timeout", p.worker_ready_timeout);
  add_millis(keys, c, "graceful_shutdown_timeout", p.graceful_shutdown_timeout);
  keys["worker_max_restarts"] = {"worker_max_restarts", int_field(c, p.worker_max_restarts)};
  keys["worker_max_seconds"] = {"worker_max_seconds", seconds_field(c, p.worker_max_seconds)};
  keys["heartbeat_enabled"] = {"heartbeat_enabled", bool_field(c, p.heartbeat_enabled)};
  add_millis(keys, c, "heartbeat_interval", p.heartbeat_interval);
  add_millis(keys, c, "heartbeat_timeout", p.heartbeat_timeout);
  keys["heartbeat_max_missed"] = {"heartbeat_max_missed", int_field(c, p.heartbeat_max_missed)};
  keys["heartbeat_dependent"] = {"heartbeat_dependent", bool_field(c, p.heartbeat_dependent)};
  add_millis(keys, c, "cancel_grace", p.cancel_grace);
  add_millis(keys, c, "worker_ttl", p.worker_ttl);
  keys["worker_max_requests"] = {"worker_max_requests", uint64_field(c, p.worker_max_requests)};
  keys["max_requests_jitter"] = {"max_requests_jitter", number_field(c, p.max_requests_jitter)};
  keys["memory_threshold_mb"] = {"memory_threshold_mb", uint64_field(c, p.memory_threshold_mb)};
  add_millis(keys, c, "lifecycle_check_interval", p.lifecycle_check_interval);
  keys["taint_on"] = {"taint_on", strings_field(c, p.taint_on)};
  add_millis(keys, c, "taint_duration", p.taint_duration);
  keys["retry_max_attempts"] = {"retry_max_attempts", int_field(c, p.retry_max_attempts)};
  keys["retry_backoff_ms"] = {"retry_backoff", millis_list_field(c, p.retry_backoff)};
  keys["circuit_threshold"] = {"circuit_threshold", int_field(c, p.circuit_threshold)};
  add_millis(keys, c, "circuit_reset", p.circuit_reset);
  return keys;
}

key_table log_keys(const context& c, log_config& l) {
  key_table keys;
  keys["level"] = {"level", string_field(c, l.level)};
  keys["format"] = {"format", string_field(c, l.format)};
  keys["to_stderr"] = {"to_stderr", bool_field(c, l.to_stderr)};
  keys["file"] = {"file", string_field(c, l.file)};
  keys["capture_worker_stderr"] = {"capture_worker_stderr",
                                   bool_field(c, l.capture_worker_stderr)};
  keys["worker_stderr_level"] = {"worker_stderr_level", string_field(c, l.worker_stderr_level)};
  return keys;
}

caf::error read_pools(const context& c, const toml::node& n, std::vector<pool_config>& out) {
  auto arr = n.as_array();
  if (!arr)
    return c.fail("pools", fmt::format("expected array of tables ([[pools]]), got {}",
                                       type_name(n)));
  if (arr->empty())
    return c.fail("pools", "at least one pool is required");
  std::vector<pool_config> pools;
  std::map<std::string, size_t> names;
  for (size_t i = 0; i < arr->size(); ++i) {
    auto path = fmt::format("pools[{}]", i);
    auto& item = *arr->get(i);
    auto tbl = item.as_table();
    if (!tbl)
      return c.wrong_type(path, "table", item);
    pool_config p;
    if (auto err = apply(c, *tbl, path, pool_keys(c, p)))
      return err;
    if (!tbl->contains("adapter"))
      return c.fail(path + ".adapter", "missing (required: the adapter class, "
                                       "pkg.module.Class)");
    if (auto [pos, fresh] = names.emplace(p.name, i); !fresh)
      return c.fail(path + ".name",
                    fmt::format("duplicate pool name '{}' (also pools[{}]; give each pool "
                                "a distinct name)", p.name, pos->second));
    if (auto err = p.validate())
      return c.rethrow(err);
    pools.push_back(std::move(p));
  }
  out = std::move(pools);
  return caf::none;
}

} // namespace

caf::expected<config> parse_config(std::string_view toml_text, std::string origin) {
  context c{std::move(origin)};
  toml::table doc;
  try {
    doc = toml::parse(toml_text, c.origin());
  } catch (const toml::parse_error& err) {
    auto& where = err.source().begin;
    return make_error(errc::invalid_config,
                      fmt::format("{}:{}:{}: {}", c.origin(), where.line, where.column,
                                  err.description()));
  }
  config cfg;
  key_table keys;
  keys["python"] = {"python", string_field(c, cfg.python)};
  keys["python_path"] = {"python_path", strings_field(c, cfg.python_path)};
  keys["worker_sup_max_restarts"] = {"worker_sup_max_restarts",
                                     int_field(c, cfg.worker_sup_max_restarts)};
  keys["worker_sup_max_seconds"] = {"worker_sup_max_seconds",
                                    seconds_field(c, cfg.worker_sup_max_seconds)};
  add_millis(keys, c, "shutdown_timeout", cfg.shutdown_timeout);
  keys["check_interpreter"] = {"check_interpreter", bool_field(c, cfg.check_interpreter)};
  keys["session_ttl"] = {"session_ttl", seconds_field(c, cfg.session_ttl)};
  add_millis(keys, c, "session_sweep_interval", cfg.session_sweep_interval);
  keys["max_sessions"] = {"max_sessions", count_field(c, cfg.max_sessions)};
  keys["data_dir"] = {"data_dir", string_field(c, cfg.data_dir)};
  keys["sweep_orphans_at_start"] = {"sweep_orphans_at_start",
                                    bool_field(c, cfg.sweep_orphans_at_start)};
  keys["metrics_address"] = {"metrics_address", string_field(c, cfg.metrics_address)};
  keys["metrics_allow_remote"] = {"metrics_allow_remote",
                                  bool_field(c, cfg.metrics_allow_remote)};
  keys["control_socket"] = {"control_socket", bool_field(c, cfg.control_socket)};
  keys["pools"] = {"pools", [&c, &cfg](const toml::node& n, const std::string&) {
                     return read_pools(c, n, cfg.pools);
                   }};
  keys["log"] = {"log", [&c, &cfg](const toml::node& n, const std::string& path) {
                   auto tbl = n.as_table();
                   if (!tbl)
                     return c.wrong_type(path, "table", n);
                   return apply(c, *tbl, path, log_keys(c, cfg.log));
                 }};
  if (auto err = apply(c, doc, "", keys))
    return err;
  if (!doc.contains("pools"))
    return c.fail("pools", "missing (add at least one [[pools]] table with an adapter)");
  // Everything but the interpreter's imports (one child process, done at start).
  auto probe = cfg;
  probe.check_interpreter = false;
  if (auto err = probe.validate())
    return c.rethrow(err);
  return cfg;
}

caf::expected<config> load_config(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  if (!in)
    return make_error(errc::invalid_config,
                      fmt::format("{}: cannot read the configuration file", path));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad())
    return make_error(errc::invalid_config,
                      fmt::format("{}: error while reading the configuration file", path));
  auto cfg = parse_config(text.str(), path);
  if (!cfg)
    return cfg;
  auto dir = std::filesystem::absolute(std::filesystem::path{path}).parent_path();
  for (auto& entry : cfg->python_path)
    if (!entry.empty() && std::filesystem::path{entry}.is_relative())
      entry = (dir / entry).lexically_normal().string();
  if (auto& file = cfg->log.file; !file.empty() && std::filesystem::path{file}.is_relative())
    file = (dir / file).lexically_normal().string();
  return cfg;
}

} // namespace snakepit
