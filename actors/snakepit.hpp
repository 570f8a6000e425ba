// The one header a host includes: the runtime facade (start, calls, sessions, tools,
// stats, stop), its configuration, the value types of calls and stats, and the error
// vocabulary. The library's counterpart of upstream's `Snakepit` module.
//
//   #include "actors/snakepit.hpp"
//
//   snakepit::config cfg;                                 // /usr/bin/python3, 1 pool
//   cfg.pools[0].adapter = "snakepit_bridge.adapters.showcase.ShowcaseAdapter";
//   auto rt = snakepit::runtime::start(cfg);              // waits until ready
//   if (!rt)
//     return fmt::print("{}\n", snakepit::describe(rt.error())), 1;
//   auto sum = (*rt)->execute("add", {{"a", 2}, {"b", 40}});  // sum->result == 42
//   (*rt)->stop();                                        // every worker is gone
#pragma once

#include "actors/config/config.hpp"   // snakepit::config, pool_config, log_config
#include "actors/runtime/runtime.hpp" // snakepit::runtime, start_options, run_as_script
#include "actors/types.hpp"           // execute_options, execute_result, pool_stats, …
#include "adapters/errors.hpp"        // errc, describe, python_error_of
