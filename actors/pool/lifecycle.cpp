#include "actors/pool/lifecycle.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <fmt/format.h>

namespace snakepit::actors {

namespace {

const char* signal_cause(int sig) {
  switch (sig) {
  case SIGSEGV:
    return "segfault";
  case SIGABRT:
    return "abort";
  case SIGBUS:
    return "bus_error";
  case SIGILL:
    return "illegal_instruction";
  case SIGFPE:
    return "fpe";
  case SIGKILL:
    return "killed";
  case SIGTERM:
    return "terminated";
  default:
    return nullptr;
  }
}

} // namespace

std::string classify_exit(int code, int signal) {
  if (signal > 0) {
    if (auto name = signal_cause(signal))
      return name;
    return fmt::format("signal_{}", signal);
  }
  // A process run through a shell reports a signal death as 128 + signal.
  if (code > 128 && code < 128 + 65)
    if (auto name = signal_cause(code - 128))
      return name;
  return fmt::format("exit_{}", code);
}

bool is_crash_cause(const std::string& cause) {
  static const char* named[] = {"segfault", "abort",  "bus_error", "illegal_instruction",
                                "fpe",      "killed", "terminated"};
  if (std::find_if(std::begin(named), std::end(named),
                   [&](const char* n) { return cause == n; }) != std::end(named))
    return true;
  for (auto prefix : {std::string{"exit_"}, std::string{"signal_"}}) {
    if (cause.size() > prefix.size() && cause.compare(0, prefix.size(), prefix) == 0 &&
        std::all_of(cause.begin() + static_cast<long>(prefix.size()), cause.end(),
                    [](char c) { return c >= '0' && c <= '9'; }))
      return true;
  }
  return false;
}

std::optional<uint64_t> resident_bytes(int pid) {
  auto path = fmt::format("/proc/{}/statm", pid);
  auto* f = std::fopen(path.c_str(), "r");
  if (f == nullptr)
    return std::nullopt;
  unsigned long long size = 0;
  unsigned long long resident = 0;
  auto n = std::fscanf(f, "%llu %llu", &size, &resident);
  std::fclose(f);
  if (n != 2)
    return std::nullopt;
  return static_cast<uint64_t>(resident) * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
}

uint64_t jittered_limit(uint64_t max, double jitter, double random) {
  if (max == 0)
    return 0;
  auto low = static_cast<double>(max) * (1.0 - std::clamp(jitter, 0.0, 1.0));
  auto value = low + (static_cast<double>(max) - low) * std::clamp(random, 0.0, 1.0);
  return std::clamp<uint64_t>(static_cast<uint64_t>(std::llround(value)), 1, max);
}

std::chrono::milliseconds
retry_delay(const std::vector<std::chrono::milliseconds>& backoff, int attempt,
            double random) {
  if (backoff.empty() || attempt < 1)
    return std::chrono::milliseconds{0};
  auto base =
    backoff[std::min<size_t>(static_cast<size_t>(attempt - 1), backoff.size() - 1)];
  auto scale = 0.75 + 0.5 * std::clamp(random, 0.0, 1.0);
  return std::chrono::milliseconds{
    static_cast<int64_t>(std::llround(static_cast<double>(base.count()) * scale))};
}

circuit_breaker::circuit_breaker(int threshold, std::chrono::milliseconds reset)
  : threshold_(threshold), reset_(reset) {}

bool circuit_breaker::on_failure(time_point now) {
  if (!enabled())
    return false;
  ++failures_;
  if (state_ == state::half_open ||
      (state_ == state::closed && failures_ >= threshold_)) {
    state_ = state::open;
    opened_at_ = now;
    return true;
  }
  if (state_ == state::open)
    opened_at_ = now; // still failing: the reset period starts over
  return false;
}

void circuit_breaker::trip(time_point now) {
  failures_ = std::max(failures_, threshold_);
  state_ = state::open;
  opened_at_ = now;
}

bool circuit_breaker::on_success() {
  failures_ = 0;
  if (state_ == state::closed)
    return false;
  state_ = state::closed;
  return true;
}

bool circuit_breaker::try_half_open(time_point now) {
  if (state_ != state::open || now - opened_at_ < reset_)
    return false;
  state_ = state::half_open;
  return true;
}

const char* to_string(circuit_breaker::state s) {
  switch (s) {
  case circuit_breaker::state::closed:
    return "closed";
  case circuit_breaker::state::open:
    return "open";
  case circuit_breaker::state::half_open:
    return "half_open";
  }
  return "closed";
}

} // namespace snakepit::actors
