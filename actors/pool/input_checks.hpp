// What a caller may send into a pool (upstream `Snakepit.Validation`: a printable
// command under 1000 bytes, bounded arguments): one check that the pool core runs
// on every request it accepts and the direct lane runs before it takes a worker, so
// no path dispatches a request outside `pool_input_limits`.
//
//   if (auto err = check_input(cfg.input, req))
//     return err;   // invalid_argument: "command name of 5000 bytes ..."
#pragma once

#include <string>
#include <string_view>

#include <caf/error.hpp>

#include "actors/config/config.hpp"
#include "actors/types.hpp"

namespace snakepit::actors {

/// The first rule of `limits` that `req` breaks, as `invalid_argument` naming the
/// rule (and the name, shown by `printable_name`); none when it keeps them all.
caf::error check_input(const pool_input_limits& limits, const execute_request& req);

/// Whether `name` is a printable command name: not empty, valid UTF-8, no control
/// character (C0, DEL, C1).
bool printable_command(std::string_view name) noexcept;

/// `name` fit for a message: at most 64 bytes of it, bytes that are not printable
/// UTF-8 as `\xNN`, and "... (N bytes)" when cut. Never the whole of a long name,
/// never a raw control byte.
std::string printable_name(std::string_view name);

} // namespace snakepit::actors
