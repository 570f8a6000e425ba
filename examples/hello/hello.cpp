// The README's host example, built so it stays true (in this tree, and by
// examples/hello/CMakeLists.txt against an installed snakepit).
#include <fmt/format.h>

#include "actors/snakepit.hpp"

int main() {
  snakepit::config cfg; // interpreter: /usr/bin/python3
  cfg.pools[0].pool_size = 4;
  cfg.pools[0].adapter = "snakepit_bridge.adapters.showcase.ShowcaseAdapter";
  auto rt = snakepit::runtime::start(cfg); // validates, starts, waits until ready
  if (!rt)
    return fmt::print("{}\n", snakepit::describe(rt.error())), 1;
  auto sum = (*rt)->execute("add", {{"a", 2}, {"b", 40}});
  if (sum)
    fmt::print("{}\n", sum->result.dump()); // 42
  auto bad = (*rt)->execute("fail", {{"message", "no"}});
  if (auto py = snakepit::python_error_of(bad.error()))
    fmt::print("{}: {}\n", py->type, py->message); // ValueError: no
  (*rt)->stop();                                   // returns when every worker is gone
}
