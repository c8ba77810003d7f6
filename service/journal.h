// What the scheduler persists, and what it restores from after a restart.
// StateStore (SQLite) implements Journal; tests may pass none.
#ifndef LENSGRID_SERVICE_JOURNAL_H_
#define LENSGRID_SERVICE_JOURNAL_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "lensgrid/v1/coordinator.pb.h"
#include "service/merger.h"

namespace lensgrid::service {

// A job as stored: its spec, final state if any, completed shard results and
// events.
struct StoredJob {
  std::string job_id;
  v1::JobSpec spec;
  int64_t created_ms = 0;
  v1::JobState state = v1::JOB_QUEUED;
  int error_code = 0;
  std::string error;
  std::map<int64_t, std::vector<Array>> results;  // by shard id
  std::vector<v1::JobEvent> events;               // by seq
};

class Journal {
 public:
  virtual ~Journal() = default;
  virtual absl::Status AddJob(const std::string& job_id,
                              const v1::JobSpec& spec, int64_t created_ms) = 0;
  // Durable before the worker hears "accepted".
  virtual absl::Status AddShardResult(const std::string& job_id,
                                      int64_t shard_id,
                                      const std::vector<Array>& tensors) = 0;
  virtual absl::Status SetJobState(const std::string& job_id,
                                   v1::JobState state, int error_code,
                                   const std::string& error) = 0;
  virtual absl::Status AddEvent(const std::string& job_id,
                                const v1::JobEvent& event) = 0;
};

}  // namespace lensgrid::service

#endif  // LENSGRID_SERVICE_JOURNAL_H_
