// doctest main plus one helper mode: with SNAKEPIT_LIFELINE_HOST_DIR set, this binary
// acts as a tiny host that spawns a lifeline-watching child and then SIGKILLs itself, so
// the lifeline test can observe a real host death.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "adapters/process.hpp"

namespace {

int lifeline_host(const std::string& dir) {
  namespace ad = snakepit::adapters;
  ad::process_spec spec;
  spec.executable = "/bin/sh";
  // Blocks on fd 3 until the host is gone, then leaves a mark.
  spec.args = {"-c", "read x <&3; echo gone > '" + dir + "/mark'"};
  auto child = ad::spawn_process(spec);
  if (!child)
    return 2;
  {
    std::ofstream out{dir + "/pid.tmp"};
    out << child->pid() << '\n';
  }
  ::rename((dir + "/pid.tmp").c_str(), (dir + "/pid").c_str());
  ::raise(SIGKILL);
  return 3;
}

} // namespace

int main(int argc, char** argv) {
  if (const char* dir = std::getenv("SNAKEPIT_LIFELINE_HOST_DIR"))
    return lifeline_host(dir);
  doctest::Context ctx;
  ctx.applyCommandLine(argc, argv);
  return ctx.run();
}
