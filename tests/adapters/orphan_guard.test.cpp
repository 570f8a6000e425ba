// The orphan guard with real processes: a helper host (orphan_guard_host.cpp) killed by
// SIGKILL must take its SIGTERM-ignoring workers and their grandchildren along within
// 2 s; unwatched groups survive; the guard never blocks and its reaper stays small.
#include "adapters/orphan_guard.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include "adapters/detail/linux.hpp"
#include "adapters/errors.hpp"
#include "adapters/process.hpp"
#include "tests/support/checks.hpp"
#include "tests/support/eventually.hpp"

using namespace snakepit;
using namespace snakepit::adapters;
using namespace std::chrono_literals;
using snakepit::testing::eventually;

namespace {

using clock_type = std::chrono::steady_clock;

/// Process group ids no process can have (above the largest pid_max, 2^22): the reaper
/// may be told about them without any risk of signalling a real group.
constexpr pid_t fake_group_base = pid_t{1} << 30;

bool proc_exists(pid_t pid) {
  struct stat st;
  return ::stat(("/proc/" + std::to_string(pid)).c_str(), &st) == 0;
}

/// True while `pid` runs (a zombie counts as gone).
bool running(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  std::string line;
  if (!std::getline(in, line))
    return false;
  auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z';
}

std::string read_file(const std::string& path) {
  std::ifstream in{path};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> open_fds(pid_t pid) {
  std::vector<std::string> result;
  auto dir = "/proc/" + std::to_string(pid) + "/fd";
  if (DIR* d = ::opendir(dir.c_str())) {
    while (auto* e = ::readdir(d))
      if (e->d_name[0] != '.')
        result.emplace_back(e->d_name);
    ::closedir(d);
  }
  return result;
}

/// A field of /proc/<pid>/smaps_rollup in kB, or -1.
long smaps_kb(pid_t pid, const std::string& key) {
  std::istringstream in{read_file("/proc/" + std::to_string(pid) + "/smaps_rollup")};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0)
      return std::atol(line.c_str() + key.size() + 1);
  return -1;
}

/// SIGKILLs (through pidfds, so a recycled pid is never hit) and reaps every process it
/// was given, whatever the test's outcome.
struct sweeper {
  std::vector<std::pair<pid_t, int>> procs;

  void add(pid_t pid) {
    int fd = detail::pidfd_open(pid);
    if (fd >= 0)
      procs.emplace_back(pid, fd);
  }

  ~sweeper() {
    for (auto& [pid, fd] : procs)
      detail::pidfd_send_signal(fd, SIGKILL);
    for (auto& [pid, fd] : procs) {
      wait_for_exit(pid, 5s);
      ::close(fd);
    }
  }
};

process_spec sh(std::string script) {
  process_spec spec;
  spec.executable = "/bin/sh";
  spec.args = {"-c", std::move(script)};
  spec.pass_lifeline = false;
  return spec;
}

/// What the helper host reported.
struct host_run {
  std::optional<child_process> host;
  pid_t reaper = 0;
  std::vector<pid_t> watched;
  std::vector<pid_t> unwatched;
  std::map<pid_t, pid_t> grandchild; ///< worker pid -> its grandchild
};

/// Starts the helper host with `workers` workers of which the first `unwatched` are
/// unwatched again, and reads its report. Every pid goes to `sweep`.
void start_host(int workers, int unwatched, host_run& run, sweeper& sweep) {
  REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  process_spec spec;
  spec.executable = SNAKEPIT_ORPHAN_GUARD_HOST;
  spec.args = {std::to_string(workers), std::to_string(unwatched)};
  spec.stdout_fd = fds[1];
  auto host = spawn_process(spec);
  ::close(fds[1]);
  if (!host)
    ::close(fds[0]);
  REQUIRE(host);
  sweep.add(host->pid());
  run.host = std::move(*host);
  std::string buffer;
  bool ready = false;
  auto until = clock_type::now() + 20s;
  while (!(ready && static_cast<int>(run.grandchild.size()) == workers) &&
         clock_type::now() < until) {
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0)
      continue;
    char chunk[512];
    auto n = ::read(fds[0], chunk, sizeof(chunk));
    if (n <= 0)
      break;
    buffer.append(chunk, static_cast<size_t>(n));
    size_t eol;
    while ((eol = buffer.find('\n')) != std::string::npos) {
      std::istringstream line{buffer.substr(0, eol)};
      buffer.erase(0, eol + 1);
      std::string tag;
      pid_t a = 0;
      pid_t b = 0;
      line >> tag >> a >> b;
      if (tag == "ready")
        ready = true;
      else if (tag == "reaper")
        run.reaper = a;
      else if (tag == "watched")
        run.watched.push_back(a);
      else if (tag == "unwatched")
        run.unwatched.push_back(a);
      else if (tag == "grandchild")
        run.grandchild[a] = b;
      if (a > 0)
        sweep.add(tag == "grandchild" ? b : a);
    }
  }
  ::close(fds[0]);
  REQUIRE(ready);
  REQUIRE(run.reaper > 0);
  REQUIRE(static_cast<int>(run.grandchild.size()) == workers);
}

/// Waits for `pid` (a child of this process by now) until `deadline`.
std::optional<process_exit> exit_by(pid_t pid, clock_type::time_point deadline) {
  auto left =
    std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now());
  return wait_for_exit(pid, std::max(left, 0ms));
}

} // namespace

TEST_SUITE("adapters.orphan_guard") {
  TEST_CASE("the reaper leads its own session, holds only its pipe and names itself") {
    auto guard = orphan_guard::create();
    REQUIRE(guard);
    auto pid = guard->pid();
    REQUIRE(pid > 0);
    CHECK(guard->alive());
    CHECK(::getpgid(pid) == pid);
    CHECK(::getsid(pid) == pid);
    // Not the lifeline's write end nor any other host fd: only the command pipe.
    auto fds = open_fds(pid);
    CHECK_MSG(fds.size() == 1, "reaper fds: " << fds.size());
    CHECK(read_file("/proc/" + std::to_string(pid) + "/comm") == "snakepit-reaper\n");
    auto cmdline = read_file("/proc/" + std::to_string(pid) + "/cmdline");
    CHECK(std::string{cmdline.c_str()} == "snakepit-reaper");
    // Asleep in poll, not spinning.
    CHECK(eventually([&] {
      return read_file("/proc/" + std::to_string(pid) + "/stat").find(") S ") !=
             std::string::npos;
    }));
  }

  TEST_CASE("a guard destroyed with nothing watched leaves no reaper and no zombie") {
    pid_t pid = 0;
    {
      auto guard = orphan_guard::create();
      REQUIRE(guard);
      pid = guard->pid();
      REQUIRE(proc_exists(pid));
    }
    auto e = wait_for_exit(pid, 2s);
    REQUIRE(e);
    CHECK(e->code == 0);
    // The exit watcher reaped it: not even a zombie is left.
    CHECK(eventually([&] { return !proc_exists(pid); }, 2s));
  }

  TEST_CASE("watch refuses what is not a group, the host's group and too many groups") {
    auto guard = orphan_guard::create();
    REQUIRE(guard);
    CHECK(guard->watch(0) == errc::invalid_argument);
    CHECK(guard->watch(1) == errc::invalid_argument);
    CHECK(guard->watch(-5) == errc::invalid_argument);
    CHECK(guard->watch(::getpgrp()) == errc::invalid_argument);
    REQUIRE(::kill(-fake_group_base, 0) == -1);
    REQUIRE(errno == ESRCH);
    for (size_t i = 0; i < orphan_guard::max_groups; ++i)
      REQUIRE_FALSE(guard->watch(fake_group_base + static_cast<pid_t>(i)));
    // A second watch of a watched group is no new entry.
    CHECK_FALSE(guard->watch(fake_group_base));
    CHECK(guard->watched() == orphan_guard::max_groups);
    auto over = fake_group_base + static_cast<pid_t>(orphan_guard::max_groups);
    CHECK(guard->watch(over) == errc::quota_exceeded);
    guard->unwatch(fake_group_base);
    CHECK_FALSE(guard->watch(over));
    for (size_t i = 0; i <= orphan_guard::max_groups; ++i)
      guard->unwatch(fake_group_base + static_cast<pid_t>(i));
    CHECK(guard->watched() == 0);
    CHECK(guard->flush());
    orphan_guard empty;
    CHECK(empty.watch(12345) == errc::internal);
    CHECK(empty.pid() == 0);
    CHECK_FALSE(empty.alive());
  }

  TEST_CASE("a watched group that ignores SIGTERM is killed when the guard goes") {
    sweeper sweep;
    auto child = spawn_process(sh("trap '' TERM; exec sleep 300"));
    REQUIRE(child);
    sweep.add(child->pid());
    pid_t reaper = 0;
    {
      auto guard = orphan_guard::create();
      REQUIRE(guard);
      reaper = guard->pid();
      REQUIRE_FALSE(guard->watch(child->pgid()));
      CHECK(guard->pending() == 0);
      // The shell must have set its trap before the guard goes.
      CHECK(eventually([&] {
        return read_file("/proc/" + std::to_string(child->pid()) + "/comm") == "sleep\n";
      }));
    }
    auto e = wait_for_exit(child->pid(), 5s);
    REQUIRE(e);
    CHECK(e->signal == SIGKILL);
    auto r = wait_for_exit(reaper, 5s);
    REQUIRE(r);
    CHECK(r->code == 0);
  }

  TEST_CASE("when the host is SIGKILLed every watched worker and grandchild is gone "
            "within 2 s") {
    sweeper sweep;
    host_run run;
    start_host(3, 0, run, sweep);
    REQUIRE(run.watched.size() == 3);
    for (auto pid : run.watched) {
      CHECK(running(pid));
      CHECK(running(run.grandchild[pid]));
    }
    auto killed_at = clock_type::now();
    REQUIRE(run.host->signal(SIGKILL));
    auto deadline = killed_at + 2s;
    auto he = wait_for_exit(run.host->pid(), 10s);
    REQUIRE(he);
    CHECK(he->signal == SIGKILL);
    // They ignore SIGTERM and EOF, so SIGKILL from the reaper is the only way out.
    for (auto pid : run.watched) {
      for (auto p : {pid, run.grandchild[pid]}) {
        auto e = exit_by(p, deadline);
        CHECK_MSG(e.has_value(), "pid " << p << " outlived the host by 2 s");
        if (e)
          CHECK(e->signal == SIGKILL);
      }
    }
    auto r = exit_by(run.reaper, deadline);
    REQUIRE_MSG(r.has_value(), "the reaper outlived the host by 2 s");
    CHECK(r->code == 0);
    MESSAGE("all gone " << std::chrono::duration_cast<std::chrono::milliseconds>(
                             clock_type::now() - killed_at)
                             .count()
                        << " ms after the host's SIGKILL");
  }

  TEST_CASE("an unwatched group survives the host's death") {
    sweeper sweep;
    host_run run;
    start_host(2, 1, run, sweep);
    REQUIRE(run.watched.size() == 1);
    REQUIRE(run.unwatched.size() == 1);
    REQUIRE(run.host->signal(SIGKILL));
    REQUIRE(wait_for_exit(run.host->pid(), 10s));
    auto gone = wait_for_exit(run.watched[0], 5s);
    REQUIRE(gone);
    CHECK(gone->signal == SIGKILL);
    // Once the reaper has exited nothing else would kill the unwatched group.
    auto r = wait_for_exit(run.reaper, 5s);
    REQUIRE(r);
    CHECK(r->code == 0);
    auto survivor = run.unwatched[0];
    CHECK(running(survivor));
    CHECK(running(run.grandchild[survivor]));
  }

  TEST_CASE("watch and unwatch never block, even while the reaper does not read") {
    sweeper sweep;
    auto guard = orphan_guard::create();
    REQUIRE(guard);
    REQUIRE(::kill(-fake_group_base, 0) == -1);
    // Through a pidfd, so the cleanup never signals a process that reused the pid.
    struct stopped {
      int fd;
      ~stopped() {
        detail::pidfd_send_signal(fd, SIGCONT);
        ::close(fd);
      }
    } reaper{detail::pidfd_open(guard->pid())};
    REQUIRE(reaper.fd >= 0);
    REQUIRE(detail::pidfd_send_signal(reaper.fd, SIGSTOP) == 0);
    // 160000 changes: five times what the pipe holds, all on groups that cannot exist.
    constexpr int groups = 4000;
    constexpr int rounds = 20;
    auto burst = std::async(std::launch::async, [&] {
      size_t most_pending = 0;
      for (int round = 0; round < rounds; ++round) {
        for (int i = 0; i < groups; ++i)
          if (guard->watch(fake_group_base + i))
            return size_t{0};
        most_pending = std::max(most_pending, guard->pending());
        for (int i = 0; i < groups; ++i)
          guard->unwatch(fake_group_base + i);
      }
      return most_pending;
    });
    // A blocking write would hang here until SIGCONT.
    REQUIRE(burst.wait_for(30s) == std::future_status::ready);
    auto most_pending = burst.get();
    CHECK(most_pending > 0);
    CHECK(most_pending <= 2 * orphan_guard::max_groups);
    CHECK(guard->watched() == 0);
    REQUIRE(detail::pidfd_send_signal(reaper.fd, SIGCONT) == 0);
    CHECK(eventually([&] { return guard->flush(); }));
    CHECK(guard->pending() == 0);
    CHECK(guard->alive());
    // The reaper came through the backlog and still does its job.
    auto child = spawn_process(sh("exec sleep 300"));
    REQUIRE(child);
    sweep.add(child->pid());
    REQUIRE_FALSE(guard->watch(child->pgid()));
    *guard = orphan_guard{};
    auto e = wait_for_exit(child->pid(), 5s);
    REQUIRE(e);
    CHECK(e->signal == SIGTERM);
  }

  TEST_CASE("a guard created on a thread that has since exited keeps working") {
    sweeper sweep;
    std::optional<caf::expected<orphan_guard>> made;
    std::thread maker{[&] { made.emplace(orphan_guard::create()); }};
    maker.join();
    REQUIRE(made);
    REQUIRE(*made);
    auto& guard = **made;
    auto reaper = guard.pid();
    // The reaper's parent is the host process, not the thread that forked it: the
    // thread's exit must not look like the host's death (the parent is checked every
    // 250 ms).
    std::this_thread::sleep_for(600ms);
    CHECK(guard.alive());
    CHECK(running(reaper));
    MESSAGE("reaper forked from a thread: Pss " << smaps_kb(reaper, "Pss")
                                                << " kB, trimmed " << guard.trimmed());
    auto child = spawn_process(sh("exec sleep 300"));
    REQUIRE(child);
    sweep.add(child->pid());
    REQUIRE_FALSE(guard.watch(child->pgid()));
    made.reset();
    auto e = wait_for_exit(child->pid(), 5s);
    REQUIRE(e);
    CHECK(e->signal == SIGTERM);
    auto r = wait_for_exit(reaper, 5s);
    REQUIRE(r);
    CHECK(r->code == 0);
  }

  TEST_CASE("the reaper keeps little memory however much the host rewrites") {
    constexpr size_t size = 64 << 20;
    void* mem =
      ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(mem != MAP_FAILED);
    struct unmap {
      void* p;
      ~unmap() { ::munmap(p, size); }
    } unmap_mem{mem};
    std::memset(mem, 1, size);
    auto guard = orphan_guard::create();
    REQUIRE(guard);
    // Each page the host writes now would stay behind in an untrimmed reaper.
    std::memset(mem, 2, size);
    auto pid = guard->pid();
    auto rss = smaps_kb(pid, "Rss");
    auto pss = smaps_kb(pid, "Pss");
    auto dirty = smaps_kb(pid, "Private_Dirty");
    MESSAGE("reaper: Rss " << rss << " kB, Pss " << pss << " kB, Private_Dirty " << dirty
                           << " kB, trimmed " << guard->trimmed() << " (host rewrote "
                           << (size >> 10) << " kB)");
    REQUIRE(rss >= 0);
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    CHECK(guard->trimmed());
#endif
    if (guard->trimmed()) {
      CHECK(pss < 4096);
      CHECK(dirty < 4096);
    } else {
      MESSAGE("untrimmed build (sanitizers or not x86-64): no bound checked");
    }
  }
}
