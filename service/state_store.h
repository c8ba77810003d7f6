// The coordinator's state on disk: job specs, job states, completed shard
// results and events, in SQLite (DIR/coordinator.db, WAL mode). Every write
// commits before it returns, so a coordinator killed with SIGKILL and
// restarted on the same dir resumes without recomputing completed shards.
//
//   LG_ASSIGN_OR_RETURN(std::unique_ptr<StateStore> store,
//   StateStore::Open(dir)); LG_ASSIGN_OR_RETURN(std::vector<StoredJob> jobs,
//   store->Load()); for (auto& job : jobs)
//   LG_RETURN_IF_ERROR(scheduler.Restore(std::move(job)));
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

class StateStore : public Journal {
 public:
  // Creates DIR if needed. UNAVAILABLE if the database cannot be opened.
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(
      const std::string& dir);
  ~StateStore() override;

  // Every job with its results and events, oldest first. DATA_LOSS for
  // unreadable rows.
  absl::StatusOr<std::vector<StoredJob>> Load();

  absl::Status AddJob(const std::string& job_id, const v1::JobSpec& spec,
                      int64_t created_ms) override;
  absl::Status AddShardResult(const std::string& job_id, int64_t shard_id,
                              const std::vector<Array>& tensors) override;
  absl::Status SetJobState(const std::string& job_id, v1::JobState state,
                           int error_code, const std::string& error) override;
  absl::Status AddEvent(const std::string& job_id,
                        const v1::JobEvent& event) override;

 private:
  explicit StateStore(sqlite3* db) : db_(db) {}
  absl::Status Exec(const std::string& sql);
  absl::Mutex mu_;
  sqlite3* db_;
};

// The byte format of a shard's result in the store (exposed for tests).
std::string EncodeArrays(const std::vector<Array>& arrays);
absl::StatusOr<std::vector<Array>> DecodeArrays(const std::string& bytes);

}  // namespace lensgrid::service

#endif  // LENSGRID_SERVICE_STATE_STORE_H_
