// The coordinator's state on disk: job specs, job states, completed shard
// results and events, in SQLite (DIR/coordinator.db, WAL mode). Every Write is
// one transaction that commits before it returns, so a coordinator killed with
// SIGKILL, or one whose disk filled up mid-job, restarts on the same dir
// without gaps and without recomputing stored shards.
//
// Integrity: specs and results carry a SHA-256 checked on Load (a flipped bit
// makes that job damaged, never served); DIR/lensgrid-state, written when the
// store is created, makes a missing or empty database an error instead of a
// silent fresh start; a database whose tables are missing or whose pages fail
// SQLite's quick_check is reported, never recreated.
//
//   LG_ASSIGN_OR_RETURN(std::unique_ptr<StateStore> store,
//                       StateStore::Open(dir));
//   LG_ASSIGN_OR_RETURN(std::vector<StoredJob> jobs, store->Load());
//   for (auto& job : jobs) scheduler.Restore(std::move(job));
#ifndef LENSGRID_SERVICE_STATE_STORE_H_
#define LENSGRID_SERVICE_STATE_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "service/journal.h"

struct sqlite3;

namespace lensgrid::service {

struct StateStoreOptions {
  // Start with an empty store even though DIR's marker says that it held one
  // whose database is now missing or empty (its jobs are lost).
  // Default: false (refuse with FAILED_PRECONDITION)
  bool start_fresh = false;
  // Testing: before each write, PRAGMA max_page_count is set to the number in
  // this file while it exists (a real SQLITE_FULL without a small filesystem;
  // a number below the database's size means "full now"). Default: none
  std::string max_page_count_file;
};

class StateStore : public Journal {
 public:
  // The marker file's name in DIR.
  static constexpr const char* kMarker = "lensgrid-state";

  // Creates DIR if needed. UNAVAILABLE if the database cannot be opened;
  // FAILED_PRECONDITION if another process holds DIR (one coordinator per
  // state: DIR/lock is locked for the store's life, and names its holder's
  // pid), or if the marker is there but the database is missing or empty
  // (unless options.start_fresh); DATA_LOSS for a damaged database.
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(const std::string& dir,
                                                          const StateStoreOptions& options = {});
  ~StateStore() override;

  // Every job, oldest first: unfinished ones with their results and events,
  // finished ones as their summary only (StoredJob::summary; those from
  // before summaries were stored come whole). A damaged row marks its job
  // (StoredJob::damage / damaged_shards / notes) and never hides the other
  // jobs; DATA_LOSS only when a whole table cannot be read.
  absl::StatusOr<std::vector<StoredJob>> Load();

  absl::Status Write(const JobWrite& write) override;
  bool CanRead() const override { return true; }
  absl::StatusOr<StoredJob> Read(const std::string& job_id, int parts) override;

 private:
  StateStore(sqlite3* db, StateStoreOptions options, int lock_fd)
      : db_(db), options_(std::move(options)), lock_fd_(lock_fd) {}
  absl::Status Exec(const std::string& sql);
  absl::Status WriteLocked(const JobWrite& write) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One job (job_id set) or all, with `parts`; summaries: finished jobs with
  // a stored summary come as that summary only.
  absl::StatusOr<std::vector<StoredJob>> Query(const std::string* job_id, int parts, bool summaries)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ApplyTestingPageLimit() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Mutex mu_;
  sqlite3* db_;
  const StateStoreOptions options_;
  int lock_fd_;  // DIR/lock, flock()ed exclusively until the store is destroyed
};

// The byte format of a shard's result in the store (exposed for tests).
std::string EncodeArrays(const std::vector<Array>& arrays);
absl::StatusOr<std::vector<Array>> DecodeArrays(const std::string& bytes);

}  // namespace lensgrid::service

#endif  // LENSGRID_SERVICE_STATE_STORE_H_
