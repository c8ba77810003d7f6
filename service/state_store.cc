#include "service/state_store.h"

#include <sqlite3.h>

#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
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
                            : absl::UnavailableError(absl::StrCat(
                                  "sqlite: ", sqlite3_errmsg(db_)));
  }
  void Text(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()),
                      SQLITE_TRANSIENT);
  }
  void Blob(int i, const std::string& v) {
    sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()),
                      SQLITE_TRANSIENT);
  }
  void Int(int i, int64_t v) { sqlite3_bind_int64(s_, i, v); }
  absl::Status Run() {
    LG_RETURN_IF_ERROR(status());
    const int rc = sqlite3_step(s_);
    if (rc != SQLITE_DONE)
      return absl::UnavailableError(
          absl::StrCat("sqlite: ", sqlite3_errmsg(db_)));
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
    out.append(reinterpret_cast<const char*>(a.values.data()),
               a.values.size() * sizeof(float));
  }
  return out;
}

absl::StatusOr<std::vector<Array>> DecodeArrays(const std::string& in) {
  const absl::Status bad =
      absl::DataLossError("stored shard result is corrupt");
  size_t pos = 0;
  uint32_t n = 0;
  if (!Get(in, &pos, &n)) return bad;
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
    if (!Get(in, &pos, &nvals) || (in.size() - pos) / sizeof(float) < nvals)
      return bad;
    a.values.resize(nvals);
    std::memcpy(a.values.data(), in.data() + pos, nvals * sizeof(float));
    pos += nvals * sizeof(float);
  }
  if (pos != in.size()) return bad;
  return out;
}

absl::StatusOr<std::unique_ptr<StateStore>> StateStore::Open(
    const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return absl::UnavailableError(
        absl::StrCat("cannot create ", dir, ": ", ec.message()));
  const std::string path =
      (std::filesystem::path(dir) / "coordinator.db").string();
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(
        absl::StrCat("cannot open ", path, ": ", msg));
  }
  std::unique_ptr<StateStore> store(new StateStore(db));
  sqlite3_busy_timeout(db, 5000);
  // WAL + synchronous=NORMAL: a commit survives the process being killed.
  LG_RETURN_IF_ERROR(
      store->Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                  "CREATE TABLE IF NOT EXISTS jobs(job_id TEXT PRIMARY KEY, "
                  "spec BLOB NOT NULL,"
                  " created_ms INTEGER NOT NULL, state INTEGER NOT NULL, "
                  "error_code INTEGER NOT NULL DEFAULT 0,"
                  " error TEXT NOT NULL DEFAULT '');"
                  "CREATE TABLE IF NOT EXISTS results(job_id TEXT NOT NULL, "
                  "shard INTEGER NOT NULL,"
                  " data BLOB NOT NULL, PRIMARY KEY(job_id, shard));"
                  "CREATE TABLE IF NOT EXISTS events(job_id TEXT NOT NULL, seq "
                  "INTEGER NOT NULL,"
                  " data BLOB NOT NULL, PRIMARY KEY(job_id, seq));"));
  return store;
}

StateStore::~StateStore() { sqlite3_close(db_); }

absl::Status StateStore::Exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    absl::Status s =
        absl::UnavailableError(absl::StrCat("sqlite: ", err ? err : "error"));
    sqlite3_free(err);
    return s;
  }
  return absl::OkStatus();
}

absl::Status StateStore::AddJob(const std::string& job_id,
                                const v1::JobSpec& spec, int64_t created_ms) {
  absl::MutexLock lock(&mu_);
  Stmt s(
      db_,
      "INSERT INTO jobs(job_id, spec, created_ms, state) VALUES(?, ?, ?, ?)");
  s.Text(1, job_id);
  s.Blob(2, spec.SerializeAsString());
  s.Int(3, created_ms);
  s.Int(4, v1::JOB_QUEUED);
  return s.Run();
}

absl::Status StateStore::AddShardResult(const std::string& job_id,
                                        int64_t shard_id,
                                        const std::vector<Array>& tensors) {
  absl::MutexLock lock(&mu_);
  Stmt s(db_,
         "INSERT OR REPLACE INTO results(job_id, shard, data) VALUES(?, ?, ?)");
  s.Text(1, job_id);
  s.Int(2, shard_id);
  s.Blob(3, EncodeArrays(tensors));
  return s.Run();
}

absl::Status StateStore::SetJobState(const std::string& job_id,
                                     v1::JobState state, int error_code,
                                     const std::string& error) {
  absl::MutexLock lock(&mu_);
  Stmt s(
      db_,
      "UPDATE jobs SET state = ?, error_code = ?, error = ? WHERE job_id = ?");
  s.Int(1, state);
  s.Int(2, error_code);
  s.Text(3, error);
  s.Text(4, job_id);
  return s.Run();
}

absl::Status StateStore::AddEvent(const std::string& job_id,
                                  const v1::JobEvent& event) {
  absl::MutexLock lock(&mu_);
  Stmt s(db_,
         "INSERT OR REPLACE INTO events(job_id, seq, data) VALUES(?, ?, ?)");
  s.Text(1, job_id);
  s.Int(2, event.seq());
  s.Blob(3, event.SerializeAsString());
  return s.Run();
}

absl::StatusOr<std::vector<StoredJob>> StateStore::Load() {
  absl::MutexLock lock(&mu_);
  std::vector<StoredJob> jobs;
  std::map<std::string, size_t> index;
  {
    Stmt s(db_,
           "SELECT job_id, spec, created_ms, state, error_code, error FROM "
           "jobs ORDER BY rowid");
    LG_RETURN_IF_ERROR(s.status());
    while (sqlite3_step(s.get()) == SQLITE_ROW) {
      StoredJob job;
      job.job_id = s.ColumnBytes(0);
      if (!job.spec.ParseFromString(s.ColumnBytes(1))) {
        return absl::DataLossError(
            absl::StrCat("job ", job.job_id, ": stored spec is corrupt"));
      }
      job.created_ms = sqlite3_column_int64(s.get(), 2);
      job.state = static_cast<v1::JobState>(sqlite3_column_int(s.get(), 3));
      job.error_code = sqlite3_column_int(s.get(), 4);
      job.error = s.ColumnBytes(5);
      index[job.job_id] = jobs.size();
      jobs.push_back(std::move(job));
    }
  }
  {
    Stmt s(db_, "SELECT job_id, shard, data FROM results");
    LG_RETURN_IF_ERROR(s.status());
    while (sqlite3_step(s.get()) == SQLITE_ROW) {
      auto it = index.find(s.ColumnBytes(0));
      if (it == index.end()) continue;
      LG_ASSIGN_OR_RETURN(std::vector<Array> arrays,
                          DecodeArrays(s.ColumnBytes(2)));
      jobs[it->second].results[sqlite3_column_int64(s.get(), 1)] =
          std::move(arrays);
    }
  }
  {
    Stmt s(db_, "SELECT job_id, seq, data FROM events ORDER BY job_id, seq");
    LG_RETURN_IF_ERROR(s.status());
    while (sqlite3_step(s.get()) == SQLITE_ROW) {
      auto it = index.find(s.ColumnBytes(0));
      if (it == index.end()) continue;
      v1::JobEvent e;
      if (!e.ParseFromString(s.ColumnBytes(2)))
        return absl::DataLossError("stored event is corrupt");
      auto& events = jobs[it->second].events;
      if (e.seq() != static_cast<int64_t>(events.size()) + 1) {
        return absl::DataLossError(absl::StrCat("job ", it->first, ": event ",
                                                e.seq(), " out of order"));
      }
      events.push_back(std::move(e));
    }
  }
  return jobs;
}

}  // namespace lensgrid::service
