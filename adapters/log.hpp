// The library's structured log (Elixir's Logger with metadata): one `snakepit` logger
// per runtime on top of spdlog, with levels, a text or JSON line format and structured
// fields (pool, worker_id, correlation_id, ...) on every line. spdlog stays out of this
// header: hosts that want to add their own spdlog sink forward-declare it too.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <caf/expected.hpp>

namespace spdlog {
class logger;
namespace sinks {
class sink;
} // namespace sinks
} // namespace spdlog

namespace snakepit::adapters {

/// The fields of a line: a JSON object whose keys keep their insertion order.
using log_fields = nlohmann::ordered_json;

/// Severity, lowest first; `off` disables the log.
enum class log_level { trace, debug, info, warn, error, critical, off };

/// Shape of a log line.
enum class log_format {
  /// `<ts> <level> snakepit: <msg> key=value ...` (values with spaces are quoted).
  text,
  /// One JSON object per line: ts, level, logger, msg, then the fields.
  json,
};

/// "trace", "debug", "info", "warn" (also "warning"), "error", "critical", "off";
/// nullopt for anything else.
std::optional<log_level> parse_log_level(std::string_view name);

/// "text" or "json"; nullopt for anything else.
std::optional<log_format> parse_log_format(std::string_view name);

/// The canonical name of a level ("warn", not "warning").
const char* to_string(log_level lvl);

/// The current time, UTC with millisecond precision: 2026-11-23T18:37:51.123Z (the
/// timestamps of log lines and of stdio request frames).
std::string utc_now();

/// Where and how a logger writes.
struct log_options {
  /// Lines below this level are dropped before they are formatted.
  log_level level = log_level::warn;
  log_format format = log_format::text;
  /// Write to the host's stderr.
  bool to_stderr = true;
  /// Also append to this file (created if missing); empty = no file.
  std::string file;
  /// Further sinks of the host. They receive the finished line as the message
  /// (`%v`) and keep their own pattern; thread-safe (`_mt`) sinks are the host's duty.
  std::vector<std::shared_ptr<spdlog::sinks::sink>> sinks;
};

/// A thread-safe structured logger. Fields are a JSON object; in the text format they
/// are rendered as `key=value` after the message.
class logger {
 public:
  /// Opens the sinks; fails with errc::invalid_config naming the file that cannot be
  /// opened.
  static caf::expected<std::shared_ptr<logger>> create(log_options opts);

  /// A logger that drops everything (for components started without a runtime).
  static std::shared_ptr<logger> null();

  ~logger();
  logger(const logger&) = delete;
  logger& operator=(const logger&) = delete;

  /// Whether a line at `lvl` would be written (one atomic load); check it before
  /// building fields on hot paths.
  bool enabled(log_level lvl) const noexcept {
    return lvl != log_level::off && lvl >= level_.load(std::memory_order_relaxed);
  }

  /// Writes one line (no-op when `lvl` is not enabled). `fields` must be an object
  /// (anything else is ignored); invalid UTF-8 in strings is replaced, never thrown.
  void log(log_level lvl, std::string_view msg,
           const log_fields& fields = log_fields::object());

  void trace(std::string_view msg, const log_fields& fields = log_fields::object()) {
    log(log_level::trace, msg, fields);
  }
  void debug(std::string_view msg, const log_fields& fields = log_fields::object()) {
    log(log_level::debug, msg, fields);
  }
  void info(std::string_view msg, const log_fields& fields = log_fields::object()) {
    log(log_level::info, msg, fields);
  }
  void warn(std::string_view msg, const log_fields& fields = log_fields::object()) {
    log(log_level::warn, msg, fields);
  }
  void error(std::string_view msg, const log_fields& fields = log_fields::object()) {
    log(log_level::error, msg, fields);
  }

  /// The current level.
  log_level level() const noexcept { return level_.load(std::memory_order_relaxed); }

  /// Changes the level at run time.
  void set_level(log_level lvl) noexcept;

  /// The line format.
  log_format format() const noexcept { return format_; }

  /// Flushes every sink.
  void flush();

  /// Renders one line as it would be written (without the text format's timestamp
  /// and level prefix, which the sink's pattern adds). For tests and custom sinks.
  std::string render(log_level lvl, std::string_view msg, const log_fields& fields) const;

 private:
  logger(std::shared_ptr<spdlog::logger> impl, log_level lvl, log_format fmt);

  std::shared_ptr<spdlog::logger> impl_;
  std::atomic<log_level> level_;
  log_format format_;
};

using logger_ptr = std::shared_ptr<logger>;

/// Lets one line through per `period` and counts the ones it held back; thread-safe.
/// A warning written once per request (pool saturated, queue timeout) must not
/// become part of the overload it reports.
///
///   if (uint64_t held = 0; throttle.admit(held))
///     log->warn("pool saturated", {{"suppressed", held}});
class log_throttle {
 public:
  explicit log_throttle(std::chrono::milliseconds period = std::chrono::seconds{1})
    : period_ns_(std::chrono::duration_cast<std::chrono::nanoseconds>(period).count()) {}

  /// Whether to write a line now; if so, `held_back` is how many were not written
  /// since the previous one.
  bool admit(uint64_t& held_back) noexcept;

 private:
  int64_t period_ns_;
  std::atomic<int64_t> next_ns_{0};
  std::atomic<uint64_t> held_{0};
};

} // namespace snakepit::adapters
