// One epoll set with an eventfd to wake it: the loop behind the exit watcher (pidfds)
// and the stderr pump (pipes), each of which runs it on a thread of its own. Plays the
// part the BEAM's I/O poller plays for ports upstream.
#pragma once

#include <cstdint>
#include <vector>

namespace snakepit::adapters::detail {

/// An epoll set plus a wake-up eventfd. `add`, `remove` and `wake` may be called from
/// any thread; `wait` from the one thread that owns the loop.
class wake_loop {
 public:
  /// Creates the epoll set and the eventfd (both close-on-exec).
  wake_loop();

  /// Closes both; the owning thread must have left `wait` for good.
  ~wake_loop();

  wake_loop(const wake_loop&) = delete;
  wake_loop& operator=(const wake_loop&) = delete;

  /// Watches `fd` for readability; `wait` reports it as `key` (not `~0`, the wake key).
  void add(int fd, uint64_t key);

  /// Stops watching `fd` (call before closing it).
  void remove(int fd);

  /// Makes a `wait` in progress (or the next one) return, with no key if nothing else
  /// is ready.
  void wake();

  /// Blocks until a watched fd is readable or `wake` was called; fills `ready` with the
  /// keys of the readable fds (wake-ups consumed, never listed). False when the epoll
  /// set failed for good (the owning thread should leave its loop).
  bool wait(std::vector<uint64_t>& ready);

 private:
  int epfd_ = -1;
  int evfd_ = -1;
};

} // namespace snakepit::adapters::detail
