// The orphan guard's two halves: the host side (the wanted groups, a non-blocking pipe)
// and the reaper, a raw fork of a multi-threaded host that may only make system calls.
#include "adapters/orphan_guard.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#if __has_include(<sys/rseq.h>)
#include <sys/rseq.h>
#define SNAKEPIT_HAS_RSEQ 1
#else
#define SNAKEPIT_HAS_RSEQ 0
#endif
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <unordered_set>

#include "adapters/detail/linux.hpp"
#include "adapters/errors.hpp"
#include "adapters/process.hpp"

// The reaper makes its system calls with inline assembly where we have it: no errno
// (thread-local storage it may have unmapped), no PLT, no sanitizer interceptor that
// could wait on a lock some other host thread held at the fork.
#if defined(__x86_64__)
#define SNAKEPIT_REAPER_RAW 1
#else
#define SNAKEPIT_REAPER_RAW 0
#endif

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SNAKEPIT_REAPER_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||               \
  __has_feature(memory_sanitizer)
#define SNAKEPIT_REAPER_SANITIZED 1
#endif
#endif
#ifndef SNAKEPIT_REAPER_SANITIZED
#define SNAKEPIT_REAPER_SANITIZED 0
#endif

#if defined(__has_attribute)
#if __has_attribute(no_stack_protector)
#define SNAKEPIT_REAPER_NO_SSP __attribute__((no_stack_protector))
#endif
#endif
#ifndef SNAKEPIT_REAPER_NO_SSP
#define SNAKEPIT_REAPER_NO_SSP
#endif

// Code that runs in the reaper after it dropped the host's memory: no instrumentation
// (shadow memory, the stack canary in TLS), and no calls at all (everything inlined into
// reaper_main), so nothing but its stack, its block and the text is touched.
#define SNAKEPIT_REAPER_CODE                                                             \
  __attribute__((no_sanitize("address", "thread", "undefined"))) SNAKEPIT_REAPER_NO_SSP
#define SNAKEPIT_REAPER_INLINE                                                           \
  static inline __attribute__((always_inline)) SNAKEPIT_REAPER_CODE

namespace snakepit::adapters {

namespace {

// --- the reaper
// -------------------------------------------------------------------------

constexpr int32_t op_watch = 1;
constexpr int32_t op_unwatch = 2;

/// One command on the pipe; 8 bytes, so every write is atomic (below PIPE_BUF).
struct command {
  int32_t op;
  int32_t pgid;
};

constexpr size_t max_mappings = 8192;
constexpr size_t page = 4096;

struct mapping {
  uintptr_t begin;
  uintptr_t end;
};

/// Everything the reaper needs, allocated before the fork (it cannot allocate). Its own
/// mapping, so the reaper can keep it while it drops the rest; the scratch parts are
/// page-aligned so they can be released once used.
struct reaper_block {
  struct {
    int cmd_fd;
    int ready_fd;
    pid_t host;
    int may_trim;
    uint32_t count;
    uintptr_t keep[2]; ///< addresses whose mappings the trim must keep (besides sp)
  } h;
  alignas(page) pid_t groups[orphan_guard::max_groups];
  alignas(page) char text[64 * 1024];
  alignas(page) mapping drop[max_mappings];
};

SNAKEPIT_REAPER_INLINE long sys(long nr, long a = 0, long b = 0, long c = 0, long d = 0) {
#if SNAKEPIT_REAPER_RAW
  long ret;
  __asm__ volatile("mov %5, %%r10\n\tsyscall"
                   : "=a"(ret)
                   : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(d)
                   : "rcx", "r11", "r10", "memory");
  return ret;
#else
  long ret = ::syscall(nr, a, b, c, d);
  return ret == -1 ? -errno : ret;
#endif
}

template<class T>
SNAKEPIT_REAPER_INLINE long arg(T* p) {
  return static_cast<long>(reinterpret_cast<uintptr_t>(p));
}

SNAKEPIT_REAPER_INLINE long sys_poll(int fd, int timeout_ms) {
  pollfd p;
  p.fd = fd;
  p.events = POLLIN;
  p.revents = 0;
#if defined(SYS_poll)
  return sys(SYS_poll, fd >= 0 ? arg(&p) : 0, fd >= 0 ? 1 : 0, timeout_ms);
#else
  timespec ts;
  ts.tv_sec = timeout_ms / 1000;
  ts.tv_nsec = (timeout_ms % 1000) * 1000000L;
  return sys(SYS_ppoll, fd >= 0 ? arg(&p) : 0, fd >= 0 ? 1 : 0, arg(&ts), 0);
#endif
}

SNAKEPIT_REAPER_INLINE void sys_sleep_ms(int ms) {
  sys_poll(-1, ms);
}

SNAKEPIT_REAPER_INLINE int sys_open_read(const char* path) {
#if defined(SYS_open)
  return static_cast<int>(sys(SYS_open, arg(path), O_RDONLY | O_CLOEXEC));
#else
  return static_cast<int>(sys(SYS_openat, AT_FDCWD, arg(path), O_RDONLY | O_CLOEXEC));
#endif
}

/// Sets the disposition of `sig` to SIG_DFL (false) or SIG_IGN (true).
SNAKEPIT_REAPER_INLINE void sys_disposition(int sig, bool ignore) {
#if SNAKEPIT_REAPER_RAW
  // The kernel's struct sigaction on x86-64; no restorer is needed without a handler.
  struct {
    unsigned long handler;
    unsigned long flags;
    unsigned long restorer;
    unsigned long mask;
  } act;
  act.handler = ignore ? 1 : 0;
  act.flags = 0;
  act.restorer = 0;
  act.mask = 0;
  sys(SYS_rt_sigaction, sig, arg(&act), 0, 8);
#else
  struct sigaction act;
  act.sa_handler = ignore ? SIG_IGN : SIG_DFL;
  act.sa_flags = 0;
  sigemptyset(&act.sa_mask);
  ::sigaction(sig, &act, nullptr);
#endif
}

SNAKEPIT_REAPER_INLINE void sys_unblock_all() {
#if SNAKEPIT_REAPER_RAW
  unsigned long none = 0;
  sys(SYS_rt_sigprocmask, SIG_SETMASK, arg(&none), 0, 8);
#else
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
#endif
}

SNAKEPIT_REAPER_INLINE void sys_close_range(unsigned first, unsigned last) {
  if (first > last)
    return;
  if (sys(SYS_close_range, first, last, 0) == 0)
    return;
  // Before Linux 5.9: close one by one up to the descriptor limit.
  struct {
    unsigned long cur;
    unsigned long max;
  } lim;
  unsigned long top = 65536;
  if (sys(SYS_prlimit64, 0, RLIMIT_NOFILE, 0, arg(&lim)) == 0 && lim.cur < top)
    top = lim.cur;
  for (unsigned long fd = first; fd <= last && fd < top; ++fd)
    sys(SYS_close, static_cast<long>(fd));
}

/// Closes every descriptor but `a` and `b`: a host fd kept open here would outlive the
/// host (the lifeline's write end would hide the host's death from Python workers).
SNAKEPIT_REAPER_INLINE void close_all_but(int a, int b) {
  unsigned lo = static_cast<unsigned>(a < b ? a : b);
  unsigned hi = static_cast<unsigned>(a < b ? b : a);
  if (lo > 0)
    sys_close_range(0, lo - 1);
  sys_close_range(lo + 1, hi - 1);
  sys_close_range(hi + 1, ~0U);
}

SNAKEPIT_REAPER_INLINE bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

SNAKEPIT_REAPER_INLINE uintptr_t hex_value(char c) {
  return c <= '9' ? static_cast<uintptr_t>(c - '0')
                  : static_cast<uintptr_t>(c - 'a' + 10);
}

/// Reads a number in `base` (10 or 16) at `*pos`, then skips the spaces after it.
SNAKEPIT_REAPER_INLINE uintptr_t parse_number(const char* s, size_t len, size_t* pos,
                                              int base) {
  uintptr_t v = 0;
  size_t i = *pos;
  while (i < len && (base == 16 ? is_hex(s[i]) : (s[i] >= '0' && s[i] <= '9'))) {
    v = v * static_cast<uintptr_t>(base) + hex_value(s[i]);
    ++i;
  }
  while (i < len && s[i] == ' ')
    ++i;
  *pos = i;
  return v;
}

SNAKEPIT_REAPER_INLINE bool starts_with(const char* s, size_t len, const char* prefix) {
  size_t i = 0;
  for (; prefix[i] != '\0'; ++i)
    if (i >= len || s[i] != prefix[i])
      return false;
  return true;
}

/// What the scan of /proc/self/maps found.
struct scan_result {
  size_t drop_count;
  bool complete;
  uintptr_t stack_begin; ///< the main thread's "[stack]" (argv lives there)
  uintptr_t stack_end;
};

/// One line of /proc/self/maps: "begin-end perms offset dev inode   [path]". A private,
/// writable, anonymous mapping (the heap, malloc arenas, thread stacks, .bss) is host
/// memory the reaper can drop; file mappings, "[stack]", "[vdso]" and the like stay.
SNAKEPIT_REAPER_INLINE void scan_line(reaper_block* blk, const char* s, size_t len,
                                      scan_result* out) {
  size_t pos = 0;
  uintptr_t begin = parse_number(s, len, &pos, 16);
  if (pos >= len || s[pos] != '-')
    return;
  ++pos;
  uintptr_t end = parse_number(s, len, &pos, 16);
  if (pos + 5 > len)
    return;
  bool writable_private = s[pos + 1] == 'w' && s[pos + 3] == 'p';
  pos += 5;
  parse_number(s, len, &pos, 16); // offset
  while (pos < len && s[pos] != ' ')
    ++pos; // device
  while (pos < len && s[pos] == ' ')
    ++pos;
  uintptr_t inode = parse_number(s, len, &pos, 10);
  const char* name = s + pos;
  size_t name_len = len - pos;
  if (starts_with(name, name_len, "[stack]")) {
    out->stack_begin = begin;
    out->stack_end = end;
    return;
  }
  if (!writable_private || inode != 0)
    return;
  if (name_len != 0 && !starts_with(name, name_len, "[heap]") &&
      !starts_with(name, name_len, "[anon:"))
    return;
  if (out->drop_count == max_mappings) {
    out->complete = false;
    return;
  }
  blk->drop[out->drop_count].begin = begin;
  blk->drop[out->drop_count].end = end;
  ++out->drop_count;
}

SNAKEPIT_REAPER_INLINE scan_result scan_maps(reaper_block* blk) {
  scan_result out;
  out.drop_count = 0;
  out.complete = true;
  out.stack_begin = 0;
  out.stack_end = 0;
  int fd = sys_open_read("/proc/self/maps");
  if (fd < 0)
    return out;
  size_t fill = 0;
  for (;;) {
    long n = sys(SYS_read, fd, arg(blk->text + fill),
                 static_cast<long>(sizeof(blk->text) - fill));
    if (n == -EINTR)
      continue;
    if (n < 0) {
      out.drop_count = 0;
      sys(SYS_close, fd);
      return out;
    }
    if (n == 0)
      break;
    fill += static_cast<size_t>(n);
    size_t start = 0;
    for (size_t i = 0; i < fill; ++i)
      if (blk->text[i] == '\n') {
        scan_line(blk, blk->text + start, i - start, &out);
        start = i + 1;
      }
    if (start == 0 && fill == sizeof(blk->text)) {
      // A line longer than the buffer: give up rather than guess.
      out.drop_count = 0;
      sys(SYS_close, fd);
      return out;
    }
    size_t tail = fill - start;
    for (size_t k = 0; k < tail; ++k)
      blk->text[k] = blk->text[start + k];
    fill = tail;
  }
  sys(SYS_close, fd);
  return out;
}

/// Makes /proc/<pid>/cmdline read "snakepit-reaper" instead of the host's command line,
/// so nothing that finds processes by command line (ps, a sweep by run id) takes the
/// reaper for the host or one of its workers. The argument strings live in the main
/// thread's stack, which the reaper keeps (its own copy-on-write copy).
SNAKEPIT_REAPER_INLINE void rename_cmdline(reaper_block* blk, const scan_result& scan) {
  int fd = sys_open_read("/proc/self/stat");
  if (fd < 0)
    return;
  long n = sys(SYS_read, fd, arg(blk->text), static_cast<long>(sizeof(blk->text) - 1));
  sys(SYS_close, fd);
  if (n <= 0)
    return;
  size_t len = static_cast<size_t>(n);
  // The command name may hold spaces and ')': the fields start after the last ')'.
  size_t pos = len;
  while (pos > 0 && blk->text[pos - 1] != ')')
    --pos;
  if (pos == 0)
    return;
  // Field 2 ends at pos - 1; arg_start and arg_end are fields 48 and 49.
  int field = 2;
  uintptr_t arg_start = 0;
  uintptr_t arg_end = 0;
  while (pos < len && field < 49) {
    while (pos < len && blk->text[pos] == ' ')
      ++pos;
    ++field;
    if (field == 48 || field == 49) {
      uintptr_t v = parse_number(blk->text, len, &pos, 10);
      (field == 48 ? arg_start : arg_end) = v;
      continue;
    }
    while (pos < len && blk->text[pos] != ' ')
      ++pos;
  }
  const char name[] = "snakepit-reaper";
  size_t name_len = sizeof(name); // with the terminating NUL
  if (arg_start == 0 || arg_end <= arg_start + name_len || arg_start < scan.stack_begin ||
      arg_end > scan.stack_end)
    return;
  char* args = reinterpret_cast<char*>(arg_start);
  size_t size = arg_end - arg_start;
  for (size_t i = 0; i < size; ++i)
    args[i] = i < name_len ? name[i] : '\0';
  // A non-NUL last byte tells the kernel the title was rewritten (setproctitle): it
  // then reports the string up to the first NUL.
  args[size - 1] = ' ';
}

/// Drops the host memory the reaper inherited. The fork shares every page
/// copy-on-write; each page the host later writes or frees would stay behind here as a
/// private copy, so without this the reaper grows towards the host's size at the fork.
SNAKEPIT_REAPER_INLINE bool trim(reaper_block* blk, const scan_result& scan) {
  if (scan.drop_count == 0)
    return false;
  int here = 0;
  auto sp = reinterpret_cast<uintptr_t>(&here);
  auto own = reinterpret_cast<uintptr_t>(blk);
  uintptr_t stack_begin = 0;
  for (size_t i = 0; i < scan.drop_count; ++i) {
    const auto& m = blk->drop[i];
    if (sp >= m.begin && sp < m.end) {
      stack_begin = m.begin;
      continue;
    }
    if ((own >= m.begin && own < m.end) ||
        (blk->h.keep[0] >= m.begin && blk->h.keep[0] < m.end) ||
        (blk->h.keep[1] >= m.begin && blk->h.keep[1] < m.end))
      continue;
    sys(SYS_munmap, static_cast<long>(m.begin), static_cast<long>(m.end - m.begin));
  }
  // Below the stack pointer of the forking thread lies only what its deeper calls left.
  uintptr_t keep_below = 64 * 1024;
  uintptr_t low = (sp & ~(page - 1)) - keep_below;
  if (stack_begin != 0 && low > stack_begin)
    sys(SYS_madvise, static_cast<long>(stack_begin), static_cast<long>(low - stack_begin),
        MADV_DONTNEED);
  // The scratch parts of the block are not needed any more.
  sys(SYS_madvise, arg(blk->text),
      static_cast<long>(sizeof(blk->text) + sizeof(blk->drop)), MADV_DONTNEED);
  return scan.complete;
}

SNAKEPIT_REAPER_INLINE void apply(reaper_block* blk, const command& cmd) {
  auto& count = blk->h.count;
  uint32_t i = 0;
  while (i < count && blk->groups[i] != cmd.pgid)
    ++i;
  if (cmd.op == op_watch && i == count && count < orphan_guard::max_groups)
    blk->groups[count++] = cmd.pgid;
  else if (cmd.op == op_unwatch && i < count)
    blk->groups[i] = blk->groups[--count];
}

/// Reads commands until the host is gone: EOF on the pipe (every write end closed: the
/// host died, exec'ed or closed the guard) or a new parent (the host died while a
/// process it forked without exec still holds the write end).
SNAKEPIT_REAPER_INLINE void serve(reaper_block* blk) {
  command cmds[256];
  int fd = blk->h.cmd_fd;
  for (;;) {
    long ready = sys_poll(fd, 250);
    if (ready < 0 && ready != -EINTR)
      return;
    if (ready > 0) {
      long n = sys(SYS_read, fd, arg(cmds), static_cast<long>(sizeof(cmds)));
      if (n == 0)
        return;
      if (n < 0 && n != -EINTR && n != -EAGAIN)
        return;
      if (n > 0) {
        size_t bytes = static_cast<size_t>(n);
        // Writes of 8 bytes are atomic, so a torn record is only ever the end of a read
        // that stopped early; the rest is already in the pipe.
        while (bytes % sizeof(command) != 0) {
          long more = sys(SYS_read, fd, arg(reinterpret_cast<char*>(cmds) + bytes),
                          static_cast<long>(sizeof(command) - bytes % sizeof(command)));
          if (more == -EINTR)
            continue;
          if (more <= 0)
            return;
          bytes += static_cast<size_t>(more);
        }
        for (size_t i = 0; i < bytes / sizeof(command); ++i)
          apply(blk, cmds[i]);
      }
    }
    if (sys(SYS_getppid) != blk->h.host)
      return;
  }
}

/// SIGTERM (and SIGCONT, so a stopped group can act on it) to every group, up to
/// 300 ms for them to go, then SIGKILL to what is left.
SNAKEPIT_REAPER_INLINE void kill_all(reaper_block* blk) {
  uint32_t count = blk->h.count;
  if (count == 0)
    return;
  for (uint32_t i = 0; i < count; ++i) {
    sys(SYS_kill, -blk->groups[i], SIGTERM);
    sys(SYS_kill, -blk->groups[i], SIGCONT);
  }
  for (int round = 0; round < 30; ++round) {
    sys_sleep_ms(10);
    bool any = false;
    for (uint32_t i = 0; i < count && !any; ++i)
      any = sys(SYS_kill, -blk->groups[i], 0) != -ESRCH;
    if (!any)
      return;
  }
  for (uint32_t i = 0; i < count; ++i)
    sys(SYS_kill, -blk->groups[i], SIGKILL);
}

/// The reaper's whole life; runs in the child of a raw clone of the host.
[[noreturn]] __attribute__((noinline)) SNAKEPIT_REAPER_CODE void
reaper_main(reaper_block* blk) {
  // The host's handlers must never run here (one could write to a host pipe we still
  // hold): every signal was blocked across the clone, now each gets its default, and the
  // polite ones are ignored. The reaper ends when its job is done; SIGKILL still works.
  for (int sig = 1; sig < 65; ++sig)
    if (sig != SIGKILL && sig != SIGSTOP)
      sys_disposition(sig, false);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE, SIGUSR1, SIGUSR2, SIGALRM,
                  SIGTSTP, SIGTTIN, SIGTTOU})
    sys_disposition(sig, true);
  // Its own session and group: a kill of the host's group (a shell's Ctrl-C, a test
  // killing the host's group) does not take the reaper along.
  sys(SYS_setsid);
  sys(SYS_chdir, arg("/"));
  sys(SYS_prctl, PR_SET_NAME, arg("snakepit-reaper"));
  close_all_but(blk->h.cmd_fd, blk->h.ready_fd);
  auto scan = scan_maps(blk);
  rename_cmdline(blk, scan);
  bool trimmed = blk->h.may_trim != 0 && trim(blk, scan);
  sys_unblock_all();
  char ready = trimmed ? 'T' : 'R';
  sys(SYS_write, blk->h.ready_fd, arg(&ready), 1);
  sys(SYS_close, blk->h.ready_fd);
  serve(blk);
  kill_all(blk);
  for (;;)
    sys(SYS_exit_group, 0);
}

// --- the host side
// ----------------------------------------------------------------------

constexpr auto ready_timeout = std::chrono::seconds{5};
constexpr auto drain_timeout = std::chrono::seconds{1};

/// The calling thread's rseq area as glibc registered it, or 0.
uintptr_t rseq_area() {
#if SNAKEPIT_HAS_RSEQ
  if (__rseq_size > 0)
    return reinterpret_cast<uintptr_t>(__builtin_thread_pointer()) +
           static_cast<uintptr_t>(__rseq_offset);
#endif
  return 0;
}

caf::error start_error(const char* what, int err) {
  return make_error(errc::start_failed, std::string{"orphan guard: "} + what + ": " +
                                          detail::errno_text(err));
}

void close_fd(int& fd) {
  if (fd >= 0)
    ::close(fd);
  fd = -1;
}

} // namespace

struct orphan_guard::impl {
  mutable std::mutex mtx;
  int write_fd = -1;
  // Kept open only so that a write after the reaper's death fills the pipe (EAGAIN)
  // instead of raising SIGPIPE in the host.
  int read_fd = -1;
  pid_t reaper = 0;
  bool trimmed = false;
  std::shared_ptr<std::atomic<bool>> exited = std::make_shared<std::atomic<bool>>(false);
  // What the caller wants watched, what the reaper has been told, and the groups where
  // the two may differ. Only the latest state per group is sent, so a full pipe costs
  // at most one entry per group, and the order between groups does not matter (the
  // reaper's table is a set).
  std::unordered_set<pid_t> wanted;
  std::unordered_set<pid_t> told;
  std::unordered_set<pid_t> dirty;
  // The last write found the pipe full: until poll says it has room again, a call does
  // not walk the pending groups (that would make each call cost O(pending)).
  bool full = false;

  ~impl() {
    std::lock_guard<std::mutex> guard{mtx};
    auto until = std::chrono::steady_clock::now() + drain_timeout;
    while (!flush_locked() && !exited->load()) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
      if (left.count() <= 0)
        break;
      pollfd p{write_fd, POLLOUT, 0};
      ::poll(&p, 1, static_cast<int>(left.count()));
    }
    close_fd(write_fd);
    close_fd(read_fd);
  }

  /// Writes the pending changes: removals first, so the reaper's table never holds more
  /// than max_groups. False if the pipe is full (the rest stays pending).
  bool flush_locked() {
    if (dirty.empty())
      return true;
    if (full) {
      pollfd p{write_fd, POLLOUT, 0};
      if (::poll(&p, 1, 0) <= 0 || (p.revents & POLLOUT) == 0)
        return false;
      full = false;
    }
    for (int pass = 0; pass < 2; ++pass) {
      bool adding = pass == 1;
      for (auto it = dirty.begin(); it != dirty.end();) {
        auto pgid = *it;
        bool want = wanted.count(pgid) != 0;
        if (want == (told.count(pgid) != 0)) {
          it = dirty.erase(it);
          continue;
        }
        if (want != adding) {
          ++it;
          continue;
        }
        command cmd{want ? op_watch : op_unwatch, static_cast<int32_t>(pgid)};
        auto n = ::write(write_fd, &cmd, sizeof(cmd));
        if (n < 0 && errno == EINTR)
          continue;
        if (n != static_cast<ssize_t>(sizeof(cmd))) {
          full = true;
          return false;
        }
        if (want)
          told.insert(pgid);
        else
          told.erase(pgid);
        it = dirty.erase(it);
      }
    }
    return true;
  }
};

orphan_guard::orphan_guard(std::unique_ptr<impl> impl) : impl_(std::move(impl)) {}

orphan_guard::orphan_guard() noexcept = default;

orphan_guard::orphan_guard(orphan_guard&& other) noexcept = default;

orphan_guard& orphan_guard::operator=(orphan_guard&& other) noexcept = default;

orphan_guard::~orphan_guard() = default;

caf::expected<orphan_guard> orphan_guard::create() {
  auto state = std::make_unique<impl>();
  int cmd[2];
  if (::pipe2(cmd, O_CLOEXEC) != 0)
    return start_error("cannot create the command pipe", errno);
  state->read_fd = cmd[0];
  state->write_fd = cmd[1];
  // Only the host's end is non-blocking: an actor thread must never wait on the reaper.
  ::fcntl(cmd[1], F_SETFL, O_NONBLOCK);
  // Room for 32768 commands before a stalled reaper makes changes wait (best effort:
  // the default 64 kB holds 8192).
  ::fcntl(cmd[1], F_SETPIPE_SZ, 256 * 1024);
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0)
    return start_error("cannot create the ready pipe", errno);
  // Between two inaccessible pages, so the kernel never merges the block with a
  // neighbouring host mapping that the reaper would then have to keep as well.
  constexpr size_t mem_size = sizeof(reaper_block) + 2 * page;
  void* mem = ::mmap(nullptr, mem_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED ||
      ::mprotect(static_cast<char*>(mem) + page, sizeof(reaper_block),
                 PROT_READ | PROT_WRITE) != 0) {
    auto err = errno;
    if (mem != MAP_FAILED)
      ::munmap(mem, mem_size);
    ::close(ready[0]);
    ::close(ready[1]);
    return start_error("cannot map the reaper's memory", err);
  }
  auto* blk = reinterpret_cast<reaper_block*>(static_cast<char*>(mem) + page);
  blk->h.cmd_fd = cmd[0];
  blk->h.ready_fd = ready[1];
  blk->h.host = ::getpid();
  blk->h.may_trim = SNAKEPIT_REAPER_RAW && !SNAKEPIT_REAPER_SANITIZED;
  blk->h.count = 0;
  // The forking thread's control block stays: the kernel writes its rseq area (glibc
  // registers one per thread, and a fork inherits the registration) on the way back to
  // user space, and kills the process with SIGSEGV if that memory is gone.
  blk->h.keep[0] = static_cast<uintptr_t>(::pthread_self());
  blk->h.keep[1] = rseq_area();
  // A raw clone rather than fork(): the pthread_atfork handlers of gRPC and others are
  // not run (they may lock or start threads), and the child never returns into code
  // that would need them. Every signal is blocked across it (see reaper_main).
  sigset_t all;
  sigset_t old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  long pid = ::syscall(SYS_clone, static_cast<long>(SIGCHLD), 0L, 0L, 0L, 0L);
  if (pid == 0)
    reaper_main(blk);
  auto clone_err = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ::munmap(mem, mem_size);
  ::close(ready[1]);
  if (pid < 0) {
    ::close(ready[0]);
    return start_error("cannot start the reaper", clone_err);
  }
  state->reaper = static_cast<pid_t>(pid);
  // Opened before anyone can reap the reaper, so a kill below never hits a recycled pid.
  int pidfd = detail::pidfd_open(state->reaper);
  exit_watcher::instance().watch(
    state->reaper, [exited = state->exited](process_exit) { exited->store(true); });
  // The byte, then EOF: the reaper closes its end right after writing, so on return it
  // holds nothing of the host but its command pipe.
  char byte = 0;
  bool got_byte = false;
  bool eof = false;
  auto until = std::chrono::steady_clock::now() + ready_timeout;
  while (!eof) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      until - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      break;
    pollfd p{ready[0], POLLIN, 0};
    auto polled = ::poll(&p, 1, static_cast<int>(left.count()));
    if (polled < 0 && errno == EINTR)
      continue;
    if (polled <= 0)
      break;
    char c;
    auto n = ::read(ready[0], &c, 1);
    if (n == 1) {
      byte = c;
      got_byte = true;
    } else if (n == 0) {
      eof = true;
    } else if (errno != EINTR) {
      break;
    }
  }
  ::close(ready[0]);
  if (!got_byte || !eof) {
    if (pidfd >= 0)
      detail::pidfd_send_signal(pidfd, SIGKILL);
    if (pidfd >= 0)
      ::close(pidfd);
    return make_error(errc::start_failed, eof ? "orphan guard: the reaper died at start"
                                              : "orphan guard: the reaper did not start");
  }
  if (pidfd >= 0)
    ::close(pidfd);
  state->trimmed = byte == 'T';
  return orphan_guard{std::move(state)};
}

caf::error orphan_guard::watch(pid_t pgid) {
  if (!impl_)
    return make_error(errc::internal, "orphan guard: watch on an empty guard");
  if (pgid < 2)
    return make_error(errc::invalid_argument,
                      "orphan guard: not a process group id: " + std::to_string(pgid));
  if (pgid == ::getpgrp())
    return make_error(errc::invalid_argument,
                      "orphan guard: refusing to watch the host's own process group " +
                        std::to_string(pgid));
  std::lock_guard<std::mutex> guard{impl_->mtx};
  if (impl_->exited->load())
    return make_error(errc::internal, "orphan guard: the reaper (pid " +
                                        std::to_string(impl_->reaper) + ") is gone");
  if (impl_->wanted.count(pgid) == 0) {
    if (impl_->wanted.size() >= max_groups)
      return make_error(errc::quota_exceeded, "orphan guard: already watching " +
                                                std::to_string(max_groups) +
                                                " process groups");
    impl_->wanted.insert(pgid);
    impl_->dirty.insert(pgid);
  }
  impl_->flush_locked();
  return {};
}

void orphan_guard::unwatch(pid_t pgid) {
  if (!impl_)
    return;
  std::lock_guard<std::mutex> guard{impl_->mtx};
  if (impl_->wanted.erase(pgid) != 0)
    impl_->dirty.insert(pgid);
  impl_->flush_locked();
}

bool orphan_guard::flush() {
  if (!impl_)
    return true;
  std::lock_guard<std::mutex> guard{impl_->mtx};
  return impl_->flush_locked();
}

size_t orphan_guard::pending() const {
  if (!impl_)
    return 0;
  std::lock_guard<std::mutex> guard{impl_->mtx};
  size_t n = 0;
  for (auto pgid : impl_->dirty)
    n += (impl_->wanted.count(pgid) != 0) != (impl_->told.count(pgid) != 0) ? 1 : 0;
  return n;
}

size_t orphan_guard::watched() const {
  if (!impl_)
    return 0;
  std::lock_guard<std::mutex> guard{impl_->mtx};
  return impl_->wanted.size();
}

pid_t orphan_guard::pid() const {
  return impl_ ? impl_->reaper : 0;
}

bool orphan_guard::alive() const {
  return impl_ && !impl_->exited->load();
}

bool orphan_guard::trimmed() const {
  return impl_ && impl_->trimmed;
}

} // namespace snakepit::adapters
