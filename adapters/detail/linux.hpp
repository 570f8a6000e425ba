// Thin wrappers over the Linux calls that process, process_registry and stderr_pump
// share: pidfds (a process handle that never names a recycled pid, the kernel's answer
// to what Erlang's port ownership gives upstream) and errno texts.
#pragma once

#include <signal.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <system_error>

namespace snakepit::adapters::detail {

/// A pidfd for `pid`, or -1 (the process is gone or not visible). The raw syscall keeps
/// us independent of the glibc version (wrappers arrived in 2.36).
inline int pidfd_open(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

/// Sends `sig` through a pidfd; 0 on success, -1 with errno set otherwise.
inline int pidfd_send_signal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

/// `waitid` on a pidfd (P_PIDFD, Linux 5.4), spelled out for older headers.
inline int pidfd_waitid(int pidfd, siginfo_t* info, int options) {
  constexpr int p_pidfd = 3;
  return ::waitid(static_cast<idtype_t>(p_pidfd), static_cast<id_t>(pidfd), info,
                  options);
}

/// The text of an errno value (strerror is not thread-safe; the generic category is).
inline std::string errno_text(int err) {
  return std::error_code{err, std::generic_category()}.message();
}

} // namespace snakepit::adapters::detail
