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
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "actors/config/config_keys.hpp"
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
      row[j] =
        std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

/// Builds the errors of one document; every message starts with the origin.
class context {
 public:
  explicit context(std::string origin) : origin_(std::move(origin)) {}

  caf::error fail(const std::string& path, const std::string& what) const {
    return make_error(errc::invalid_config,
                      fmt::format("{}: {}: {}", origin_, path, what));
  }

  caf::error wrong_type(const std::string& path, const char* want,
                        const toml::node& got) const {
    return fail(path, fmt::format("expected {}, got {}", want, type_name(got)));
  }

  caf::error rethrow(const caf::error& err) const {
    return make_error(errc::invalid_config,
                      fmt::format("{}: {}", origin_, message_of(err)));
  }

  const std::string& origin() const { return origin_; }

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

setter env_field(const context& c,
                 std::vector<std::pair<std::string, std::string>>& out) {
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
      return c.fail(path, best.empty()
                            ? std::string{"unknown key"}
                            : fmt::format("unknown key (did you mean {}?)", best));
    }
    auto [pos, fresh] = seen.emplace(it->second.field, key);
    if (!fresh)
      return c.fail(path,
                    fmt::format("conflicts with {} (give one of them)", pos->second));
    if (auto err = it->second.set(v, path))
      return err;
  }
  return caf::none;
}

/// An integer of the width of its field, within what a file may write.
template<class S>
setter integer_field(const context& c, const integer_ref<S>& f, S& out) {
  return [&c, f, &out](const toml::node& n, const std::string& path) -> caf::error {
    int64_t v = 0;
    if (auto err = read_integer(c, n, path, f.lo, f.hi, v))
      return err;
    f.set(out, v);
    return caf::none;
  };
}

/// One of the names of a choice (an enum); a bad one is refused here, with the names.
template<class S>
setter choice_field(const context& c, const choice_ref<S>& f, S& out) {
  return [&c, f, &out](const toml::node& n, const std::string& path) -> caf::error {
    if (!n.is_string())
      return c.wrong_type(path, "string", n);
    auto& text = n.as_string()->get();
    auto v = f.choices->parse(text);
    if (!v)
      return c.fail(path, fmt::format("'{}' {}", text, describe_choices(*f.choices)));
    f.set(out, *v);
    return caf::none;
  };
}

/// Registers the spellings of `key` (config_keys.hpp) as setters of `out`'s field.
template<class S>
void add_key(key_table& keys, const context& c, const config_key<S>& key, S& out) {
  std::string name = key.name;
  std::visit(
    [&](const auto& f) {
      using F = std::decay_t<decltype(f)>;
      if constexpr (std::is_same_v<F, field_ref<S, std::string>>)
        keys[name] = {name, string_field(c, f.get(out))};
      else if constexpr (std::is_same_v<F, field_ref<S, bool>>)
        keys[name] = {name, bool_field(c, f.get(out))};
      else if constexpr (std::is_same_v<F, integer_ref<S>>)
        keys[name] = {name, integer_field(c, f, out)};
      else if constexpr (std::is_same_v<F, field_ref<S, double>>)
        keys[name] = {name, number_field(c, f.get(out))};
      else if constexpr (std::is_same_v<F, field_ref<S, std::chrono::milliseconds>>)
        add_millis(keys, c, name, f.get(out));
      else if constexpr (std::is_same_v<F, field_ref<S, std::chrono::seconds>>)
        keys[name] = {name, seconds_field(c, f.get(out))};
      else if constexpr (std::is_same_v<F, field_ref<S, std::vector<std::string>>>)
        keys[name] = {name, strings_field(c, f.get(out))};
      else if constexpr (std::is_same_v<F, field_ref<S, env_list>>)
        keys[name] = {name, env_field(c, f.get(out))};
      else if constexpr (std::is_same_v<
                           F, field_ref<S, std::vector<std::chrono::milliseconds>>>)
        keys[name + "_ms"] = {name, millis_list_field(c, f.get(out))};
      else
        keys[name] = {name, choice_field(c, f, out)};
    },
    key.field);
}

/// The setters of every key of `table` for the struct `out`.
template<class S>
key_table keys_of(const context& c, const std::vector<config_key<S>>& table, S& out) {
  key_table keys;
  for (auto& key : table)
    add_key(keys, c, key, out);
  return keys;
}

caf::error read_pools(const context& c, const toml::node& n,
                      std::vector<pool_config>& out) {
  auto arr = n.as_array();
  if (!arr)
    return c.fail(
      "pools", fmt::format("expected array of tables ([[pools]]), got {}", type_name(n)));
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
    // adapter_config is written as a table; the struct keeps it as JSON text.
    auto pool_tbl = *tbl;
    if (auto* ac = pool_tbl.get("adapter_config"); ac && ac->is_table()) {
      std::ostringstream os;
      os << toml::json_formatter{*ac->as_table()};
      pool_tbl.insert_or_assign("adapter_config", os.str());
    }
    if (pool_tbl.contains("env") && pool_tbl.contains("adapter_env"))
      return c.fail(path + ".env", "conflicts with adapter_env (give one of them)");
    if (auto err = apply(c, pool_tbl, path, keys_of(c, pool_keys(), p)))
      return err;
    if (!tbl->contains("adapter") && p.bundled_python())
      return c.fail(path + ".adapter", "missing (required for the bundled Python "
                                       "bridge: the adapter class, pkg.module.Class; "
                                       "or give the worker's command)");
    if (auto [pos, fresh] = names.emplace(p.name, i); !fresh)
      return c.fail(
        path + ".name",
        fmt::format("duplicate pool name '{}' (also pools[{}]; give each pool "
                    "a distinct name)",
                    p.name, pos->second));
    if (auto err = p.validate())
      return c.rethrow(err);
    pools.push_back(std::move(p));
  }
  out = std::move(pools);
  return caf::none;
}

caf::error read_nodes(const context& c, const toml::node& n,
                      std::vector<node_config>& out) {
  auto arr = n.as_array();
  if (!arr)
    return c.fail(
      "nodes", fmt::format("expected array of tables ([[nodes]]), got {}", type_name(n)));
  std::vector<node_config> nodes;
  for (size_t i = 0; i < arr->size(); ++i) {
    auto path = fmt::format("nodes[{}]", i);
    auto& item = *arr->get(i);
    auto tbl = item.as_table();
    if (!tbl)
      return c.wrong_type(path, "table", item);
    node_config node;
    if (auto err = apply(c, *tbl, path, keys_of(c, node_keys(), node)))
      return err;
    nodes.push_back(std::move(node));
  }
  out = std::move(nodes);
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
  auto keys = keys_of(c, config_keys(), cfg);
  keys["pools"] = {"pools", [&c, &cfg](const toml::node& n, const std::string&) {
                     return read_pools(c, n, cfg.pools);
                   }};
  keys["nodes"] = {"nodes", [&c, &cfg](const toml::node& n, const std::string&) {
                     return read_nodes(c, n, cfg.nodes);
                   }};
  keys["tls"] = {"tls", [&c, &cfg](const toml::node& n, const std::string& path) {
                   auto tbl = n.as_table();
                   if (!tbl)
                     return c.wrong_type(path, "table", n);
                   return apply(c, *tbl, path, keys_of(c, tls_keys(), cfg.tls));
                 }};
  keys["log"] = {"log", [&c, &cfg](const toml::node& n, const std::string& path) {
                   auto tbl = n.as_table();
                   if (!tbl)
                     return c.wrong_type(path, "table", n);
                   return apply(c, *tbl, path, keys_of(c, log_keys(), cfg.log));
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
    return make_error(
      errc::invalid_config,
      fmt::format("{}: error while reading the configuration file", path));
  auto cfg = parse_config(text.str(), path);
  if (!cfg)
    return cfg;
  auto dir = std::filesystem::absolute(std::filesystem::path{path}).parent_path();
  for (auto& entry : cfg->python_path)
    if (!entry.empty() && std::filesystem::path{entry}.is_relative())
      entry = (dir / entry).lexically_normal().string();
  for (auto* file : {&cfg->log.file, &cfg->tls.certificate, &cfg->tls.key, &cfg->tls.ca})
    if (!file->empty() && std::filesystem::path{*file}.is_relative())
      *file = (dir / *file).lexically_normal().string();
  return cfg;
}

} // namespace snakepit
