// A tiny host for the orphan guard tests: creates a guard, starts workers that ignore
// SIGTERM and EOF (each with a grandchild in its group that ignores them too), watches
// them (and unwatches some), reports every pid on stdout and waits to be killed.
//
//   snakepit_orphan_guard_host <workers> <unwatched>
//
// Prints "reaper <pid>", then "watched <pid>" or "unwatched <pid>" per worker, then
// "ready"; each worker prints "grandchild <worker pid> <pid>". The host exits by itself
// when its parent (the test) dies (EOF on its lifeline, fd 3) or after 120 s.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "adapters/orphan_guard.hpp"
#include "adapters/process.hpp"

namespace ad = snakepit::adapters;

namespace {

void say(const std::string& line) {
  auto text = line + "\n";
  // One write per line: the test reads lines that workers write to the same pipe.
  if (::write(1, text.data(), text.size()) < 0)
    std::_Exit(4);
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 3)
    return 2;
  int workers = std::atoi(argv[1]);
  int unwatched = std::atoi(argv[2]);
  // A backstop for a test that fails to kill us: the guard then does its job anyway.
  ::alarm(120);
  auto guard = ad::orphan_guard::create();
  if (!guard)
    return 3;
  say("reaper " + std::to_string(guard->pid()));
  std::vector<ad::child_process> children;
  for (int i = 0; i < workers; ++i) {
    ad::process_spec spec;
    spec.executable = "/bin/sh";
    // `trap "" TERM` sets SIG_IGN, which both sleeps inherit; neither reads stdin.
    spec.args = {"-c",
                 "trap '' TERM; sleep 300 & echo \"grandchild $$ $!\"; exec sleep 300"};
    spec.pass_lifeline = false;
    auto child = ad::spawn_process(spec);
    if (!child)
      return 5;
    if (auto err = guard->watch(child->pgid()))
      return 6;
    bool keep = i >= unwatched;
    if (!keep)
      guard->unwatch(child->pgid());
    say((keep ? "watched " : "unwatched ") + std::to_string(child->pid()));
    children.push_back(std::move(*child));
  }
  say("ready");
  char byte;
  for (;;) {
    auto n = ::read(ad::lifeline_child_fd(), &byte, 1);
    if (n == 0)
      return 0;
    if (n < 0 && errno != EINTR)
      ::pause(); // no lifeline: wait for a signal (the test's SIGKILL, or the alarm)
  }
}
