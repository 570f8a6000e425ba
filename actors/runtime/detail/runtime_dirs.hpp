// Ownership of runtime directories (`<tmp>/snakepit-XXXXXX`): a runtime marks its own
// with the host's pid and start time and removes those of hosts that are gone, whose
// workers exited through the lifeline but left their sockets and ready files behind
// (the directory half of upstream's ApplicationCleanup).
#pragma once

#include <filesystem>
#include <string>

namespace snakepit::detail {

/// Removes the runtime directories in `parent` (except `skip`) whose owner file
/// names a pid that is dead or now belongs to a process with another start time.
void sweep_runtime_dirs(const std::filesystem::path& parent, const std::string& skip);

/// Writes `<dir>/owner` (this host's pid and start time), then sweeps the runtime
/// directories beside `dir`.
void claim_and_sweep_runtime_dirs(const std::string& dir);

} // namespace snakepit::detail
