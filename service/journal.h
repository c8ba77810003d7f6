// What the scheduler persists, and what it restores from after a restart.
// StateStore (SQLite) implements Journal; tests may pass none, or a fake that
// fails on demand.
//
// Each Write is one state change of one job, committed atomically: a new job
// with its first event, or shard results with the events and job state that go
// with them. A failed Write leaves the stored job as it was (events stay a
// prefix without gaps), and the scheduler writes the same change again later.
#ifndef LENSGRID_SERVICE_JOURNAL_H_
#define LENSGRID_SERVICE_JOURNAL_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lensgrid/v1/coordinator.pb.h"
#include "service/merger.h"

namespace lensgrid::service {

// A job as stored: its spec, final state if any, completed shard results and
// events.
struct StoredJob {
  std::string job_id;
  std::string owner;  // the submitter's name; "anonymous" for jobs stored before owners
  // SubmitJobRequest.request_id ("" = none) and the SHA-256 of the spec it
  // came with (a repeated request must match it).
  std::string request_id, request_sha256;
  v1::JobSpec spec;
  int64_t created_ms = 0;
  int64_t finished_ms = 0;  // final jobs; 0 when the store does not know
  v1::JobState state = v1::JOB_QUEUED;
  int error_code = 0;
  std::string error;
  std::map<int64_t, std::vector<Array>> results;  // by shard id
  std::vector<v1::JobEvent> events;               // by seq, 1, 2, ... no gaps
  // Non-empty: part of the stored job is unreadable (why, naming the part).
  // A job whose spec or a finished job whose result is damaged is reported,
  // not run or served; an unfinished job recomputes damaged shards.
  std::string damage;
  std::vector<int64_t> damaged_shards;  // results that failed their checksum
  std::string notes;                    // repairs made while loading (unreadable events dropped)
  // Set: a finished job loaded as its summary only (what listings show);
  // spec, results and events stay in the store (Journal::Read).
  std::optional<v1::JobStatus> summary;
};

// The parts of a stored job Journal::Read brings back (bits).
enum JobParts : int { kJobSpec = 1, kJobResults = 2, kJobEvents = 4 };

// One atomic change of one job's stored state.
struct JobWrite {
  std::string job_id;
  // Set: the job is new; its serialized v1::JobSpec (fields may repeat: the
  // last value wins, as protobuf parses).
  const std::string* new_spec = nullptr;
  int64_t created_ms = 0;  // with new_spec
  std::string owner;       // with new_spec
  std::string request_id;  // with new_spec; "" = none. Unique per owner
  std::string request_sha256;
  // Set: the job was prepared; this spec (with its prompts) replaces the
  // stored one.
  const std::string* prepared_spec = nullptr;
  std::vector<std::pair<int64_t, const std::vector<Array>*>> results;
  bool set_state = false;
  v1::JobState state = v1::JOB_QUEUED;
  int error_code = 0;
  std::string error;
  int64_t finished_ms = 0;  // with set_state, for a final state
  // Set: the job is deleted with its results and events (nothing else of the
  // write applies).
  bool delete_job = false;
  // Set: a finished job's serialized v1::JobStatus summary, loaded instead of
  // the whole job after a restart.
  const std::string* summary = nullptr;
  // Consecutive seqs following the stored ones; stored events after the last
  // of these (left by an older, damaged write) are dropped.
  std::vector<const v1::JobEvent*> events;
};

class Journal {
 public:
  virtual ~Journal() = default;
  // All of `write` or nothing. Durable before it returns OK.
  virtual absl::Status Write(const JobWrite& write) = 0;
  // Whether Read works: the scheduler then keeps finished jobs as summaries
  // and reads the rest on demand.
  virtual bool CanRead() const { return false; }
  // One job's `parts` (JobParts bits) with its state; NOT_FOUND for a job not
  // stored. A damaged part is reported as Load reports it (damage,
  // damaged_shards, notes).
  virtual absl::StatusOr<StoredJob> Read(const std::string& job_id, int parts) {
    return absl::UnimplementedError("this journal cannot read jobs back");
  }
};

}  // namespace lensgrid::service

#endif  // LENSGRID_SERVICE_JOURNAL_H_
