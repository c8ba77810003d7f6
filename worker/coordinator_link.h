// The worker's side of the coordinator protocol (lensgrid.v1.WorkQueue, on the
// coordinator's --worker-listen port, or its --listen one when it has none):
// register, pull shards under leases, run them on the backend, stream the
// results back, keep leases alive.
//
//   CoordinatorLink link(backend, channel, {.model_id = "gpt2", .capacity = 1});
//   link.Start();        // threads: `capacity` runners + one heartbeat
//   ...
//   link.Stop();         // running shards are cancelled and handed back
//
// Runners loop: LeaseShard (long poll) -> backend->RunShard -> CompleteShard
// (header, then the result tensors in chunks) or FailShard with the status.
// A NOT_FOUND worker id (the coordinator restarted and forgot us) registers
// again; an unreachable coordinator is retried with backoff, forever. A lease
// the coordinator cancels (heartbeat reply) stops its shard between blocks.
// No LibTorch here: the backend is the WorkerBackend interface.
#ifndef LENSGRID_WORKER_COORDINATOR_LINK_H_
#define LENSGRID_WORKER_COORDINATOR_LINK_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "lensgrid/v1/coordinator.grpc.pb.h"
#include "worker/worker_backend.h"

namespace lensgrid {

struct CoordinatorLinkOptions {
  std::string name;                      // free text: host name. Default: none
  std::string model_id;                  // jobs must name the same model id
  std::string address;                   // this worker's own Worker API, if served
  int capacity = 1;                      // shards run at once. Default: 1
  int64_t lease_wait_ms = 10000;         // long-poll length. Default: 10 s
  int64_t retry_max_ms = 2000;           // backoff cap when unreachable. Default: 2 s
  size_t chunk_bytes = size_t{1} << 20;  // per streamed TensorChunk
  // Where progress lines go ("shard ... done in ..."). Default: stderr
  std::function<void(const std::string&)> log;
};

// What the link did, for logs and tests.
struct CoordinatorLinkStats {
  int64_t registrations = 0;
  int64_t shards_completed = 0;  // results accepted by the coordinator
  int64_t shards_failed = 0;     // FailShard sent (handed back included)
  int64_t shards_abandoned = 0;  // cancelled by the coordinator
  int64_t shards_handed_back = 0;
  int64_t shards_running = 0;  // now
  uint64_t bytes_sent = 0;     // result tensor bytes streamed
  double busy_seconds = 0;     // running shards
};

class CoordinatorLink {
 public:
  CoordinatorLink(std::shared_ptr<const WorkerBackend> backend,
                  std::shared_ptr<grpc::Channel> channel, CoordinatorLinkOptions options);
  ~CoordinatorLink();  // Stop()s

  void Start();
  // Stops leasing, cancels the running shards and hands them back (FailShard
  // with handed_back), then joins the threads. Idempotent.
  void Stop();
  CoordinatorLinkStats stats() const;

 private:
  struct Running {
    std::string job_id;
    int64_t shard_id = 0;
    std::atomic<bool> cancelled{false};  // by the coordinator
  };

  void RunnerLoop();
  void HeartbeatLoop();
  // The current worker id, registering first if needed; empty when stopping.
  std::string EnsureRegistered();
  void ForgetRegistration(const std::string& worker_id);
  void RunLease(const std::string& worker_id, const v1::ShardLease& lease);
  // A lease with `prepare`: the job's dataset and model, sent back in the
  // CompleteShard header.
  void RunPrepare(const std::string& worker_id, const v1::ShardLease& lease);
  // CompleteShard: the header (with `prepared`, the answer to a prepare
  // lease, when given), then the result's tensors in chunks.
  absl::Status SendResult(const std::string& worker_id, const v1::ShardLease& lease,
                          RunResult result, bool* accepted,
                          v1::PreparedDataset* prepared = nullptr);
  void SendFailure(const std::string& worker_id, const v1::ShardLease& lease,
                   const absl::Status& error, bool handed_back);
  // Sleeps up to `ms` unless stopping; false when stopping.
  bool Backoff(int64_t ms);
  // One log line (common/log.h); about a lease: with its job, shard and lease id as fields.
  void Log(const std::string& line, const v1::ShardLease* lease = nullptr) const;
  void Count(int64_t CoordinatorLinkStats::*field);

  const std::shared_ptr<const WorkerBackend> backend_;
  const std::unique_ptr<v1::WorkQueue::Stub> stub_;
  const CoordinatorLinkOptions options_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::string worker_id_ ABSL_GUARDED_BY(mu_);
  int64_t heartbeat_ms_ ABSL_GUARDED_BY(mu_) = 500;
  bool unreachable_logged_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, std::shared_ptr<Running>> running_ ABSL_GUARDED_BY(mu_);  // by lease id
  std::set<grpc::ClientContext*> polls_ ABSL_GUARDED_BY(mu_);
  CoordinatorLinkStats stats_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_COORDINATOR_LINK_H_
