#include "adapters/process.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <future>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include <doctest/doctest.h>

#include "adapters/errors.hpp"
#include "tests/support/checks.hpp"
#include "tests/support/eventually.hpp"

using namespace snakepit;
using namespace snakepit::adapters;
using namespace std::chrono_literals;
using snakepit::testing::eventually;

namespace {

bool proc_exists(pid_t pid) {
  struct stat st;
  return ::stat(("/proc/" + std::to_string(pid)).c_str(), &st) == 0;
}

std::set<std::string> open_fds(pid_t pid) {
  std::set<std::string> result;
  auto dir = "/proc/" + std::to_string(pid) + "/fd";
  if (DIR* d = ::opendir(dir.c_str())) {
    while (auto* e = ::readdir(d))
      if (e->d_name[0] != '.')
        result.insert(e->d_name);
    ::closedir(d);
  }
  return result;
}

std::string joined(const std::set<std::string>& xs) {
  std::string out;
  for (const auto& x : xs)
    out += x + " ";
  return out;
}

std::string fd_target(pid_t pid, int fd) {
  char buf[256];
  auto path = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(fd);
  auto n = ::readlink(path.c_str(), buf, sizeof(buf) - 1);
  return n < 0 ? std::string{} : std::string(buf, static_cast<size_t>(n));
}

process_spec cmd(std::string exe, std::vector<std::string> args = {}) {
  process_spec spec;
  spec.executable = std::move(exe);
  spec.args = std::move(args);
  return spec;
}

process_spec sh(std::string script) {
  process_spec spec;
  spec.executable = "/bin/sh";
  spec.args = {"-c", std::move(script)};
  return spec;
}

/// Runs `script` (which starts a grandchild and prints `$!` first) with this process as
/// subreaper, so the grandchild is re-parented to us and can be reaped to prove how it
/// ended. Returns the child and the grandchild's pid (0 if none was printed).
std::pair<caf::expected<child_process>, pid_t> spawn_with_grandchild(std::string script) {
  REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  auto spec = sh(std::move(script));
  spec.stdout_fd = fds[1];
  auto child = spawn_process(spec);
  ::close(fds[1]);
  std::string line;
  char c;
  while (child && ::read(fds[0], &c, 1) == 1 && c != '\n')
    line += c;
  ::close(fds[0]);
  return {std::move(child), static_cast<pid_t>(std::atoi(line.c_str()))};
}

// Kills and reaps a child a failing test may leave behind.
struct reaper {
  child_process& child;
  ~reaper() {
    if (child.pid() > 0 && child.alive()) {
      child.signal_group(SIGKILL);
      wait_for_exit(child.pid(), 10s);
    }
  }
};

} // namespace

TEST_SUITE("adapters.process") {

  TEST_CASE("the exit watcher reports the exit code of a process") {
    auto child = spawn_process(sh("exit 7"));
    REQUIRE(child);
    std::promise<process_exit> done;
    int calls = 0;
    exit_watcher::instance().watch(child->pid(), [&](process_exit e) {
      ++calls;
      done.set_value(e);
    });
    auto fut = done.get_future();
    REQUIRE(fut.wait_for(10s) == std::future_status::ready);
    auto e = fut.get();
    CHECK(e.exited());
    CHECK(e.code == 7);
    CHECK(e.to_string() == "exit code 7");
    CHECK(calls == 1);
    CHECK_FALSE(child->alive());
    CHECK(eventually([&] { return !proc_exists(child->pid()); }));
  }

  TEST_CASE("a watch after the exit gets the remembered status") {
    auto child = spawn_process(sh("exit 5"));
    REQUIRE(child);
    auto first = wait_for_exit(child->pid(), 10s);
    REQUIRE(first);
    CHECK(first->code == 5);
    auto again = wait_for_exit(child->pid(), 10s);
    REQUIRE(again);
    CHECK(again->code == 5);
  }

  TEST_CASE("SIGKILL to the group is reported as signal 9 and leaves no zombie") {
    auto child = spawn_process(cmd("sleep", {"30"}));
    REQUIRE(child);
    reaper guard{*child};
    CHECK(child->alive());
    CHECK(child->own_group());
    CHECK(child->pgid() == child->pid());
    CHECK(::getpgid(child->pid()) == child->pid());
    REQUIRE(child->signal_group(SIGKILL));
    auto e = wait_for_exit(child->pid(), 10s);
    REQUIRE(e);
    CHECK_FALSE(e->exited());
    CHECK(e->signal == SIGKILL);
    CHECK(e->to_string() == "signal 9 (SIGKILL)");
    CHECK_FALSE(child->alive());
    // Reaped, not a zombie: the /proc entry is gone.
    CHECK(eventually([&] { return !proc_exists(child->pid()); }));
    CHECK_FALSE(child->signal_group(SIGKILL));
  }

  TEST_CASE("signal_group kills the grandchildren of the process too") {
    auto spawned = spawn_with_grandchild("sleep 30 & echo $!; wait");
    auto& child = spawned.first;
    auto grandchild = spawned.second;
    REQUIRE(child);
    reaper guard{*child};
    REQUIRE(grandchild > 0);
    CHECK(::getpgid(grandchild) == child->pgid());
    REQUIRE(child->signal_group(SIGKILL));
    auto e = wait_for_exit(child->pid(), 10s);
    REQUIRE(e);
    CHECK(e->signal == SIGKILL);
    // The shell is reaped, so the grandchild has been re-parented to this process.
    auto ge = wait_for_exit(grandchild, 10s);
    REQUIRE(ge);
    CHECK(ge->signal == SIGKILL);
    CHECK(eventually([&] { return !proc_exists(grandchild); }));
    CHECK_FALSE(child->signal_group(0));
  }

  TEST_CASE(
    "an exit watch with kill_group kills what the process left, before the reap") {
    // The leader exits by itself soon and leaves a grandchild in its group.
    auto spawned = spawn_with_grandchild("sleep 30 & echo $!; sleep 0.3");
    auto& child = spawned.first;
    auto grandchild = spawned.second;
    REQUIRE(child);
    REQUIRE(grandchild > 0);
    REQUIRE(::getpgid(grandchild) == child->pgid());
    std::promise<process_exit> leader;
    exit_watcher::instance().watch(
      child->pid(), [&leader](process_exit e) { leader.set_value(e); }, child->pgid());
    auto f = leader.get_future();
    REQUIRE(f.wait_for(10s) == std::future_status::ready);
    CHECK(f.get().exited());
    // Re-parented to this process (subreaper): its status says who ended it.
    auto ge = wait_for_exit(grandchild, 5s);
    REQUIRE_MSG(ge, "the grandchild outlived its leader");
    CHECK(ge->signal == SIGKILL);
  }

  TEST_CASE("a missing executable fails with start_failed naming the path") {
    auto child = spawn_process(cmd("/nonexistent/snakepit-no-such-binary"));
    REQUIRE_FALSE(child);
    CHECK(child.error() == errc::start_failed);
    CHECK(describe(child.error()).find("/nonexistent/snakepit-no-such-binary") !=
          std::string::npos);
    auto bare = spawn_process(cmd("snakepit-no-such-binary"));
    REQUIRE_FALSE(bare);
    CHECK(bare.error() == errc::start_failed);
    CHECK(describe(bare.error()).find("snakepit-no-such-binary") != std::string::npos);
  }

  TEST_CASE("a file that is not executable fails with start_failed naming the path") {
    auto dir = runtime_dir::create("sp-test");
    REQUIRE(dir);
    auto file = dir->file("script");
    std::ofstream{file} << "#!/bin/sh\n";
    ::chmod(file.c_str(), 0600);
    auto child = spawn_process(cmd(file));
    REQUIRE_FALSE(child);
    CHECK(child.error() == errc::start_failed);
    CHECK(describe(child.error()).find("not executable: " + file) != std::string::npos);
  }

  TEST_CASE("children get only stdio and the lifeline as fd 3") {
    // A descriptor the host leaks without O_CLOEXEC must not reach the child.
    int leaked = ::open("/dev/null", O_RDONLY);
    REQUIRE(leaked >= 0);
    auto a = spawn_process(cmd("sleep", {"30"}));
    auto b = spawn_process(cmd("sleep", {"30"}));
    auto no_life = cmd("sleep", {"30"});
    no_life.pass_lifeline = false;
    auto c = spawn_process(no_life);
    ::close(leaked);
    REQUIRE(a);
    REQUIRE(b);
    REQUIRE(c);
    reaper ga{*a}, gb{*b}, gc{*c};
    // sleep's own startup (loader, locale) opens files briefly; a leaked fd would stay.
    CHECK(eventually([&] { return joined(open_fds(a->pid())) == "0 1 2 3 "; }));
    CHECK(eventually([&] { return joined(open_fds(b->pid())) == "0 1 2 3 "; }));
    CHECK(eventually([&] { return joined(open_fds(c->pid())) == "0 1 2 "; }));
    // Both children share the one lifeline pipe, read end only.
    auto target = fd_target(a->pid(), 3);
    CHECK(target.rfind("pipe:", 0) == 0);
    CHECK(fd_target(b->pid(), 3) == target);
    auto flags = std::ifstream{"/proc/" + std::to_string(a->pid()) + "/fdinfo/3"};
    std::string key, value;
    int mode = -1;
    while (flags >> key >> value)
      if (key == "flags:")
        mode = static_cast<int>(std::strtol(value.c_str(), nullptr, 8));
    CHECK((mode & O_ACCMODE) == O_RDONLY);
    // The host holds exactly one write end of that pipe, and it is close-on-exec.
    int writers = 0;
    for (const auto& fd : open_fds(::getpid())) {
      auto n = std::atoi(fd.c_str());
      if (fd_target(::getpid(), n) != target)
        continue;
      int fl = ::fcntl(n, F_GETFL);
      if ((fl & O_ACCMODE) == O_WRONLY) {
        ++writers;
        CHECK((::fcntl(n, F_GETFD) & FD_CLOEXEC) != 0);
      }
    }
    CHECK(writers == 1);
    for (auto* child : {&*a, &*b, &*c})
      child->signal_group(SIGKILL);
    for (auto* child : {&*a, &*b, &*c})
      CHECK(wait_for_exit(child->pid(), 10s).has_value());
  }

  TEST_CASE("the lifeline does not signal EOF while the host lives") {
    // `read` on fd 3 blocks for as long as the host holds the write end.
    auto child = spawn_process(sh("read x <&3; exit 4"));
    REQUIRE(child);
    reaper guard{*child};
    CHECK_FALSE(wait_for_exit(child->pid(), 300ms).has_value());
    CHECK(child->alive());
    child->signal_group(SIGKILL);
    auto e = wait_for_exit(child->pid(), 10s);
    REQUIRE(e);
    CHECK(e->signal == SIGKILL);
  }

  TEST_CASE("children see EOF on the lifeline when the host is SIGKILLed") {
    REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
    auto dir = runtime_dir::create("sp-life");
    REQUIRE(dir);
    // This test binary doubles as a host that spawns a child and then kills itself.
    auto env = build_environment({{"SNAKEPIT_LIFELINE_HOST_DIR", dir->path()}});
    process_spec spec;
    char exe[4096];
    auto n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    REQUIRE(n > 0);
    spec.executable.assign(exe, static_cast<size_t>(n));
    spec.env = env;
    auto host = spawn_process(spec);
    REQUIRE(host);
    auto he = wait_for_exit(host->pid(), 20s);
    REQUIRE(he);
    CHECK(he->signal == SIGKILL);
    std::ifstream pid_file{dir->file("pid")};
    pid_t orphan = 0;
    pid_file >> orphan;
    REQUIRE(orphan > 0);
    // The orphan was re-parented to us; it exits on its own once it sees EOF.
    auto oe = wait_for_exit(orphan, 10s);
    REQUIRE(oe);
    CHECK(oe->code == 0);
    std::ifstream mark{dir->file("mark")};
    std::string text;
    mark >> text;
    CHECK(text == "gone");
  }

  TEST_CASE("the environment gets worker defaults and user overrides win") {
    ::setenv("SNAKEPIT_TEST_INHERITED", "yes", 1);
    auto env = build_environment({{"OMP_NUM_THREADS", "4"}, {"EXTRA", "1"}});
    auto get = [&](const std::string& key) -> std::optional<std::string> {
      std::optional<std::string> found;
      int count = 0;
      for (const auto& [k, v] : env)
        if (k == key) {
          found = v;
          ++count;
        }
      CHECK(count <= 1);
      return found;
    };
    CHECK(get("SNAKEPIT_TEST_INHERITED") == "yes");
    CHECK(get("PYTHONUNBUFFERED") == "1");
    CHECK(get("OPENBLAS_NUM_THREADS") == "1");
    CHECK(get("MKL_NUM_THREADS") == "1");
    CHECK(get("NUMEXPR_NUM_THREADS") == "1");
    CHECK(get("VECLIB_MAXIMUM_THREADS") == "1");
    CHECK(get("OMP_NUM_THREADS") == "4");
    CHECK(get("EXTRA") == "1");
    ::unsetenv("OPENBLAS_NUM_THREADS");
    auto unlimited = build_environment({}, false);
    bool has_blas = false;
    for (const auto& [k, v] : unlimited)
      has_blas = has_blas || k == "OPENBLAS_NUM_THREADS";
    CHECK_FALSE(has_blas);
    ::unsetenv("SNAKEPIT_TEST_INHERITED");
  }

  TEST_CASE("a child runs with the given environment and working directory") {
    auto dir = runtime_dir::create("sp-env");
    REQUIRE(dir);
    auto spec = sh("[ \"$FOO\" = bar ] && [ \"$(pwd)\" = \"$DIR\" ] && [ "
                   "\"$SNAKEPIT_LIFELINE_FD\" = 3 ]");
    spec.env = build_environment({{"FOO", "bar"}, {"DIR", dir->path()}});
    spec.cwd = dir->path();
    auto child = spawn_process(spec);
    REQUIRE(child);
    auto e = wait_for_exit(child->pid(), 10s);
    REQUIRE(e);
    CHECK(e->code == 0);
  }

  TEST_CASE("a runtime_dir is private, short and removed with its contents") {
    std::string path;
    {
      auto dir = runtime_dir::create("sp-test");
      REQUIRE(dir);
      path = dir->path();
      struct stat st;
      REQUIRE(::stat(path.c_str(), &st) == 0);
      CHECK(S_ISDIR(st.st_mode));
      CHECK((st.st_mode & 0777) == 0700);
      CHECK(path.size() + 40 < 108);
      CHECK(dir->file("w1.sock") == path + "/w1.sock");
      std::ofstream{dir->file("ready")} << "x";
      ::mkdir(dir->file("sub").c_str(), 0700);
      std::ofstream{dir->file("sub/inner")} << "y";
      auto moved = std::move(*dir);
      CHECK(dir->path().empty());
      CHECK(moved.path() == path);
    }
    struct stat st;
    CHECK(::stat(path.c_str(), &st) != 0);
    auto bad = runtime_dir::create("a/b");
    CHECK_FALSE(bad);
  }

} // TEST_SUITE
