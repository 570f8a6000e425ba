#include "adapters/process_registry.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "adapters/detail/linux.hpp"
#include "adapters/errors.hpp"

namespace snakepit::adapters {

namespace {

int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

caf::error db_error(sqlite3* db, const std::string& what) {
  return make_error(errc::internal, fmt::format("process registry: {}: {}", what,
                                                db ? sqlite3_errmsg(db) : "no database"));
}

/// A prepared statement that finalizes itself.
class stmt {
 public:
  stmt(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &st_, nullptr) != SQLITE_OK)
      st_ = nullptr;
  }
  ~stmt() { sqlite3_finalize(st_); }
  stmt(const stmt&) = delete;
  stmt& operator=(const stmt&) = delete;

  explicit operator bool() const { return st_ != nullptr; }
  stmt& bind(int i, int64_t v) {
    sqlite3_bind_int64(st_, i, v);
    return *this;
  }
  stmt& bind(int i, const std::string& v) {
    sqlite3_bind_text(st_, i, v.c_str(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  /// SQLITE_ROW, SQLITE_DONE or an error code.
  int step() { return sqlite3_step(st_); }
  int64_t i64(int col) const { return sqlite3_column_int64(st_, col); }
  std::string text(int col) const {
    auto* p = sqlite3_column_text(st_, col);
    return p ? reinterpret_cast<const char*>(p) : "";
  }
  /// Runs a statement that returns no rows.
  caf::error run(const std::string& what) {
    if (!st_)
      return db_error(db_, "prepare " + what);
    if (step() != SQLITE_DONE)
      return db_error(db_, what);
    return caf::none;
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* st_ = nullptr;
};

process_record read_record(const stmt& s) {
  process_record r;
  r.id = s.i64(0);
  r.run_id = s.text(1);
  r.pid = static_cast<pid_t>(s.i64(2));
  r.pgid = static_cast<pid_t>(s.i64(3));
  r.start_time = static_cast<uint64_t>(s.i64(4));
  r.state = s.text(5);
  r.label = s.text(6);
  return r;
}

constexpr const char* select_columns =
  "SELECT id, run_id, pid, pgid, start_time, state, label FROM processes";

} // namespace

std::optional<uint64_t> process_start_time(pid_t pid) {
  if (pid <= 0)
    return std::nullopt;
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  std::string line;
  if (!in || !std::getline(in, line))
    return std::nullopt;
  // The command name (field 2) may contain spaces and parentheses: fields are counted
  // from the last ')'.
  auto close = line.rfind(')');
  if (close == std::string::npos)
    return std::nullopt;
  std::istringstream rest{line.substr(close + 1)};
  std::string field;
  // Field 3 (state) is the first after ')'; start time is field 22.
  for (int i = 3; i <= 22; ++i)
    if (!(rest >> field))
      return std::nullopt;
  char* end = nullptr;
  auto value = std::strtoull(field.c_str(), &end, 10);
  if (end == field.c_str())
    return std::nullopt;
  return static_cast<uint64_t>(value);
}

/// The state letter of `/proc/<pid>/stat` (field 3), 0 if the process does not exist.
static char process_state(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  std::string line;
  if (!in || !std::getline(in, line))
    return 0;
  auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() ? line[close + 2] : 0;
}

std::string current_boot_id() {
  std::ifstream in{"/proc/sys/kernel/random/boot_id"};
  std::string id;
  std::getline(in, id);
  return id;
}

std::string default_data_dir() {
  auto usable = [](const char* v) { return v != nullptr && v[0] == '/'; };
  if (auto* state = std::getenv("XDG_STATE_HOME"); usable(state))
    return std::string{state} + "/snakepit";
  if (auto* home = std::getenv("HOME"); usable(home))
    return std::string{home} + "/.local/state/snakepit";
  return fmt::format("/tmp/snakepit-state-{}", ::getuid());
}

struct process_registry::db {
  sqlite3* handle = nullptr;
  ~db() { sqlite3_close_v2(handle); }
};

process_registry::process_registry(std::string path)
  : path_(std::move(path)), db_(std::make_unique<db>()), boot_id_(current_boot_id()) {}

process_registry::~process_registry() = default;

caf::error process_registry::exec(const char* sql) {
  char* msg = nullptr;
  if (sqlite3_exec(db_->handle, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
    auto err = make_error(
      errc::internal, fmt::format("process registry: {}: {}", sql, msg ? msg : "error"));
    sqlite3_free(msg);
    return err;
  }
  return caf::none;
}

caf::expected<std::shared_ptr<process_registry>>
process_registry::open(const std::string& data_dir) {
  if (data_dir.empty())
    return make_error(errc::invalid_config, "process registry: empty data directory");
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec)
    return make_error(
      errc::start_failed,
      fmt::format("process registry: cannot create {}: {}", data_dir, ec.message()));
  ::chmod(data_dir.c_str(), 0700);
  std::shared_ptr<process_registry> reg{new process_registry(data_dir + "/processes.db")};
  auto rc = sqlite3_open_v2(
    reg->path_.c_str(), &reg->db_->handle,
    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK)
    return make_error(errc::start_failed,
                      fmt::format("process registry: cannot open {}: {}", reg->path_,
                                  reg->db_->handle ? sqlite3_errmsg(reg->db_->handle)
                                                   : sqlite3_errstr(rc)));
  sqlite3_busy_timeout(reg->db_->handle, 10000);
  // auto_vacuum must precede the first table; WAL keeps readers off the writers' way;
  // the size limit truncates the WAL after checkpoints so the files stay small.
  for (auto* sql :
       {"PRAGMA auto_vacuum=FULL", "PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
        "PRAGMA journal_size_limit=262144", "PRAGMA wal_autocheckpoint=100",
        "CREATE TABLE IF NOT EXISTS runs("
        " run_id TEXT PRIMARY KEY, host_pid INTEGER NOT NULL,"
        " host_start INTEGER NOT NULL, boot_id TEXT NOT NULL,"
        " started_at INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS processes("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL,"
        " pid INTEGER NOT NULL DEFAULT 0, pgid INTEGER NOT NULL DEFAULT 0,"
        " start_time INTEGER NOT NULL DEFAULT 0, boot_id TEXT NOT NULL,"
        " state TEXT NOT NULL, label TEXT NOT NULL DEFAULT '',"
        " created_at INTEGER NOT NULL)",
        "CREATE INDEX IF NOT EXISTS processes_run_pid ON processes(run_id, pid)"})
    if (auto err = reg->exec(sql))
      return err;
  // Processes of an earlier boot cannot exist any more; their pids and start times
  // mean nothing now.
  stmt purge_procs{reg->db_->handle, "DELETE FROM processes WHERE boot_id <> ?1"};
  purge_procs.bind(1, reg->boot_id_);
  if (auto err = purge_procs.run("purge earlier boots"))
    return err;
  stmt purge_runs{reg->db_->handle, "DELETE FROM runs WHERE boot_id <> ?1"};
  purge_runs.bind(1, reg->boot_id_);
  if (auto err = purge_runs.run("purge earlier boots"))
    return err;
  return reg;
}

caf::error process_registry::begin_run(const std::string& run_id) {
  auto self_start = process_start_time(::getpid());
  return begin_run(run_id, ::getpid(), self_start.value_or(0));
}

caf::error process_registry::begin_run(const std::string& run_id, pid_t host_pid,
                                       uint64_t host_start_time) {
  std::lock_guard<std::mutex> guard{mtx_};
  stmt s{db_->handle, "INSERT OR REPLACE INTO runs(run_id, host_pid, host_start, boot_id,"
                      " started_at) VALUES(?1, ?2, ?3, ?4, ?5)"};
  s.bind(1, run_id)
    .bind(2, host_pid)
    .bind(3, static_cast<int64_t>(host_start_time))
    .bind(4, boot_id_)
    .bind(5, now_seconds());
  return s.run("begin run");
}

caf::error process_registry::end_run(const std::string& run_id) {
  std::lock_guard<std::mutex> guard{mtx_};
  exec("PRAGMA synchronous=NORMAL");
  stmt s{db_->handle, "DELETE FROM runs WHERE run_id = ?1 AND NOT EXISTS"
                      " (SELECT 1 FROM processes WHERE run_id = ?1)"};
  s.bind(1, run_id);
  auto err = s.run("end run");
  exec("PRAGMA synchronous=FULL");
  return err;
}

caf::expected<int64_t> process_registry::reserve(const std::string& run_id,
                                                 const std::string& label) {
  std::lock_guard<std::mutex> guard{mtx_};
  stmt s{db_->handle, "INSERT INTO processes(run_id, boot_id, state, label, created_at)"
                      " VALUES(?1, ?2, 'reserved', ?3, ?4)"};
  s.bind(1, run_id).bind(2, boot_id_).bind(3, label).bind(4, now_seconds());
  if (auto err = s.run("reserve"))
    return err;
  return static_cast<int64_t>(sqlite3_last_insert_rowid(db_->handle));
}

caf::error process_registry::activate(int64_t id, pid_t pid, pid_t pgid,
                                      uint64_t start_time) {
  std::lock_guard<std::mutex> guard{mtx_};
  stmt s{db_->handle, "UPDATE processes SET pid = ?2, pgid = ?3, start_time = ?4,"
                      " state = 'active' WHERE id = ?1"};
  s.bind(1, id).bind(2, pid).bind(3, pgid).bind(4, static_cast<int64_t>(start_time));
  if (auto err = s.run("activate"))
    return err;
  if (sqlite3_changes(db_->handle) == 0)
    return make_error(errc::internal, fmt::format("process registry: no entry {}", id));
  return caf::none;
}

caf::error process_registry::record(const std::string& run_id, pid_t pid, pid_t pgid,
                                    uint64_t start_time, const std::string& label) {
  std::lock_guard<std::mutex> guard{mtx_};
  stmt s{db_->handle,
         "INSERT INTO processes(run_id, pid, pgid, start_time, boot_id, state, label,"
         " created_at) VALUES(?1, ?2, ?3, ?4, ?5, 'active', ?6, ?7)"};
  s.bind(1, run_id)
    .bind(2, pid)
    .bind(3, pgid)
    .bind(4, static_cast<int64_t>(start_time))
    .bind(5, boot_id_)
    .bind(6, label)
    .bind(7, now_seconds());
  return s.run("record");
}

caf::error process_registry::remove(const std::string& run_id, pid_t pid) {
  std::lock_guard<std::mutex> guard{mtx_};
  // A lost removal is harmless (the sweep drops entries of gone processes), so it
  // does not pay for an fsync.
  exec("PRAGMA synchronous=NORMAL");
  stmt s{db_->handle, "DELETE FROM processes WHERE run_id = ?1 AND pid = ?2"};
  s.bind(1, run_id).bind(2, pid);
  auto err = s.run("remove");
  exec("PRAGMA synchronous=FULL");
  return err;
}

caf::error process_registry::remove(int64_t id) {
  std::lock_guard<std::mutex> guard{mtx_};
  exec("PRAGMA synchronous=NORMAL");
  stmt s{db_->handle, "DELETE FROM processes WHERE id = ?1"};
  s.bind(1, id);
  auto err = s.run("remove");
  exec("PRAGMA synchronous=FULL");
  return err;
}

std::vector<process_record> process_registry::entries(const std::string& run_id) const {
  std::lock_guard<std::mutex> guard{mtx_};
  std::vector<process_record> out;
  auto sql = std::string{select_columns} + (run_id.empty() ? "" : " WHERE run_id = ?1") +
             " ORDER BY id";
  stmt s{db_->handle, sql.c_str()};
  if (!s)
    return out;
  if (!run_id.empty())
    s.bind(1, run_id);
  while (s.step() == SQLITE_ROW)
    out.push_back(read_record(s));
  return out;
}

std::vector<std::string> process_registry::runs() const {
  std::lock_guard<std::mutex> guard{mtx_};
  std::vector<std::string> out;
  stmt s{db_->handle, "SELECT run_id FROM runs ORDER BY started_at, run_id"};
  while (s && s.step() == SQLITE_ROW)
    out.push_back(s.text(0));
  return out;
}

sweep_report process_registry::sweep(const std::string& keep_run_id,
                                     std::chrono::milliseconds wait) {
  sweep_report rep;
  // 1. Which runs are over: their host (pid + start time) is gone.
  std::set<std::string> live_runs;
  std::vector<std::string> dead_runs;
  std::vector<process_record> candidates;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    // One read transaction: a runtime records its run before its first process, so
    // any entry this snapshot sees comes with its run row.
    exec("BEGIN");
    stmt runs{db_->handle, "SELECT run_id, host_pid, host_start FROM runs"};
    while (runs && runs.step() == SQLITE_ROW) {
      auto id = runs.text(0);
      auto host = static_cast<pid_t>(runs.i64(1));
      auto start = static_cast<uint64_t>(runs.i64(2));
      auto now = process_start_time(host);
      if (id == keep_run_id || (now && *now == start))
        live_runs.insert(id);
      else
        dead_runs.push_back(id);
    }
    stmt all{db_->handle, select_columns};
    while (all && all.step() == SQLITE_ROW) {
      auto r = read_record(all);
      if (live_runs.count(r.run_id) != 0)
        ++rep.live;
      else
        candidates.push_back(std::move(r));
    }
    exec("COMMIT");
  }
  // 2. Kill only what still is the process we recorded. The pidfd pins the identity
  // between the check and the signal: a pidfd never signals a recycled pid.
  struct victim {
    process_record rec;
    int fd;
  };
  std::vector<victim> victims;
  std::vector<int64_t> drop;
  for (auto& r : candidates) {
    if (r.pid <= 0 || r.pid == ::getpid()) {
      drop.push_back(r.id);
      continue;
    }
    int fd = detail::pidfd_open(r.pid);
    if (fd < 0) {
      drop.push_back(r.id);
      continue;
    }
    // A zombie has finished: nothing to kill (its parent, often init, reaps it).
    auto start = process_start_time(r.pid);
    if (!start || *start != r.start_time || process_state(r.pid) == 'Z') {
      ::close(fd);
      drop.push_back(r.id);
      continue;
    }
    // The leader is alive and is ours, so its group id cannot have been reused.
    if (r.pgid == r.pid)
      ::kill(-r.pgid, SIGKILL);
    detail::pidfd_send_signal(fd, SIGKILL);
    ++rep.killed;
    victims.push_back({r, fd});
  }
  // 3. Wait for the killed to go (they are not our children: their new parent reaps).
  auto deadline = std::chrono::steady_clock::now() + wait;
  for (auto& v : victims) {
    pollfd p{v.fd, POLLIN, 0};
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
      int rc = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
      if (rc < 0 && errno == EINTR)
        continue;
      break;
    }
    if ((p.revents & POLLIN) != 0)
      drop.push_back(v.rec.id);
    else
      ++rep.survivors;
    ::close(v.fd);
  }
  // 4. Forget what is gone, and runs without entries.
  std::lock_guard<std::mutex> guard{mtx_};
  exec("BEGIN IMMEDIATE");
  for (auto id : drop) {
    stmt s{db_->handle, "DELETE FROM processes WHERE id = ?1"};
    s.bind(1, id);
    if (!s.run("sweep remove"))
      rep.removed += static_cast<size_t>(sqlite3_changes(db_->handle));
  }
  for (auto& id : dead_runs) {
    stmt s{db_->handle, "DELETE FROM runs WHERE run_id = ?1 AND NOT EXISTS"
                        " (SELECT 1 FROM processes WHERE run_id = ?1)"};
    s.bind(1, id);
    s.run("sweep run");
  }
  exec("COMMIT");
  exec("PRAGMA wal_checkpoint(TRUNCATE)");
  return rep;
}

} // namespace snakepit::adapters
