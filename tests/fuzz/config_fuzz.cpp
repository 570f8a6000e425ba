// Fuzz target `config`: the TOML configuration reader (parse_config) on any text. It
// must answer every input with a config or an invalid_config error naming the origin,
// never crash, throw or hang.
#include "actors/config/config_file.hpp"
#include "adapters/errors.hpp"
#include "tests/fuzz/fuzz_target.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using snakepit::fuzz::require;
  auto cfg = snakepit::parse_config(snakepit::fuzz::text_of(data, size), "fuzz.toml");
  if (cfg) {
    require(!cfg->pools.empty(), "an accepted config has a pool");
    return 0;
  }
  require(cfg.error() == snakepit::errc::invalid_config,
          "a refused config is invalid_config");
  auto message = snakepit::message_of(cfg.error());
  require(message.rfind("fuzz.toml", 0) == 0, "a refusal names the origin first");
  return 0;
}
