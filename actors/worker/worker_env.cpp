#include "actors/worker/worker_env.hpp"

#include <atomic>
#include <chrono>
#include <random>

#include <unistd.h>

#include "adapters/process_registry.hpp"

namespace snakepit::actors {

void process_table::attach(std::shared_ptr<adapters::process_registry> registry,
                           std::string run_id) {
  std::lock_guard<std::mutex> guard{mtx_};
  registry_ = std::move(registry);
  run_id_ = std::move(run_id);
}

void process_table::add(pid_t pid) {
  std::shared_ptr<adapters::process_registry> reg;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    pids_.insert(pid);
    reg = registry_;
  }
  // Right after posix_spawn: the child exists (its start time is fixed at clone and
  // kept across exec), and it already holds the lifeline, so a host killed before
  // this write still takes the child down with it.
  if (reg) {
    auto pgid = ::getpgid(pid);
    auto start = adapters::process_start_time(pid);
    reg->record(run_id_, pid, pgid > 0 ? pgid : pid, start.value_or(0));
  }
}

void process_table::remove(pid_t pid) {
  std::shared_ptr<adapters::process_registry> reg;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    reg = registry_;
  }
  // The entry goes before the pid leaves the table, so once wait_empty() returns
  // the registry holds nothing of the run.
  if (reg)
    reg->remove(run_id_, pid);
  {
    std::lock_guard<std::mutex> guard{mtx_};
    pids_.erase(pid);
  }
  cv_.notify_all();
}

std::set<pid_t> process_table::snapshot() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return pids_;
}

bool process_table::contains(pid_t pid) const {
  std::lock_guard<std::mutex> guard{mtx_};
  return pids_.count(pid) > 0;
}

bool process_table::wait_empty(std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> guard{mtx_};
  return cv_.wait_for(guard, timeout, [this] { return pids_.empty(); });
}

void name_table::put(const std::string& name, caf::actor hdl) {
  std::lock_guard<std::mutex> guard{mtx_};
  names_[name] = std::move(hdl);
}

caf::actor name_table::get(const std::string& name) const {
  std::lock_guard<std::mutex> guard{mtx_};
  auto i = names_.find(name);
  return i == names_.end() ? caf::actor{} : i->second;
}

std::vector<caf::actor> name_table::with_prefix(const std::string& prefix) const {
  std::lock_guard<std::mutex> guard{mtx_};
  std::vector<caf::actor> out;
  for (auto i = names_.lower_bound(prefix);
       i != names_.end() && i->first.compare(0, prefix.size(), prefix) == 0; ++i)
    if (i->second)
      out.push_back(i->second);
  return out;
}

void name_table::clear() {
  std::lock_guard<std::mutex> guard{mtx_};
  names_.clear();
}

std::string make_run_id() {
  // All seven characters random (36^7, about 7.8e10 ids). The run id keys the
  // persisted process registry, so two hosts that start in the same second must
  // not share one: upstream's 5 characters of timestamp + 2 random ones collided
  // for 1 in 1296 such pairs, and a collision let one host's sweep kill the other
  // host's workers.
  static constexpr char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::random_device rd;
  uint64_t n = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  std::string out(7, '0');
  for (auto& c : out) {
    c = digits[n % 36];
    n /= 36;
  }
  return out;
}

void python_telemetry_settings::set(adapters::telemetry_control ctl) {
  std::lock_guard<std::mutex> guard{mtx_};
  ctl_ = std::move(ctl);
}

std::optional<adapters::telemetry_control> python_telemetry_settings::get() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return ctl_;
}

} // namespace snakepit::actors
