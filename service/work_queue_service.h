// The coordinator's worker-facing gRPC adapter (lensgrid.v1.WorkQueue,
// callback API): Register, LeaseShard, Heartbeat, CompleteShard, FailShard
// over the Scheduler that the client-facing CoordinatorService shares.
// LeaseShard long polls park here; the CoordinatorService's pump wakes them
// when the scheduler changes (and expires leases, notices lost workers).
//
//   WorkQueueService queue(&scheduler, authorizer.get());        // common/auth.h
//   CoordinatorService service(&scheduler, authorizer.get(), &queue);
//   builder.RegisterService(&service);
//   builder.RegisterService(&queue);       // or on a server of its own
//   auto server = builder.BuildAndStart();
//   service.Start();  ...  service.Stop(); server->Shutdown();
#ifndef LENSGRID_SERVICE_WORK_QUEUE_SERVICE_H_
#define LENSGRID_SERVICE_WORK_QUEUE_SERVICE_H_

#include <atomic>
#include <list>
#include <string>

#include "absl/synchronization/mutex.h"
#include "common/auth.h"
#include "lensgrid/v1/coordinator.grpc.pb.h"
#include "service/clock.h"
#include "service/scheduler.h"

namespace lensgrid::service {

class WorkQueueService final : public v1::WorkQueue::CallbackService {
 public:
  static constexpr int64_t kMaxWaitMs = 30000;  // cap on LeaseShard's wait_ms

  // Every handler first asks `auth` (which outlives the service) who calls and
  // whether that caller's role may call the method; a refused call does nothing.
  WorkQueueService(Scheduler* scheduler, const Authorizer* auth)
      : scheduler_(scheduler), auth_(auth) {}

  // Answers the parked LeaseShard calls that a scheduler change may serve,
  // those past their wait and those cancelled (all: every one, with nothing).
  // The CoordinatorService's pump calls it.
  void ServeParked(bool all);
  // Answers every parked call; no call parks after it. Call before the
  // server's Shutdown().
  void Stop();

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* ctx,
                                     const v1::RegisterRequest* req,
                                     v1::RegisterResponse* resp) override;
  grpc::ServerUnaryReactor* LeaseShard(grpc::CallbackServerContext* ctx,
                                       const v1::LeaseShardRequest* req,
                                       v1::LeaseShardResponse* resp) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx,
                                      const v1::HeartbeatRequest* req,
                                      v1::HeartbeatResponse* resp) override;
  grpc::ServerReadReactor<v1::CompleteShardRequest>* CompleteShard(
      grpc::CallbackServerContext* ctx, v1::CompleteShardResponse* resp) override;
  grpc::ServerUnaryReactor* FailShard(grpc::CallbackServerContext* ctx,
                                      const v1::FailShardRequest* req,
                                      v1::FailShardResponse* resp) override;

 private:
  struct ParkedLease {
    grpc::ServerUnaryReactor* reactor;
    grpc::CallbackServerContext* ctx;
    std::string worker_id;
    v1::LeaseShardResponse* resp;
    int64_t deadline_ms;
    uint64_t seen_version;  // the scheduler's version when it last asked for a shard
  };

  Scheduler* scheduler_;
  const Authorizer* auth_;
  RealClock clock_;
  std::atomic<bool> stop_{false};
  absl::Mutex mu_;
  std::list<ParkedLease> parked_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lensgrid::service

#endif  // LENSGRID_SERVICE_WORK_QUEUE_SERVICE_H_
