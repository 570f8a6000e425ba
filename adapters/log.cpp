#include "adapters/log.hpp"

#include <time.h>

#include <chrono>
#include <cstdio>

#include <spdlog/logger.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include "adapters/errors.hpp"

namespace snakepit::adapters {

namespace {

using json = log_fields;

// `%*` is our level name ("warn", as in JSON lines, not spdlog's "warning").
constexpr const char* text_pattern = "%Y-%m-%dT%H:%M:%S.%e %^%*%$ snakepit: %v";
constexpr const char* json_pattern = "%v";

class level_flag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    std::string_view name =
      to_string(static_cast<log_level>(static_cast<int>(msg.level)));
    dest.append(name.data(), name.data() + name.size());
  }

  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<level_flag>();
  }
};

std::unique_ptr<spdlog::formatter> make_formatter(log_format fmt) {
  auto f = std::make_unique<spdlog::pattern_formatter>();
  f->add_flag<level_flag>('*');
  f->set_pattern(fmt == log_format::json ? json_pattern : text_pattern);
  return f;
}

spdlog::level::level_enum to_spdlog(log_level lvl) {
  return static_cast<spdlog::level::level_enum>(static_cast<int>(lvl));
}

std::string dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

/// A text value needs quotes when it would not read back as one token.
bool needs_quotes(const std::string& s) {
  if (s.empty())
    return true;
  for (unsigned char c : s)
    if (c <= ' ' || c == '"' || c == '=' || c == 0x7f)
      return true;
  return false;
}

bool skipped(const json& value) {
  return value.is_null() ||
         (value.is_string() && value.get_ref<const std::string&>().empty());
}

} // namespace

std::string utc_now() {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch())
              .count() %
            1000;
  struct tm tm {};
  ::gmtime_r(&secs, &tm);
  char buf[80];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                tm.tm_sec, static_cast<int>(ms));
  return buf;
}

std::optional<log_level> parse_log_level(std::string_view name) {
  if (name == "trace")
    return log_level::trace;
  if (name == "debug")
    return log_level::debug;
  if (name == "info")
    return log_level::info;
  if (name == "warn" || name == "warning")
    return log_level::warn;
  if (name == "error")
    return log_level::error;
  if (name == "critical")
    return log_level::critical;
  if (name == "off")
    return log_level::off;
  return std::nullopt;
}

std::optional<log_format> parse_log_format(std::string_view name) {
  if (name == "text")
    return log_format::text;
  if (name == "json")
    return log_format::json;
  return std::nullopt;
}

const char* to_string(log_level lvl) {
  switch (lvl) {
  case log_level::trace:
    return "trace";
  case log_level::debug:
    return "debug";
  case log_level::info:
    return "info";
  case log_level::warn:
    return "warn";
  case log_level::error:
    return "error";
  case log_level::critical:
    return "critical";
  case log_level::off:
    break;
  }
  return "off";
}

logger::logger(std::shared_ptr<spdlog::logger> impl, log_level lvl, log_format fmt)
  : impl_(std::move(impl)), level_(lvl), format_(fmt) {}

logger::~logger() {
  flush();
}

caf::expected<std::shared_ptr<logger>> logger::create(log_options opts) {
  std::vector<spdlog::sink_ptr> sinks;
  if (opts.to_stderr) {
    auto s = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    s->set_formatter(make_formatter(opts.format));
    sinks.push_back(std::move(s));
  }
  if (!opts.file.empty()) {
    try {
      auto s = std::make_shared<spdlog::sinks::basic_file_sink_mt>(opts.file, false);
      s->set_formatter(make_formatter(opts.format));
      sinks.push_back(std::move(s));
    } catch (const std::exception& e) {
      return make_error(errc::invalid_config,
                        "log.file: cannot open " + opts.file + ": " + e.what());
    }
  }
  for (auto& s : opts.sinks)
    if (s)
      sinks.push_back(s);
  auto impl = std::make_shared<spdlog::logger>("snakepit", sinks.begin(), sinks.end());
  // Filtering happens in logger::enabled; spdlog passes whatever reaches it.
  impl->set_level(spdlog::level::trace);
  impl->flush_on(spdlog::level::warn);
  return std::shared_ptr<logger>{new logger(std::move(impl), opts.level, opts.format)};
}

std::shared_ptr<logger> logger::null() {
  auto impl = std::make_shared<spdlog::logger>("snakepit");
  return std::shared_ptr<logger>{
    new logger(std::move(impl), log_level::off, log_format::text)};
}

void logger::set_level(log_level lvl) noexcept {
  level_.store(lvl, std::memory_order_relaxed);
}

void logger::flush() {
  if (impl_)
    impl_->flush();
}

std::string logger::render(log_level lvl, std::string_view msg,
                           const json& fields) const {
  std::string out;
  if (format_ == log_format::json) {
    out.reserve(96 + msg.size());
    out += "{\"ts\":\"";
    out += utc_now();
    out += "\",\"level\":\"";
    out += to_string(lvl);
    out += "\",\"logger\":\"snakepit\",\"msg\":";
    out += dump(json(std::string{msg}));
    if (fields.is_object())
      for (auto& [key, value] : fields.items()) {
        if (skipped(value) || key == "ts" || key == "level" || key == "logger" ||
            key == "msg")
          continue;
        out += ',';
        out += dump(json(key));
        out += ':';
        out += dump(value);
      }
    out += '}';
    return out;
  }
  out.assign(msg);
  if (fields.is_object())
    for (auto& [key, value] : fields.items()) {
      if (skipped(value))
        continue;
      out += ' ';
      out += key;
      out += '=';
      if (value.is_string() && !needs_quotes(value.get_ref<const std::string&>()))
        out += value.get_ref<const std::string&>();
      else
        out += dump(value);
    }
  return out;
}

void logger::log(log_level lvl, std::string_view msg, const json& fields) {
  if (!enabled(lvl))
    return;
  auto line = render(lvl, msg, fields);
  impl_->log(to_spdlog(lvl), spdlog::string_view_t{line.data(), line.size()});
}

bool log_throttle::admit(uint64_t& held_back) noexcept {
  auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
               .count();
  auto next = next_ns_.load(std::memory_order_relaxed);
  if (now < next || !next_ns_.compare_exchange_strong(next, now + period_ns_)) {
    held_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  held_back = held_.exchange(0, std::memory_order_relaxed);
  return true;
}

} // namespace snakepit::adapters
