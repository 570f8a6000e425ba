#pragma once

#include <chrono>
#include <cstddef>

#include "supervision/child_spec.hpp"

namespace snakepit::detail {

/// Hands the allocator's free memory back to the system: on glibc `malloc_trim(0)`,
/// which returns the free pages of every arena (gRPC's and CAF's threads each get
/// one, and a long run leaves them fragmented: docs/reliability.md "Soak").
/// Returns true when memory was released; false elsewhere or when there was none.
bool release_free_memory();

/// Caps the number of glibc malloc arenas for the whole process (`mallopt(M_ARENA_MAX)`;
/// config::malloc_arena_max). Takes effect for arenas created afterwards: called before
/// the runtime's threads start, it covers them. Returns false where unsupported.
bool limit_malloc_arenas(int max_arenas);

/// A child of the runtime's top supervisor that calls `release_free_memory` every
/// `interval` (config::release_memory_interval).
supervision::child_spec memory_release_child(std::chrono::milliseconds interval);

} // namespace snakepit::detail
