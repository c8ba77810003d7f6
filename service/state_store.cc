#include "service/state_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/echo.h"
#include "common/sha256.h"
#include "common/status_macros.h"

namespace lensgrid::service {

namespace {

// A prepared statement that finalizes itself.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &s_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(s_); }
  sqlite3_stmt* get() { return s_; }
  absl::Status status() const {
    return rc_ == SQLITE_OK ? absl::OkStatus()
                            : absl::UnavailableError(absl::StrCat("sqlite: ", sqlite3_errmsg(db_)));
  }
  void Text(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  void Blob(int i, const std::string& v) {
    sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  void Int(int i, int64_t v) { sqlite3_bind_int64(s_, i, v); }
  absl::Status Run() {
    LG_RETURN_IF_ERROR(status());
    const int rc = sqlite3_step(s_);
    if (rc != SQLITE_DONE)
      return absl::UnavailableError(absl::StrCat("sqlite: ", sqlite3_errmsg(db_)));
    return absl::OkStatus();
  }
  std::string ColumnBytes(int i) {
    const void* p = sqlite3_column_blob(s_, i);
    return std::string(static_cast<const char*>(p),
                       static_cast<size_t>(sqlite3_column_bytes(s_, i)));
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
  int rc_;
};

template <typename T>
void Put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(v));
}

template <typename T>
bool Get(const std::string& in, size_t* pos, T* v) {
  if (in.size() - *pos < sizeof(T)) return false;
  std::memcpy(v, in.data() + *pos, sizeof(T));
  *pos += sizeof(T);
  return true;
}

}  // namespace

std::string EncodeArrays(const std::vector<Array>& arrays) {
  std::string out;
  Put<uint32_t>(&out, static_cast<uint32_t>(arrays.size()));
  for (const Array& a : arrays) {
    Put<uint32_t>(&out, static_cast<uint32_t>(a.name.size()));
    out.append(a.name);
    Put<uint32_t>(&out, static_cast<uint32_t>(a.shape.size()));
    for (int64_t d : a.shape) Put<int64_t>(&out, d);
    Put<uint64_t>(&out, a.values.size());
    out.append(reinterpret_cast<const char*>(a.values.data()), a.values.size() * sizeof(float));
  }
  return out;
}

absl::StatusOr<std::vector<Array>> DecodeArrays(const std::string& in) {
  const absl::Status bad = absl::DataLossError("stored shard result is corrupt");
  size_t pos = 0;
  uint32_t n = 0;
  if (!Get(in, &pos, &n)) return bad;
  // An array takes at least 16 bytes (name length, rank, value count): a
  // corrupt count must not allocate for arrays that are not there.
  if (n > (in.size() - pos) / 16) return bad;
  std::vector<Array> out(n);
  for (Array& a : out) {
    uint32_t len = 0, ndim = 0;
    uint64_t nvals = 0;
    if (!Get(in, &pos, &len) || in.size() - pos < len) return bad;
    a.name = in.substr(pos, len);
    pos += len;
    if (!Get(in, &pos, &ndim) || ndim > 8) return bad;
    a.shape.resize(ndim);
    for (int64_t& d : a.shape) {
      if (!Get(in, &pos, &d)) return bad;
    }
    if (!Get(in, &pos, &nvals) || (in.size() - pos) / sizeof(float) < nvals) return bad;
    a.values.resize(nvals);
    if (nvals > 0)  // an empty vector's data() may be null: no memcpy then
      std::memcpy(a.values.data(), in.data() + pos, nvals * sizeof(float));
    pos += nvals * sizeof(float);
  }
  if (pos != in.size()) return bad;
  return out;
}

namespace {

constexpr const char* kSchema =
    "CREATE TABLE jobs(job_id TEXT PRIMARY KEY, spec BLOB NOT NULL,"
    " created_ms INTEGER NOT NULL, state INTEGER NOT NULL,"
    " error_code INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '',"
    " spec_sha256 TEXT, owner TEXT, request_id TEXT, request_sha256 TEXT,"
    " finished_ms INTEGER, summary BLOB);"
    "CREATE TABLE results(job_id TEXT NOT NULL, shard INTEGER NOT NULL,"
    " data BLOB NOT NULL, sha256 TEXT, PRIMARY KEY(job_id, shard));"
    "CREATE TABLE events(job_id TEXT NOT NULL, seq INTEGER NOT NULL,"
    " data BLOB NOT NULL, PRIMARY KEY(job_id, seq));";

// Columns added to a store created before they existed. Older rows keep NULL:
// a checksum that is not verified, an owner read as "anonymous" (what a
// coordinator without tokens records).
struct Migration {
  const char* table;
  const char* column;
  const char* type;
};
constexpr Migration kMigrations[] = {
    {"jobs", "spec_sha256", "TEXT"},    {"results", "sha256", "TEXT"},
    {"jobs", "owner", "TEXT"},          {"jobs", "request_id", "TEXT"},
    {"jobs", "request_sha256", "TEXT"}, {"jobs", "finished_ms", "INTEGER"},
    {"jobs", "summary", "BLOB"}};

// One job per (owner, request_id): a repeated SubmitJobRequest finds its job
// (AIP-155), and a second row for it cannot be written.
constexpr const char* kIndexes =
    "CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_request ON jobs(owner, request_id)"
    " WHERE request_id IS NOT NULL;";

int64_t FileSize(const std::filesystem::path& p) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(p, ec);
  return ec ? -1 : static_cast<int64_t>(size);
}

// A checksum column: NULL (a row from before checksums) verifies.
bool ChecksumMatches(sqlite3_stmt* s, int column, const std::string& bytes) {
  if (sqlite3_column_type(s, column) == SQLITE_NULL) return true;
  const char* want = reinterpret_cast<const char*>(sqlite3_column_text(s, column));
  return want != nullptr && Sha256Hex(bytes) == want;
}

}  // namespace

namespace {

// One coordinator per state: an exclusive flock on DIR/lock, held while the
// returned fd is open (the kernel drops it when the process dies, kill -9
// included). The file names the holder's pid for the error of the next one.
absl::StatusOr<int> LockStateDir(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "lock").string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char holder[32] = {0};
    const ssize_t n = ::pread(fd, holder, sizeof(holder) - 1, 0);
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(
        "another coordinator (pid ", n > 0 ? std::string(holder, static_cast<size_t>(n)) : "?",
        ") holds the state in ", dir,
        ": one coordinator per state directory (stop it, or give this one its own --state-dir)"));
  }
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    // The lock holds without the pid; only the next one's message is poorer.
  }
  return fd;
}

}  // namespace

absl::StatusOr<std::unique_ptr<StateStore>> StateStore::Open(const std::string& dir,
                                                             const StateStoreOptions& options) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  LG_ASSIGN_OR_RETURN(const int lock_fd, LockStateDir(dir));
  struct CloseOnError {
    int fd;
    bool armed = true;
    ~CloseOnError() {
      if (armed) ::close(fd);
    }
  } lock_guard{lock_fd};
  const std::filesystem::path path = std::filesystem::path(dir) / "coordinator.db";
  const std::filesystem::path marker = std::filesystem::path(dir) / kMarker;
  const bool have_marker = std::filesystem::exists(marker, ec);
  const int64_t db_bytes = FileSize(path);
  const bool fresh = db_bytes <= 0;
  if (fresh && have_marker) {
    if (!options.start_fresh) {
      return absl::FailedPreconditionError(absl::StrCat(
          path.string(), " is ", db_bytes < 0 ? "missing" : "empty", ", but ", marker.string(),
          " says that this directory holds a coordinator's state: refusing to "
          "start without its jobs. Restore the database, or start with "
          "--fresh-state to begin an empty store"));
    }
    std::fprintf(stderr,
                 "coordinator: state store: %s is %s; starting an EMPTY store "
                 "as asked (--fresh-state): earlier jobs are gone\n",
                 path.string().c_str(), db_bytes < 0 ? "missing" : "empty");
  }
  sqlite3* db = nullptr;
  if (sqlite3_open(path.string().c_str(), &db) != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("cannot open ", path.string(), ": ", msg));
  }
  lock_guard.armed = false;  // the store owns the lock from here
  std::unique_ptr<StateStore> store(new StateStore(db, options, lock_fd));
  sqlite3_busy_timeout(db, 5000);
  // WAL + synchronous=NORMAL: a commit survives the process being killed.
  LG_RETURN_IF_ERROR(store->Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"));
  if (fresh) {
    LG_RETURN_IF_ERROR(store->Exec(absl::StrCat("BEGIN IMMEDIATE;", kSchema, kIndexes, "COMMIT;")));
  } else {
    {
      Stmt check(db, "PRAGMA quick_check");
      LG_RETURN_IF_ERROR(check.status());
      if (sqlite3_step(check.get()) != SQLITE_ROW || check.ColumnBytes(0) != "ok") {
        return absl::DataLossError(absl::StrCat(
            path.string(), " is damaged (quick_check: ", Echo(check.ColumnBytes(0), 400),
            "): restore it from a backup"));
      }
    }
    for (const char* table : {"jobs", "results", "events"}) {
      Stmt s(db,
             "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
             "AND name = ?");
      s.Text(1, table);
      LG_RETURN_IF_ERROR(s.status());
      if (sqlite3_step(s.get()) != SQLITE_ROW || sqlite3_column_int(s.get(), 0) != 1) {
        return absl::DataLossError(
            absl::StrCat(path.string(), " has no table \"", table,
                         "\": its schema is damaged, and it is not recreated (that would "
                         "hide lost jobs). Restore the database from a backup"));
      }
    }
    for (const Migration& m : kMigrations) {
      Stmt s(db, "SELECT count(*) FROM pragma_table_info(?) WHERE name = ?");
      s.Text(1, m.table);
      s.Text(2, m.column);
      LG_RETURN_IF_ERROR(s.status());
      if (sqlite3_step(s.get()) == SQLITE_ROW && sqlite3_column_int(s.get(), 0) == 0) {
        LG_RETURN_IF_ERROR(store->Exec(
            absl::StrCat("ALTER TABLE ", m.table, " ADD COLUMN ", m.column, " ", m.type)));
      }
    }
    LG_RETURN_IF_ERROR(store->Exec(kIndexes));
  }
  if (!have_marker || fresh) {
    std::ofstream out(marker, std::ios::trunc);
    out << "lensgrid coordinator state store (coordinator.db); created "
        << std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
               .count()
        << " (unix s). Its database must not be missing or empty.\n";
    if (!out.flush()) {
      return absl::UnavailableError(absl::StrCat("cannot write ", marker.string()));
    }
  }
  return store;
}

StateStore::~StateStore() {
  sqlite3_close(db_);
  ::close(lock_fd_);  // releases the state directory
}

absl::Status StateStore::Exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    absl::Status s = absl::UnavailableError(absl::StrCat("sqlite: ", err ? err : "error"));
    sqlite3_free(err);
    return s;
  }
  return absl::OkStatus();
}

void StateStore::ApplyTestingPageLimit() {
  if (options_.max_page_count_file.empty()) return;
  std::ifstream in(options_.max_page_count_file);
  int64_t pages = 0;
  if (!(in >> pages)) pages = 1 << 30;  // no file: no limit
  (void)Exec(absl::StrCat("PRAGMA max_page_count = ", pages));
}

absl::Status StateStore::Write(const JobWrite& w) {
  absl::MutexLock lock(&mu_);
  ApplyTestingPageLimit();
  LG_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  absl::Status s = WriteLocked(w);
  if (s.ok()) s = Exec("COMMIT");
  if (!s.ok()) (void)Exec("ROLLBACK");  // may already be rolled back
  return s;
}

absl::Status StateStore::WriteLocked(const JobWrite& w) {
  if (w.delete_job) {
    for (const char* sql :
         {"DELETE FROM events WHERE job_id = ?", "DELETE FROM results WHERE job_id = ?",
          "DELETE FROM jobs WHERE job_id = ?"}) {
      Stmt s(db_, sql);
      s.Text(1, w.job_id);
      LG_RETURN_IF_ERROR(s.Run());
    }
    return absl::OkStatus();
  }
  if (w.new_spec != nullptr) {
    const std::string& spec = *w.new_spec;
    Stmt s(db_,
           "INSERT INTO jobs(job_id, spec, created_ms, state, spec_sha256, owner, request_id,"
           " request_sha256) VALUES(?, ?, ?, ?, ?, ?, ?, ?)");
    s.Text(1, w.job_id);
    s.Blob(2, spec);
    s.Int(3, w.created_ms);
    s.Int(4, v1::JOB_QUEUED);
    s.Text(5, Sha256Hex(spec));
    s.Text(6, w.owner);
    if (!w.request_id.empty()) {  // else NULL: jobs without one are not unique
      s.Text(7, w.request_id);
      s.Text(8, w.request_sha256);
    }
    LG_RETURN_IF_ERROR(s.Run());
  }
  if (w.prepared_spec != nullptr) {
    Stmt s(db_, "UPDATE jobs SET spec = ?, spec_sha256 = ? WHERE job_id = ?");
    s.Blob(1, *w.prepared_spec);
    s.Text(2, Sha256Hex(*w.prepared_spec));
    s.Text(3, w.job_id);
    LG_RETURN_IF_ERROR(s.Run());
  }
  for (const auto& [shard, tensors] : w.results) {
    const std::string data = EncodeArrays(*tensors);
    Stmt s(db_,
           "INSERT OR REPLACE INTO results(job_id, shard, data, sha256) "
           "VALUES(?, ?, ?, ?)");
    s.Text(1, w.job_id);
    s.Int(2, shard);
    s.Blob(3, data);
    s.Text(4, Sha256Hex(data));
    LG_RETURN_IF_ERROR(s.Run());
  }
  if (w.set_state) {
    Stmt s(db_,
           "UPDATE jobs SET state = ?, error_code = ?, error = ?, finished_ms = ? WHERE "
           "job_id = ?");
    s.Int(1, w.state);
    s.Int(2, w.error_code);
    s.Text(3, w.error);
    s.Int(4, w.finished_ms);
    s.Text(5, w.job_id);
    LG_RETURN_IF_ERROR(s.Run());
  }
  for (const v1::JobEvent* e : w.events) {
    Stmt s(db_, "INSERT OR REPLACE INTO events(job_id, seq, data) VALUES(?, ?, ?)");
    s.Text(1, w.job_id);
    s.Int(2, e->seq());
    s.Blob(3, e->SerializeAsString());
    LG_RETURN_IF_ERROR(s.Run());
  }
  if (w.summary != nullptr) {
    Stmt s(db_, "UPDATE jobs SET summary = ? WHERE job_id = ?");
    s.Blob(1, *w.summary);
    s.Text(2, w.job_id);
    LG_RETURN_IF_ERROR(s.Run());
  }
  if (!w.events.empty()) {
    Stmt s(db_, "DELETE FROM events WHERE job_id = ? AND seq > ?");
    s.Text(1, w.job_id);
    s.Int(2, w.events.back()->seq());
    LG_RETURN_IF_ERROR(s.Run());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<StoredJob>> StateStore::Load() {
  absl::MutexLock lock(&mu_);
  return Query(nullptr, kJobSpec | kJobResults | kJobEvents, /*summaries=*/true);
}

absl::StatusOr<StoredJob> StateStore::Read(const std::string& job_id, int parts) {
  absl::MutexLock lock(&mu_);
  LG_ASSIGN_OR_RETURN(std::vector<StoredJob> jobs, Query(&job_id, parts, /*summaries=*/false));
  if (jobs.empty()) return absl::NotFoundError(absl::StrCat("no job ", Echo(job_id)));
  return std::move(jobs.front());
}

absl::StatusOr<std::vector<StoredJob>> StateStore::Query(const std::string* job_id, int parts,
                                                         bool summaries) {
  // A finished job with a summary is loaded as that summary: its spec,
  // results and events are read when asked for (Read).
  const std::string summarized = summaries ? "(j.summary IS NOT NULL AND j.state >= 3)" : "0";
  const std::string one_job = job_id != nullptr ? " AND j.job_id = ?" : "";
  std::vector<StoredJob> jobs;
  std::map<std::string, size_t> index;
  {
    Stmt s(db_, absl::StrCat("SELECT j.job_id, CASE WHEN ", summarized, " OR ",
                             (parts & kJobSpec) ? "0" : "1",
                             " THEN NULL ELSE j.spec END, j.created_ms, j.state, j.error_code, "
                             "j.error, j.spec_sha256, j.owner, j.request_id, j.request_sha256, "
                             "j.finished_ms, CASE WHEN ",
                             summarized, " THEN j.summary END FROM jobs j WHERE 1", one_job,
                             " ORDER BY j.rowid")
                    .c_str());
    LG_RETURN_IF_ERROR(s.status());
    if (job_id != nullptr) s.Text(1, *job_id);
    while (sqlite3_step(s.get()) == SQLITE_ROW) {
      StoredJob job;
      job.job_id = s.ColumnBytes(0);
      if (sqlite3_column_type(s.get(), 11) != SQLITE_NULL) {
        job.summary.emplace();
        if (!job.summary->ParseFromString(s.ColumnBytes(11))) {
          job.summary.reset();
          job.damage = "its stored summary is corrupt";
        }
      } else if (sqlite3_column_type(s.get(), 1) != SQLITE_NULL) {
        const std::string spec = s.ColumnBytes(1);
        if (!ChecksumMatches(s.get(), 6, spec) || !job.spec.ParseFromString(spec)) {
          job.damage = "its stored spec is corrupt (checksum mismatch)";
          job.spec.Clear();
        }
      }
      job.created_ms = sqlite3_column_int64(s.get(), 2);
      job.state = static_cast<v1::JobState>(sqlite3_column_int(s.get(), 3));
      job.error_code = sqlite3_column_int(s.get(), 4);
      job.error = s.ColumnBytes(5);
      job.owner = sqlite3_column_type(s.get(), 7) == SQLITE_NULL ? "anonymous" : s.ColumnBytes(7);
      job.request_id = s.ColumnBytes(8);  // NULL reads as ""
      job.request_sha256 = s.ColumnBytes(9);
      job.finished_ms = sqlite3_column_int64(s.get(), 10);  // NULL reads as 0
      index[job.job_id] = jobs.size();
      jobs.push_back(std::move(job));
    }
  }
  if (parts & kJobResults) {
    Stmt s(db_, absl::StrCat("SELECT r.job_id, r.shard, r.data, r.sha256 FROM results r JOIN "
                             "jobs j ON j.job_id = r.job_id WHERE NOT ",
                             summarized, one_job)
                    .c_str());
    LG_RETURN_IF_ERROR(s.status());
    if (job_id != nullptr) s.Text(1, *job_id);
    while (sqlite3_step(s.get()) == SQLITE_ROW) {
      auto it = index.find(s.ColumnBytes(0));
      if (it == index.end()) continue;
      StoredJob& job = jobs[it->second];
      const int64_t shard = sqlite3_column_int64(s.get(), 1);
      const std::string data = s.ColumnBytes(2);
      absl::StatusOr<std::vector<Array>> arrays = ChecksumMatches(s.get(), 3, data)
                                                      ? DecodeArrays(data)
                                                      : absl::DataLossError("checksum mismatch");
      if (!arrays.ok()) {
        job.damaged_shards.push_back(shard);
        continue;
      }
      job.results[shard] = std::move(*arrays);
    }
  }
  if (parts & kJobEvents) {
    Stmt s(db_, absl::StrCat("SELECT e.job_id, e.seq, e.data FROM events e JOIN jobs j ON "
                             "j.job_id = e.job_id WHERE NOT ",
                             summarized, one_job, " ORDER BY e.job_id, e.seq")
                    .c_str());
    LG_RETURN_IF_ERROR(s.status());
    if (job_id != nullptr) s.Text(1, *job_id);
    std::set<std::string> cut;  // jobs whose events stopped at a bad one
    while (sqlite3_step(s.get()) == SQLITE_ROW) {
      const std::string id = s.ColumnBytes(0);
      auto it = index.find(id);
      if (it == index.end() || cut.count(id)) continue;
      StoredJob& job = jobs[it->second];
      v1::JobEvent e;
      const int64_t seq = sqlite3_column_int64(s.get(), 1);
      if (!e.ParseFromString(s.ColumnBytes(2)) ||
          seq != static_cast<int64_t>(job.events.size()) + 1 || e.seq() != seq) {
        // Events are progress notes: keep the readable prefix, say so.
        job.notes = absl::StrCat("events from seq ", job.events.size() + 1,
                                 " on were unreadable or out of order and "
                                 "are dropped");
        cut.insert(id);
        continue;
      }
      job.events.push_back(std::move(e));
    }
  }
  return jobs;
}

}  // namespace lensgrid::service
