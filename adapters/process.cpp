#include "adapters/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <future>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <fmt/format.h>

#include "adapters/detail/linux.hpp"
#include "adapters/detail/wake_loop.hpp"
#include "adapters/errors.hpp"

extern char** environ;

namespace snakepit::adapters {

namespace {

using detail::errno_text;

process_exit exit_of(const siginfo_t& info) {
  process_exit result;
  switch (info.si_code) {
  case CLD_EXITED:
    result.code = info.si_status;
    break;
  case CLD_KILLED:
  case CLD_DUMPED:
    result.signal = info.si_status;
    break;
  default:
    break;
  }
  return result;
}

// --- lifeline -------------------------------------------------------------------

struct lifeline_pipe {
  int read_fd = -1;
  int write_fd = -1;
  int error = 0;
};

// Created once and never closed: the host's death (even SIGKILL) closes the write end,
// which is the signal children wait for. Both ends are O_CLOEXEC so no exec'ed process
// inherits them; children get the read end only through an explicit dup2 to fd 3.
const lifeline_pipe& lifeline() {
  static const lifeline_pipe instance = [] {
    lifeline_pipe result;
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      result.error = errno;
      return result;
    }
    // Keep the read end away from 0..9: a dup2 with oldfd == newfd would not clear
    // FD_CLOEXEC, and low numbers are where stdio redirections land.
    int moved = ::fcntl(fds[0], F_DUPFD_CLOEXEC, 10);
    if (moved >= 0) {
      ::close(fds[0]);
      fds[0] = moved;
    }
    result.read_fd = fds[0];
    result.write_fd = fds[1];
    return result;
  }();
  return instance;
}

// --- executable lookup ----------------------------------------------------------------

int check_executable(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    return errno;
  if (S_ISDIR(st.st_mode))
    return EISDIR;
  if (::access(path.c_str(), X_OK) != 0)
    return errno;
  return 0;
}

std::string env_value(const process_spec& spec, const std::string& key) {
  for (const auto& [k, v] : spec.env)
    if (k == key)
      return v;
  if (spec.env.empty())
    if (const char* v = ::getenv(key.c_str()))
      return v;
  return {};
}

caf::expected<std::string> resolve_executable_of(const process_spec& spec) {
  const auto& exe = spec.executable;
  if (exe.empty())
    return make_error(errc::start_failed, "no executable given");
  if (exe.find('/') != std::string::npos) {
    // A relative path is resolved by exec after the chdir to spec.cwd.
    auto probe = exe;
    if (exe.front() != '/' && !spec.cwd.empty())
      probe = spec.cwd + "/" + exe;
    auto err = check_executable(probe);
    if (err == ENOENT || err == ENOTDIR)
      return make_error(errc::start_failed, "executable not found: " + probe);
    if (err != 0)
      return make_error(errc::start_failed,
                        fmt::format("not executable: {} ({})", probe, errno_text(err)));
    return exe;
  }
  auto path = env_value(spec, "PATH");
  if (path.empty())
    path = "/usr/local/bin:/usr/bin:/bin";
  std::string denied;
  size_t pos = 0;
  while (pos <= path.size()) {
    auto end = path.find(':', pos);
    if (end == std::string::npos)
      end = path.size();
    auto dir = path.substr(pos, end - pos);
    pos = end + 1;
    if (dir.empty())
      dir = ".";
    auto candidate = dir + "/" + exe;
    auto err = check_executable(candidate);
    if (err == 0)
      return candidate;
    if (err == EACCES && denied.empty())
      denied = candidate;
  }
  if (!denied.empty())
    return make_error(errc::start_failed, "not executable: " + denied);
  return make_error(errc::start_failed,
                    fmt::format("executable not found in PATH: {} (PATH={})", exe, path));
}

// RAII for the posix_spawn helper objects.
struct spawn_objects {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  spawn_objects() {
    ::posix_spawn_file_actions_init(&actions);
    ::posix_spawnattr_init(&attr);
  }
  ~spawn_objects() {
    ::posix_spawn_file_actions_destroy(&actions);
    ::posix_spawnattr_destroy(&attr);
  }
  spawn_objects(const spawn_objects&) = delete;
  spawn_objects& operator=(const spawn_objects&) = delete;
};

} // namespace

// --- process_exit ---------------------------------------------------------------------

std::string process_exit::to_string() const {
  if (signal != 0) {
    const char* name = ::sigabbrev_np(signal);
    if (name != nullptr)
      return fmt::format("signal {} (SIG{})", signal, name);
    return fmt::format("signal {}", signal);
  }
  if (code >= 0)
    return fmt::format("exit code {}", code);
  return "unknown exit status";
}

// --- child_process --------------------------------------------------------------------

child_process::child_process(pid_t pid, pid_t pgid, bool own_group, int pidfd)
  : pid_(pid), pgid_(pgid), own_group_(own_group), pidfd_(pidfd) {}

child_process::child_process(child_process&& other) noexcept
  : pid_(other.pid_), pgid_(other.pgid_), own_group_(other.own_group_),
    pidfd_(other.pidfd_) {
  other.pid_ = 0;
  other.pgid_ = 0;
  other.own_group_ = false;
  other.pidfd_ = -1;
}

child_process& child_process::operator=(child_process&& other) noexcept {
  if (this != &other) {
    close();
    pid_ = other.pid_;
    pgid_ = other.pgid_;
    own_group_ = other.own_group_;
    pidfd_ = other.pidfd_;
    other.pid_ = 0;
    other.pgid_ = 0;
    other.own_group_ = false;
    other.pidfd_ = -1;
  }
  return *this;
}

child_process::~child_process() {
  close();
}

void child_process::close() noexcept {
  if (pidfd_ >= 0)
    ::close(pidfd_);
  pidfd_ = -1;
}

bool child_process::signal_group(int sig) {
  if (pid_ <= 0)
    return false;
  if (!own_group_)
    return signal(sig);
  // The group outlives its leader: grandchildren are still reached after the leader died.
  return ::kill(-pgid_, sig) == 0;
}

bool child_process::signal(int sig) {
  if (pid_ <= 0)
    return false;
  if (pidfd_ >= 0)
    return detail::pidfd_send_signal(pidfd_, sig) == 0;
  return ::kill(pid_, sig) == 0;
}

bool child_process::alive() const {
  if (pid_ <= 0)
    return false;
  if (pidfd_ >= 0) {
    // A pidfd becomes readable when the process exits, whether or not it was reaped.
    pollfd pfd{pidfd_, POLLIN, 0};
    return ::poll(&pfd, 1, 0) == 0;
  }
  return ::kill(pid_, 0) == 0;
}

// --- spawn ----------------------------------------------------------------------------

int lifeline_child_fd() {
  return 3;
}

caf::expected<std::string> resolve_executable(const process_spec& spec) {
  return resolve_executable_of(spec);
}

caf::expected<child_process> spawn_process(const process_spec& spec) {
  auto resolved = resolve_executable_of(spec);
  if (!resolved)
    return std::move(resolved.error());
  const auto& path = *resolved;
  const auto& life = lifeline();
  if (spec.pass_lifeline && life.read_fd < 0)
    return make_error(errc::start_failed,
                      "cannot create the lifeline pipe: " + errno_text(life.error));
  // Environment: "key=value" strings; the child learns the lifeline fd from env too.
  std::vector<std::string> env_strings;
  if (spec.env.empty()) {
    for (char** e = environ; e != nullptr && *e != nullptr; ++e)
      env_strings.emplace_back(*e);
  } else {
    for (const auto& [k, v] : spec.env)
      env_strings.push_back(k + "=" + v);
  }
  if (spec.pass_lifeline) {
    bool present = false;
    for (const auto& s : env_strings)
      present = present || s.rfind("SNAKEPIT_LIFELINE_FD=", 0) == 0;
    if (!present)
      env_strings.push_back("SNAKEPIT_LIFELINE_FD=" +
                            std::to_string(lifeline_child_fd()));
  }
  std::vector<char*> envp;
  for (auto& s : env_strings)
    envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> arg_strings;
  arg_strings.push_back(path);
  arg_strings.insert(arg_strings.end(), spec.args.begin(), spec.args.end());
  std::vector<char*> argv;
  for (auto& s : arg_strings)
    argv.push_back(s.data());
  argv.push_back(nullptr);

  spawn_objects objs;
  // The host's threads (CAF, gRPC) may block or ignore signals; a worker starts clean.
  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  sigset_t none;
  sigemptyset(&none);
  ::posix_spawnattr_setsigmask(&objs.attr, &none);
  sigset_t all;
  sigfillset(&all);
  sigdelset(&all, SIGKILL);
  sigdelset(&all, SIGSTOP);
  ::posix_spawnattr_setsigdefault(&objs.attr, &all);
  if (spec.new_process_group) {
    flags |= POSIX_SPAWN_SETPGROUP;
    ::posix_spawnattr_setpgroup(&objs.attr, 0);
  }
  ::posix_spawnattr_setflags(&objs.attr, flags);
  // Order matters: stdio first, then the lifeline, so a stdio fd numbered 3 is copied
  // before fd 3 is overwritten.
  if (spec.stdin_fd >= 0)
    ::posix_spawn_file_actions_adddup2(&objs.actions, spec.stdin_fd, 0);
  if (spec.stdout_fd >= 0)
    ::posix_spawn_file_actions_adddup2(&objs.actions, spec.stdout_fd, 1);
  if (spec.stderr_fd >= 0)
    ::posix_spawn_file_actions_adddup2(&objs.actions, spec.stderr_fd, 2);
  if (spec.pass_lifeline)
    ::posix_spawn_file_actions_adddup2(&objs.actions, life.read_fd, lifeline_child_fd());
  if (!spec.cwd.empty())
    ::posix_spawn_file_actions_addchdir_np(&objs.actions, spec.cwd.c_str());
  // Whatever the host leaked without O_CLOEXEC (sockets, pipes of other libraries) stays
  // out of the worker: only 0, 1, 2 and the lifeline survive.
  ::posix_spawn_file_actions_addclosefrom_np(
    &objs.actions, spec.pass_lifeline ? lifeline_child_fd() + 1 : lifeline_child_fd());
  pid_t pid = 0;
  auto rc = ::posix_spawn(&pid, path.c_str(), &objs.actions, &objs.attr, argv.data(),
                          envp.data());
  if (rc != 0) {
    auto msg = fmt::format("posix_spawn of {} failed: {}", path, errno_text(rc));
    if (!spec.cwd.empty())
      msg += fmt::format(" (cwd {})", spec.cwd);
    return make_error(errc::start_failed, std::move(msg));
  }
  auto pidfd = detail::pidfd_open(pid);
  auto pgid = spec.new_process_group ? pid : ::getpgrp();
  return child_process{pid, pgid, spec.new_process_group, pidfd};
}

caf::expected<child_process> adopt_child(pid_t pid, bool own_group) {
  if (pid <= 0)
    return make_error(errc::start_failed, fmt::format("pid {} is not a child", pid));
  auto pidfd = detail::pidfd_open(pid);
  if (pidfd < 0)
    return make_error(errc::start_failed,
                      fmt::format("pid {} is gone: {}", pid, errno_text(errno)));
  siginfo_t info{};
  // WNOWAIT: only asks whether it is ours (ECHILD otherwise); reaping stays with the
  // exit watcher.
  if (detail::pidfd_waitid(pidfd, &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
    auto err = errno;
    ::close(pidfd);
    return make_error(errc::start_failed,
                      fmt::format("pid {} is not our child: {}", pid, errno_text(err)));
  }
  if (own_group)
    ::setpgid(pid, pid); // EACCES/ESRCH: the child did it first, or is gone already
  auto pgid = own_group ? pid : ::getpgrp();
  return child_process{pid, pgid, own_group, pidfd};
}

// --- exit_watcher ---------------------------------------------------------------------

struct exit_watcher::impl {
  using callback = std::function<void(process_exit)>;

  struct entry {
    int pidfd = -1;
    pid_t kill_group = 0; ///< process group to SIGKILL between exit and reap
    std::vector<callback> callbacks;
  };

  static constexpr size_t max_recent = 256;

  mutable std::mutex mtx;
  detail::wake_loop loop;
  bool stopping = false;
  std::unordered_map<pid_t, entry> watched;
  // Statuses reaped recently, for a watch() that arrives after the exit.
  std::deque<std::pair<pid_t, process_exit>> recent;
  // Callbacks to run on the watcher thread without waiting for an exit.
  std::vector<std::pair<callback, process_exit>> pending;
  std::thread thread;

  impl() {
    thread = std::thread{[this] { run(); }};
  }

  ~impl() {
    {
      std::lock_guard<std::mutex> guard{mtx};
      stopping = true;
    }
    loop.wake();
    if (thread.joinable()) {
      if (thread.get_id() == std::this_thread::get_id())
        thread.detach();
      else
        thread.join();
    }
    for (auto& [pid, e] : watched)
      ::close(e.pidfd);
  }

  void remember(pid_t pid, process_exit status) {
    recent.emplace_back(pid, status);
    if (recent.size() > max_recent)
      recent.pop_front();
  }

  void watch(pid_t pid, callback cb, pid_t kill_group) {
    std::unique_lock<std::mutex> guard{mtx};
    if (auto i = watched.find(pid); i != watched.end()) {
      i->second.callbacks.push_back(std::move(cb));
      if (kill_group > 0)
        i->second.kill_group = kill_group;
      return;
    }
    auto fd = pid > 0 ? detail::pidfd_open(pid) : -1;
    if (fd < 0) {
      // Gone already: either we reaped it (status remembered) or it is not ours.
      process_exit status;
      for (auto i = recent.rbegin(); i != recent.rend(); ++i)
        if (i->first == pid) {
          status = i->second;
          break;
        }
      pending.emplace_back(std::move(cb), status);
      guard.unlock();
      loop.wake();
      return;
    }
    entry e;
    e.pidfd = fd;
    e.kill_group = kill_group;
    e.callbacks.push_back(std::move(cb));
    watched.emplace(pid, std::move(e));
    loop.add(fd, static_cast<uint64_t>(pid));
  }

  /// Reaps `it`'s process if it is reapable: its callbacks move to `ready`.
  void reap(std::unordered_map<pid_t, entry>::iterator it,
            std::vector<std::pair<callback, process_exit>>& ready) {
    auto pid = it->first;
    auto pidfd = it->second.pidfd;
    siginfo_t info{};
    if (it->second.kill_group > 0) {
      // Exited but not reaped yet: the zombie leader keeps its group id reserved,
      // so the kill reaches what it left behind and nothing else. After the reap
      // an empty group's id could name an unrelated, newer group.
      if (detail::pidfd_waitid(pidfd, &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
          info.si_pid != 0)
        ::kill(-it->second.kill_group, SIGKILL);
      info = siginfo_t{};
    }
    auto rc = detail::pidfd_waitid(pidfd, &info, WEXITED | WNOHANG);
    if (rc == 0 && info.si_pid == 0)
      return; // readable but not yet reapable: try again on the next event
    // rc < 0 (ECHILD): not our child or reaped elsewhere; status unknown.
    auto status = rc == 0 ? exit_of(info) : process_exit{};
    loop.remove(pidfd);
    ::close(pidfd);
    for (auto& cb : it->second.callbacks)
      ready.emplace_back(std::move(cb), status);
    watched.erase(it);
    remember(pid, status);
  }

  void run() {
    std::vector<uint64_t> keys;
    for (;;) {
      if (!loop.wait(keys))
        return;
      std::vector<std::pair<callback, process_exit>> ready;
      {
        std::lock_guard<std::mutex> guard{mtx};
        for (auto key : keys)
          if (auto it = watched.find(static_cast<pid_t>(key)); it != watched.end())
            reap(it, ready);
        for (auto& p : pending)
          ready.push_back(std::move(p));
        pending.clear();
        if (stopping)
          return;
      }
      // Outside the lock: callbacks may call watch() again.
      for (auto& [cb, status] : ready)
        if (cb)
          cb(status);
    }
  }
};

exit_watcher::exit_watcher() : impl_(std::make_unique<impl>()) {}

exit_watcher::~exit_watcher() = default;

exit_watcher& exit_watcher::instance() {
  // Deliberately never destroyed: other static objects and late threads may still call
  // watch() during process teardown, and the OS ends the thread at exit.
  static exit_watcher* instance = new exit_watcher;
  return *instance;
}

void exit_watcher::watch(pid_t pid, std::function<void(process_exit)> on_exit,
                         pid_t kill_group) {
  impl_->watch(pid, std::move(on_exit), kill_group);
}

size_t exit_watcher::watched() const {
  std::lock_guard<std::mutex> guard{impl_->mtx};
  return impl_->watched.size();
}

std::optional<process_exit> wait_for_exit(pid_t pid, std::chrono::milliseconds timeout) {
  auto promise = std::make_shared<std::promise<process_exit>>();
  auto future = promise->get_future();
  exit_watcher::instance().watch(
    pid, [promise](process_exit status) { promise->set_value(status); });
  if (future.wait_for(timeout) != std::future_status::ready)
    return std::nullopt;
  return future.get();
}

// --- environment ----------------------------------------------------------------------

std::vector<std::pair<std::string, std::string>>
build_environment(const std::vector<std::pair<std::string, std::string>>& overrides,
                  bool limit_threads) {
  std::vector<std::pair<std::string, std::string>> result;
  std::unordered_map<std::string, size_t> index;
  auto set = [&](const std::string& key, const std::string& value) {
    if (auto i = index.find(key); i != index.end()) {
      result[i->second].second = value;
    } else {
      index.emplace(key, result.size());
      result.emplace_back(key, value);
    }
  };
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string entry{*e};
    auto eq = entry.find('=');
    if (eq == std::string::npos || eq == 0)
      continue;
    set(entry.substr(0, eq), entry.substr(eq + 1));
  }
  // Python output must reach the log pipe line by line, not when a buffer fills.
  set("PYTHONUNBUFFERED", "1");
  if (limit_threads) {
    // N workers each spawning one BLAS thread per core oversubscribes the machine;
    // the pool is the unit of parallelism.
    for (const char* key : {"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                            "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"})
      set(key, "1");
  }
  for (const auto& [k, v] : overrides)
    set(k, v);
  return result;
}

// --- runtime_dir ----------------------------------------------------------------------

namespace {

// Room left for a socket file name below the 108-byte sun_path limit.
constexpr size_t socket_name_reserve = 40;
constexpr size_t sun_path_limit = 108;

bool usable_base(const char* dir, size_t tail) {
  if (dir == nullptr || *dir != '/')
    return false;
  struct stat st;
  if (::stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
    return false;
  if (::access(dir, W_OK | X_OK) != 0)
    return false;
  return std::strlen(dir) + tail + socket_name_reserve < sun_path_limit;
}

} // namespace

caf::expected<runtime_dir> runtime_dir::create(std::string prefix) {
  if (prefix.empty() || prefix.size() > 32 || prefix.find('/') != std::string::npos)
    return make_error(errc::invalid_argument,
                      "runtime_dir prefix must be 1..32 characters without '/': " +
                        prefix);
  auto tail = prefix.size() + 8; // "/" + prefix + "-XXXXXX"
  std::string base = "/tmp";
  const char* xdg = ::getenv("XDG_RUNTIME_DIR");
  if (usable_base(xdg, tail))
    base = xdg;
  auto templ = base + "/" + prefix + "-XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr)
    return make_error(
      errc::start_failed,
      fmt::format("cannot create runtime directory {}: {}", templ, errno_text(errno)));
  // mkdtemp already uses 0700; make it explicit in case of an unusual umask handling.
  ::chmod(templ.c_str(), 0700);
  return runtime_dir{std::move(templ)};
}

runtime_dir::runtime_dir(runtime_dir&& other) noexcept : path_(std::move(other.path_)) {
  other.path_.clear();
}

runtime_dir& runtime_dir::operator=(runtime_dir&& other) noexcept {
  if (this != &other) {
    remove();
    path_ = std::move(other.path_);
    other.path_.clear();
  }
  return *this;
}

runtime_dir::~runtime_dir() {
  remove();
}

std::string runtime_dir::file(const std::string& name) const {
  return path_ + "/" + name;
}

void runtime_dir::remove() {
  if (path_.empty())
    return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
  path_.clear();
}

} // namespace snakepit::adapters
