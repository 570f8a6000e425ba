#include "actors/config/config_keys.hpp"

#include <sys/stat.h>

#include <cctype>
#include <type_traits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "actors/pool/lifecycle.hpp"
#include "adapters/errors.hpp"

namespace snakepit {

// ------------------------------------------------------------------------- choices

namespace {

constexpr const char* worker_profile_names[] = {"process", "thread"};
constexpr const char* worker_kind_names[] = {"grpc", "stdio"};
constexpr const char* launch_convention_names[] = {"snakepit", "upstream"};
constexpr const char* start_method_names[] = {"auto", "spawn", "forkserver"};
constexpr const char* capacity_strategy_names[] = {"pool", "hybrid", "profile"};
constexpr const char* affinity_mode_names[] = {"hint", "strict_queue",
                                               "strict_fail_fast"};
constexpr const char* log_format_names[] = {"text", "json"};

template<class E, size_t N>
const char* name_of(E x, const char* const (&names)[N]) {
  auto i = static_cast<size_t>(x);
  return i < N ? names[i] : "?";
}

template<class E, size_t N>
std::optional<E> parse_name(std::string_view text, const char* const (&names)[N]) {
  for (size_t i = 0; i < N; ++i)
    if (text == names[i])
      return static_cast<E>(i);
  return std::nullopt;
}

template<class E, size_t N>
choice_set make_choices(const char* const (&names)[N],
                        std::optional<int> (*parse)(std::string_view)) {
  return {std::vector<const char*>(std::begin(names), std::end(names)), parse};
}

template<class E>
std::optional<int> as_index(std::optional<E> x) {
  if (!x)
    return std::nullopt;
  return static_cast<int>(*x);
}

/// The choice set of each enum a key may hold.
template<class E>
const choice_set& choices_of();

template<>
const choice_set& choices_of<worker_profile>() {
  static const choice_set set =
    make_choices<worker_profile>(worker_profile_names, [](std::string_view s) {
      return as_index(parse_worker_profile(s));
    });
  return set;
}

template<>
const choice_set& choices_of<worker_kind>() {
  static const choice_set set = make_choices<worker_kind>(
    worker_kind_names, [](std::string_view s) { return as_index(parse_worker_kind(s)); });
  return set;
}

template<>
const choice_set& choices_of<launch_convention>() {
  static const choice_set set =
    make_choices<launch_convention>(launch_convention_names, [](std::string_view s) {
      return as_index(parse_launch_convention(s));
    });
  return set;
}

template<>
const choice_set& choices_of<start_method>() {
  static const choice_set set =
    make_choices<start_method>(start_method_names, [](std::string_view s) {
      return as_index(parse_start_method(s));
    });
  return set;
}

template<>
const choice_set& choices_of<capacity_strategy>() {
  static const choice_set set =
    make_choices<capacity_strategy>(capacity_strategy_names, [](std::string_view s) {
      return as_index(parse_capacity_strategy(s));
    });
  return set;
}

template<>
const choice_set& choices_of<affinity_mode>() {
  static const choice_set set =
    make_choices<affinity_mode>(affinity_mode_names, [](std::string_view s) {
      return as_index(parse_affinity_mode(s));
    });
  return set;
}

template<>
const choice_set& choices_of<adapters::log_level>() {
  // The log's own parser: it also takes "warning".
  static const choice_set set = [] {
    choice_set out;
    for (int i = 0; i <= static_cast<int>(adapters::log_level::off); ++i)
      out.names.push_back(adapters::to_string(static_cast<adapters::log_level>(i)));
    out.parse = [](std::string_view s) { return as_index(adapters::parse_log_level(s)); };
    return out;
  }();
  return set;
}

template<>
const choice_set& choices_of<adapters::log_format>() {
  static const choice_set set =
    make_choices<adapters::log_format>(log_format_names, [](std::string_view s) {
      return as_index(adapters::parse_log_format(s));
    });
  return set;
}

} // namespace

const char* to_string(worker_profile x) {
  return name_of(x, worker_profile_names);
}

const char* to_string(capacity_strategy x) {
  return name_of(x, capacity_strategy_names);
}

const char* to_string(affinity_mode x) {
  return name_of(x, affinity_mode_names);
}

const char* to_string(worker_kind x) {
  return name_of(x, worker_kind_names);
}

std::optional<worker_kind> parse_worker_kind(std::string_view name) {
  return parse_name<worker_kind>(name, worker_kind_names);
}

const char* to_string(launch_convention x) {
  return name_of(x, launch_convention_names);
}

std::optional<launch_convention> parse_launch_convention(std::string_view name) {
  return parse_name<launch_convention>(name, launch_convention_names);
}

const char* to_string(start_method x) {
  return name_of(x, start_method_names);
}

std::optional<start_method> parse_start_method(std::string_view name) {
  return parse_name<start_method>(name, start_method_names);
}

std::optional<worker_profile> parse_worker_profile(std::string_view name) {
  return parse_name<worker_profile>(name, worker_profile_names);
}

std::optional<capacity_strategy> parse_capacity_strategy(std::string_view name) {
  return parse_name<capacity_strategy>(name, capacity_strategy_names);
}

std::optional<affinity_mode> parse_affinity_mode(std::string_view name) {
  return parse_name<affinity_mode>(name, affinity_mode_names);
}

std::string describe_choices(const choice_set& choices) {
  auto& n = choices.names;
  if (n.size() == 2)
    return fmt::format("is neither \"{}\" nor \"{}\"", n[0], n[1]);
  std::string out = "is not ";
  for (size_t i = 0; i < n.size(); ++i) {
    if (i > 0)
      out += i + 1 == n.size() ? " or " : ", ";
    out += n[i];
  }
  return out;
}

bool is_valid_pool_name(std::string_view name) {
  if (name.empty() || name.size() > 64)
    return false;
  for (char c : name)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.'))
      return false;
  return true;
}

// ----------------------------------------------------------------- building a key

namespace {

template<class S>
S& follow(S& s) {
  return s;
}

template<class S, class M, class... Ms>
auto& follow(S& s, M member, Ms... rest) {
  return follow(s.*member, rest...);
}

/// The field `s.*M1.*M2...`: one path of member pointers reaches nested fields.
template<auto... Ms>
struct member_path {
  template<class S>
  static auto& at(S& s) {
    return follow(s, Ms...);
  }
};

template<class M>
struct owner_of;

template<class C, class T>
struct owner_of<T C::*> {
  using type = C;
};

template<class S, class T, class Path>
key_field<S> field_of() {
  if constexpr (std::is_enum_v<T>) {
    return choice_ref<S>{[](const S& s) { return static_cast<int>(Path::at(s)); },
                         [](S& s, int v) { Path::at(s) = static_cast<T>(v); },
                         &choices_of<T>()};
  } else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    // Counts stop at 2^31-1 in a file; wide() lifts that for byte sizes and such.
    using limits =
      std::numeric_limits<std::conditional_t<std::is_signed_v<T>, T, int32_t>>;
    constexpr int64_t lo = std::is_signed_v<T> ? int64_t{limits::min()} : 0;
    constexpr int64_t hi = limits::max();
    return integer_ref<S>{[](const S& s) { return static_cast<int64_t>(Path::at(s)); },
                          [](S& s, int64_t v) { Path::at(s) = static_cast<T>(v); }, lo,
                          hi};
  } else {
    // Lambdas, not &Path::template at<S>: clang does not deduce the `auto&` of a
    // function template's address from the pointer type (tests/fuzz builds with it).
    return field_ref<S, T>{[](S& s) -> T& { return Path::at(s); },
                           [](const S& s) -> const T& { return Path::at(s); }};
  }
}

/// A key under construction: `key<&pool_config::queue, &pool_queue::timeout>(...)`
/// followed by its checks.
template<class S>
struct key_builder {
  config_key<S> k;

  operator config_key<S>() const { return k; }
  key_builder at_least(int64_t n) {
    k.min = n;
    k.min_why = fmt::format("must be at least {}", n);
    return *this;
  }
  key_builder at_most(int64_t n) {
    k.max = n;
    k.max_why = fmt::format("must be at most {}", n);
    return *this;
  }
  key_builder between(int64_t lo, int64_t hi) {
    k.min = lo;
    k.max = hi;
    k.min_why = k.max_why = fmt::format("must be between {} and {}", lo, hi);
    return *this;
  }
  key_builder positive() {
    k.min = 1;
    k.min_why = "must be positive";
    return *this;
  }
  /// `meaning_of_zero`, if given, is added in parentheses ("0: no TTL").
  key_builder non_negative(const char* meaning_of_zero = nullptr) {
    k.min = 0;
    k.min_why = meaning_of_zero
                  ? fmt::format("must not be negative ({})", meaning_of_zero)
                  : std::string{"must not be negative"};
    return *this;
  }
  /// A file may write any non-negative 64-bit integer.
  key_builder wide() {
    std::get<integer_ref<S>>(k.field).hi = std::numeric_limits<int64_t>::max();
    return *this;
  }
  key_builder when(bool (*applies)(const S&)) {
    k.applies = applies;
    return *this;
  }
  key_builder check(std::string (*fn)(const S&)) {
    k.check = fn;
    return *this;
  }
};

template<auto M, auto... Ms>
auto key(const char* name, const char* what) {
  using S = typename owner_of<decltype(M)>::type;
  using path = member_path<M, Ms...>;
  using T = std::remove_reference_t<decltype(path::at(std::declval<S&>()))>;
  return key_builder<S>{config_key<S>{name, field_of<S, T, path>(), what}};
}

// ------------------------------------------------------------ checks of the whole

std::string check_pool_name(const pool_config& p) {
  if (is_valid_pool_name(p.name))
    return "";
  return fmt::format("'{}' must be 1-64 characters of [A-Za-z0-9_.-]", p.name);
}

std::string check_adapter(const pool_config& p) {
  if (!p.bundled_python() ||
      (!p.adapter.empty() && p.adapter.find('.') != std::string::npos))
    return "";
  return fmt::format("'{}' is not of the form pkg.module.Class", p.adapter);
}

std::string check_adapter_env(const pool_config& p) {
  for (auto& [k, v] : p.adapter_env)
    if (k.empty() || k.find('=') != std::string::npos)
      return fmt::format("'{}' is not a valid variable name", k);
  return "";
}

std::string check_command(const pool_config& p) {
  for (auto& arg : p.command)
    if (arg.empty())
      return "has an empty element (the first is the program, the rest its arguments)";
  return "";
}

/// The gRPC channels (the host's client and the Python server) carry at most 100 MiB:
/// a larger limit would let requests through that the channel then refuses.
std::string check_grpc_message_limit(const pool_config& p) {
  constexpr size_t grpc_limit = size_t{100} << 20;
  if (p.kind != worker_kind::grpc || p.max_message_bytes <= grpc_limit)
    return "";
  return fmt::format("at most {} for kind = \"grpc\" (the limit of its gRPC channel)",
                     grpc_limit);
}

std::string check_cwd(const pool_config& p) {
  struct stat st;
  if (p.cwd.empty() || (::stat(p.cwd.c_str(), &st) == 0 && S_ISDIR(st.st_mode)))
    return "";
  return fmt::format("'{}' is not a directory", p.cwd);
}

std::string check_adapter_config(const pool_config& p) {
  auto doc = nlohmann::json::parse(p.adapter_config, nullptr, false);
  if (doc.is_discarded() || !doc.is_object())
    return fmt::format("'{}' is not a JSON object", p.adapter_config);
  return "";
}

std::string check_jitter(const pool_config& p) {
  auto j = p.recycling.requests_jitter;
  return j >= 0 && j < 1 ? "" : "must be in [0, 1)";
}

std::string check_taint_causes(const pool_config& p) {
  for (auto& cause : p.taint.causes)
    if (!actors::is_crash_cause(cause))
      return fmt::format(
        "'{}' is not segfault, abort, bus_error, illegal_instruction, fpe, "
        "killed or exit_<code>",
        cause);
  return "";
}

std::string check_backoff(const pool_config& p) {
  if (p.retry.max_attempts > 0 && p.retry.backoff.empty())
    return "needs at least one delay when retries are on";
  for (auto& d : p.retry.backoff)
    if (d.count() < 0)
      return "delays must not be negative";
  return "";
}

bool thread_profile(const pool_config& p) {
  return p.worker_profile == worker_profile::thread;
}

bool heartbeat_on(const pool_config& p) {
  return p.heartbeat.enabled;
}

/// "host:port" with a loopback host unless remote exposure is asked for.
std::string check_metrics_address(const config& cfg) {
  auto& address = cfg.metrics.address;
  if (address.empty())
    return "";
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size())
    return fmt::format("'{}' is not host:port", address);
  auto host = address.substr(0, colon);
  auto port = address.substr(colon + 1);
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(port) > 65535)
    return fmt::format("'{}' has no valid port (0..65535)", address);
  if (host.front() == '[') {
    if (host.back() != ']' || host.size() < 3)
      return fmt::format("'{}': unbalanced [ ]", address);
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string::npos) {
    return fmt::format("'{}': write IPv6 hosts as [addr]:port", address);
  }
  bool loopback = host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
  if (!loopback && !cfg.metrics.allow_remote)
    return fmt::format(
      "'{}' is not a loopback address; set metrics_allow_remote = true to "
      "serve metrics on it",
      host);
  return "";
}

/// "host:port" with a port above 0 (a node to connect to).
std::string check_node_address(const node_config& n) {
  auto colon = n.address.rfind(':');
  if (n.address.empty())
    return "missing (the \"host:port\" the node listens on)";
  if (colon == std::string::npos || colon == 0 || colon + 1 == n.address.size())
    return fmt::format("'{}' is not host:port", n.address);
  auto port = n.address.substr(colon + 1);
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(port) == 0 || std::stoul(port) > 65535)
    return fmt::format("'{}' has no valid port (1..65535)", n.address);
  return "";
}

/// Empty, or the charset of a pool name.
std::string check_node_name(const node_config& n) {
  if (n.name.empty() || is_valid_pool_name(n.name))
    return "";
  return fmt::format("'{}': 1-64 characters of [A-Za-z0-9_.-]", n.name);
}

} // namespace

// ---------------------------------------------------------------------- the tables

const std::vector<config_key<config>>& config_keys() {
  using c = config;
  static const std::vector<config_key<config>> keys = {
    key<&c::python>("python", "interpreter that has grpcio and protobuf"),
    key<&c::python_path>("python_path",
                         "PYTHONPATH entries for workers; empty: this build's"),
    key<&c::worker_sup, &restart_intensity::max_restarts>(
      "worker_sup_max_restarts", "restart intensity of the dynamic worker supervisor")
      .non_negative(),
    key<&c::worker_sup, &restart_intensity::max_seconds>("worker_sup_max_seconds",
                                                         "its period, in seconds")
      .positive(),
    key<&c::sessions, &session_limits::ttl>(
      "session_ttl", "idle seconds after which a session is removed")
      .positive(),
    key<&c::sessions, &session_limits::sweep_interval>(
      "session_sweep_interval", "how often expired sessions are swept")
      .positive(),
    key<&c::sessions, &session_limits::max>("max_sessions", "the most sessions at once")
      .at_least(1),
    key<&c::shutdown_timeout>("shutdown_timeout",
                              "deadline of an orderly stop before processes are killed")
      .positive(),
    key<&c::check_interpreter>("check_interpreter",
                               "check at start that the interpreter can import grpc"),
    key<&c::data_dir>("data_dir",
                      "where the process registry lives; empty: the XDG state dir"),
    key<&c::sweep_orphans_at_start>("sweep_orphans_at_start",
                                    "kill what earlier dead runs left behind"),
    key<&c::metrics, &metrics_endpoint::address>("metrics_address",
                                                 "host:port of GET /metrics; empty: off")
      .check(check_metrics_address),
    key<&c::metrics, &metrics_endpoint::allow_remote>(
      "metrics_allow_remote", "allow metrics_address on a non-loopback interface"),
    key<&c::control_socket>("control_socket",
                            "serve JSON stats on <runtime dir>/control.sock"),
    key<&c::release_memory_interval>(
      "release_memory_interval",
      "how often free allocator memory goes back to the system; 0: never")
      .non_negative(),
    key<&c::malloc_arena_max>("malloc_arena_max",
                              "cap on glibc malloc arenas for the process; 0: default")
      .non_negative(),
    key<&c::node_connect_timeout>("node_connect_timeout",
                                  "budget of one connection attempt to a node")
      .positive(),
    key<&c::node_heartbeat>("node_heartbeat", "BASP heartbeat interval between nodes")
      .positive(),
    key<&c::node_timeout>("node_timeout",
                          "a node connection silent this long counts as lost")
      .positive(),
    key<&c::node_allow_insecure>(
      "node_allow_insecure", "as a node, listen on a non-loopback address without TLS"),
  };
  return keys;
}

const std::vector<config_key<node_config>>& node_keys() {
  using n = node_config;
  static const std::vector<config_key<node_config>> keys = {
    key<&n::name>("name", "the node's name in stats, logs and errors; empty: address")
      .check(check_node_name),
    key<&n::address>("address", "host:port the node listens on")
      .check(check_node_address),
  };
  return keys;
}

const std::vector<config_key<tls_config>>& tls_keys() {
  using t = tls_config;
  static const std::vector<config_key<tls_config>> keys = {
    key<&t::certificate>("certificate", "PEM certificate this process presents"),
    key<&t::key>("key", "its PEM private key"),
    key<&t::ca>("ca", "PEM CA file a peer's certificate must be signed by"),
    key<&t::passphrase>("passphrase", "passphrase of an encrypted key; empty: none"),
  };
  return keys;
}

const std::vector<config_key<log_config>>& log_keys() {
  using l = log_config;
  static const std::vector<config_key<log_config>> keys = {
    key<&l::level>("level", "lowest level written"),
    key<&l::format>("format", "shape of a line"),
    key<&l::to_stderr>("to_stderr", "write lines to the host's stderr"),
    key<&l::file>("file", "also append lines to this file; empty: none"),
    key<&l::capture_worker_stderr>("capture_worker_stderr",
                                   "log each worker's stderr line by line"),
    key<&l::worker_stderr_level>(
      "worker_stderr_level", "level of captured lines that are no Python log records"),
  };
  return keys;
}

namespace {

/// The pool's identity, profile and heartbeat keys.
std::vector<config_key<pool_config>> pool_worker_keys() {
  using p = pool_config;
  return {
    key<&p::name>("name", "pool name used for routing").check(check_pool_name),
    key<&p::pool_size>("pool_size", "number of worker processes")
      .at_least(1)
      .at_most(1024),
    key<&p::kind>("kind", "how the host talks to the workers (docs/workers.md)"),
    key<&p::launch>("launch", "how a gRPC worker is launched and found: snakepit "
                              "(unix socket) or upstream (--port 0, ready file with "
                              "the port)"),
    key<&p::start_method>("start_method",
                          "how worker processes start: auto, spawn, or forkserver "
                          "(copies of a template that imported grpc once)"),
    key<&p::command>("command", "the worker program and its arguments; empty: the "
                                "bundled Python bridge of the kind")
      .check(check_command),
    key<&p::cwd>("cwd", "working directory of the workers; empty: the host's")
      .check(check_cwd),
    key<&p::adapter>("adapter", "adapter class of the bundled Python bridge, "
                                "pkg.module.Class")
      .check(check_adapter),
    key<&p::adapter_config>("adapter_config",
                            "the adapter's settings, a table (or JSON object text) "
                            "every worker gets at start")
      .check(check_adapter_config),
    key<&p::worker_profile>("worker_profile", "requests one worker runs at once"),
    key<&p::capacity_strategy>("capacity_strategy", "who schedules by capacity"),
    key<&p::threads_per_worker>("threads_per_worker",
                                "concurrent requests per worker under the thread profile")
      .between(1, 1024)
      .when(thread_profile),
    key<&p::affinity>("affinity", "session affinity of calls that name no mode"),
    key<&p::heartbeat, &pool_heartbeat::enabled>("heartbeat_enabled",
                                                 "ping each worker's process"),
    key<&p::heartbeat, &pool_heartbeat::interval>("heartbeat_interval",
                                                  "time between pings")
      .positive()
      .when(heartbeat_on),
    key<&p::heartbeat, &pool_heartbeat::timeout>("heartbeat_timeout",
                                                 "a ping unanswered this long is missed")
      .positive()
      .when(heartbeat_on),
    key<&p::heartbeat, &pool_heartbeat::max_missed>(
      "heartbeat_max_missed", "misses in a row that kill a dependent worker's process")
      .at_least(1)
      .when(heartbeat_on),
    key<&p::heartbeat, &pool_heartbeat::dependent>(
      "heartbeat_dependent", "kill the process after max_missed misses (false: report)"),
  };
}

/// The pool's queueing, start, stop, recycling, crash and dispatch keys.
std::vector<config_key<pool_config>> pool_policy_keys() {
  using p = pool_config;
  return {
    key<&p::max_message_bytes>("max_message_bytes", "largest request payload in bytes")
      .wide()
      .at_least(1024)
      .check(check_grpc_message_limit),
    key<&p::input, &pool_input_limits::max_command_bytes>(
      "max_command_bytes", "longest command (tool) name in bytes")
      .between(1, 65536),
    key<&p::input, &pool_input_limits::max_arg_keys>(
      "max_arg_keys", "most keys at the top level of a call's arguments")
      .at_least(1),
    key<&p::input, &pool_input_limits::max_arg_depth>(
      "max_arg_depth", "deepest nesting of objects and arrays in a call's arguments")
      .between(1, 512),
    key<&p::input, &pool_input_limits::max_arg_values>(
      "max_arg_values",
      "most JSON values in a call's arguments, all levels (0: no limit)")
      .wide(),
    key<&p::queue, &pool_queue::max_size>("max_queue_size",
                                          "queued requests beyond which calls fail"),
    key<&p::queue, &pool_queue::timeout>("queue_timeout",
                                         "how long a request may wait in the queue")
      .positive(),
    key<&p::request_timeout>("request_timeout",
                             "a call's budget when the caller gives none")
      .positive(),
    key<&p::startup, &pool_startup::concurrency>("startup_concurrency",
                                                 "workers started concurrently")
      .at_least(1),
    key<&p::startup, &pool_startup::ready_timeout>(
      "worker_ready_timeout", "budget for one worker to become ready")
      .positive(),
    key<&p::graceful_shutdown_timeout>("graceful_shutdown_timeout",
                                       "SIGTERM grace period before SIGKILL")
      .non_negative(),
    key<&p::restart, &restart_intensity::max_restarts>(
      "worker_max_restarts", "restart intensity of each worker_starter")
      .non_negative(),
    key<&p::restart, &restart_intensity::max_seconds>("worker_max_seconds",
                                                      "its period, in seconds")
      .positive(),
    key<&p::cancel_grace>(
      "cancel_grace", "a cancelled sync tool still running this long restarts its worker")
      .non_negative("0: never restart"),
    key<&p::recycling, &pool_recycling::ttl>(
      "worker_ttl", "a worker is replaced this long after it started")
      .non_negative("0: no TTL"),
    key<&p::recycling, &pool_recycling::max_requests>(
      "worker_max_requests", "a worker is replaced after this many requests (0: never)")
      .wide(),
    key<&p::recycling, &pool_recycling::requests_jitter>(
      "max_requests_jitter", "spread of each worker's request limit, in [0, 1)")
      .check(check_jitter),
    key<&p::recycling, &pool_recycling::max_memory_mb>(
      "memory_threshold_mb",
      "a worker whose Python RSS exceeds this is replaced (0: never)")
      .wide(),
    key<&p::recycling, &pool_recycling::check_interval>(
      "lifecycle_check_interval", "how often TTL and memory are checked")
      .positive(),
    key<&p::taint, &pool_taint::causes>("taint_on", "exit causes that taint a worker")
      .check(check_taint_causes),
    key<&p::taint, &pool_taint::duration>("taint_duration",
                                          "how long a restarted worker stays tainted")
      .non_negative(),
    key<&p::retry, &pool_retry::max_attempts>("retry_max_attempts",
                                              "further attempts of an idempotent call")
      .between(0, 10),
    key<&p::retry, &pool_retry::backoff>("retry_backoff", "delay before each retry")
      .check(check_backoff),
    key<&p::circuit, &pool_circuit::threshold>(
      "circuit_threshold", "failed starts in a row that open the circuit")
      .non_negative("0: no breaker"),
    key<&p::circuit, &pool_circuit::call_failures>(
      "circuit_call_failures",
      "calls in a row ending in worker_crashed or timeout that open the circuit; 0: off")
      .at_least(0),
    key<&p::circuit, &pool_circuit::reset>("circuit_reset",
                                           "time until the half-open probe")
      .positive(),
    key<&p::adapter_args>("adapter_args", "extra command-line arguments for the worker"),
    key<&p::adapter_env>("adapter_env", "extra environment for the worker")
      .check(check_adapter_env),
    key<&p::adapter_env>("env", "extra environment for the worker (adapter_env's "
                                "other name)"),
    key<&p::direct_dispatch>("direct_dispatch",
                             "blocking callers may run a call on their own thread"),
  };
}

} // namespace

const std::vector<config_key<pool_config>>& pool_keys() {
  static const std::vector<config_key<pool_config>> keys = [] {
    auto all = pool_worker_keys();
    auto rest = pool_policy_keys();
    all.insert(all.end(), std::make_move_iterator(rest.begin()),
               std::make_move_iterator(rest.end()));
    return all;
  }();
  return keys;
}

// ------------------------------------------------------------------ using a table

template<class S>
std::vector<std::string> file_names(const config_key<S>& key) {
  std::string name = key.name;
  if (std::holds_alternative<field_ref<S, std::chrono::milliseconds>>(key.field))
    return {name + "_ms", name + "_s"};
  if (std::holds_alternative<field_ref<S, std::vector<std::chrono::milliseconds>>>(
        key.field))
    return {name + "_ms"};
  return {name};
}

namespace {

/// The value the range of `key` applies to, if it has one (integers, durations).
template<class S>
std::optional<int64_t> ranged_value(const S& s, const config_key<S>& key) {
  if (auto f = std::get_if<integer_ref<S>>(&key.field))
    return f->read(s);
  if (auto f = std::get_if<field_ref<S, std::chrono::milliseconds>>(&key.field))
    return f->read(s).count();
  if (auto f = std::get_if<field_ref<S, std::chrono::seconds>>(&key.field))
    return f->read(s).count();
  return std::nullopt;
}

template<class S>
std::string problem_of(const S& s, const config_key<S>& key) {
  if (key.applies && !key.applies(s))
    return "";
  if (auto f = std::get_if<choice_ref<S>>(&key.field)) {
    auto i = f->read(s);
    if (i < 0 || static_cast<size_t>(i) >= f->choices->names.size())
      return fmt::format("'{}' {}", i, describe_choices(*f->choices));
  }
  if (auto v = ranged_value(s, key)) {
    if (*v < key.min)
      return key.min_why;
    if (*v > key.max)
      return key.max_why;
  }
  return key.check ? key.check(s) : "";
}

} // namespace

template<class S>
caf::error validate_keys(const S& s, const std::vector<config_key<S>>& keys,
                         const std::string& prefix) {
  for (auto& key : keys)
    if (auto why = problem_of(s, key); !why.empty())
      return caf::make_error(errc::invalid_config,
                             fmt::format("{}{}: {}", prefix, key.name, why));
  return caf::none;
}

template std::vector<std::string> file_names(const config_key<config>&);
template std::vector<std::string> file_names(const config_key<log_config>&);
template std::vector<std::string> file_names(const config_key<pool_config>&);
template std::vector<std::string> file_names(const config_key<node_config>&);
template std::vector<std::string> file_names(const config_key<tls_config>&);
template caf::error validate_keys(const config&, const std::vector<config_key<config>>&,
                                  const std::string&);
template caf::error validate_keys(const log_config&,
                                  const std::vector<config_key<log_config>>&,
                                  const std::string&);
template caf::error validate_keys(const node_config&,
                                  const std::vector<config_key<node_config>>&,
                                  const std::string&);
template caf::error validate_keys(const tls_config&,
                                  const std::vector<config_key<tls_config>>&,
                                  const std::string&);
template caf::error validate_keys(const pool_config&,
                                  const std::vector<config_key<pool_config>>&,
                                  const std::string&);

} // namespace snakepit
