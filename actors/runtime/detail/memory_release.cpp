#include "actors/runtime/detail/memory_release.hpp"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <caf/all.hpp>

namespace snakepit::detail {

namespace {

using release_atom = caf::atom_constant<caf::atom("memrelease")>;

} // namespace

bool release_free_memory() {
#if defined(__GLIBC__)
  return ::malloc_trim(0) != 0;
#else
  return false;
#endif
}

bool limit_malloc_arenas(int max_arenas) {
#if defined(__GLIBC__)
  return ::mallopt(M_ARENA_MAX, max_arenas) == 1;
#else
  (void)max_arenas;
  return false;
#endif
}

supervision::child_spec memory_release_child(std::chrono::milliseconds interval) {
  return supervision::worker_child(
    "memory_release",
    [](caf::event_based_actor* self, std::chrono::milliseconds every) -> caf::behavior {
      self->delayed_send(self, every, release_atom::value);
      return {
        [=](release_atom) {
          release_free_memory();
          self->delayed_send(self, every, release_atom::value);
        },
      };
    },
    interval);
}

} // namespace snakepit::detail
