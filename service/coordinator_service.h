// The coordinator's gRPC adapter (callback API): unpacks requests, calls the
// Scheduler, packs replies. LeaseShard long polls and WatchJob streams park
// until the scheduler changes; a pump thread wakes them, expires leases and
// notices lost workers.
//
//   CoordinatorService service(&scheduler, authorizer.get());  // common/auth.h
//   builder.RegisterService(&service);
//   auto server = builder.BuildAndStart();
//   service.Start();  ...  service.Stop(); server->Shutdown();
#ifndef LENSGRID_SERVICE_COORDINATOR_SERVICE_H_
#define LENSGRID_SERVICE_COORDINATOR_SERVICE_H_

#include <atomic>
#include <list>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "common/auth.h"
#include "lensgrid/v1/coordinator.grpc.pb.h"
#include "service/scheduler.h"

namespace lensgrid::service {

class WatchReactor;

class CoordinatorService final : public v1::Coordinator::CallbackService {
 public:
  static constexpr int64_t kMaxWaitMs = 30000;  // cap on LeaseShard's wait_ms

  // Every handler first asks `auth` (which outlives the service) who calls and
  // whether that caller's role may call the method; a refused call does nothing.
  CoordinatorService(Scheduler* scheduler, const Authorizer* auth)
      : scheduler_(scheduler), auth_(auth) {}
  // REQUIRES: the server using this service has been shut down.
  ~CoordinatorService() override;
  void Start();
  // Answers every parked call; call before the server's Shutdown().
  void Stop();

  grpc::ServerUnaryReactor* SubmitJob(grpc::CallbackServerContext* ctx,
                                      const v1::SubmitJobRequest* req,
                                      v1::SubmitJobResponse* resp) override;
  grpc::ServerWriteReactor<v1::JobEvent>* WatchJob(grpc::CallbackServerContext* ctx,
                                                   const v1::WatchJobRequest* req) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* ctx, const v1::GetJobRequest* req,
                                   v1::JobStatus* resp) override;
  grpc::ServerWriteReactor<v1::GetResultResponse>* GetResult(
      grpc::CallbackServerContext* ctx, const v1::GetResultRequest* req) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* ctx,
                                      const v1::CancelJobRequest* req,
                                      v1::JobStatus* resp) override;
  grpc::ServerUnaryReactor* DeleteJob(grpc::CallbackServerContext* ctx,
                                      const v1::DeleteJobRequest* req,
                                      v1::DeleteJobResponse* resp) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* ctx,
                                     const v1::ListJobsRequest* req,
                                     v1::ListJobsResponse* resp) override;
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* ctx,
                                        const v1::ListWorkersRequest* req,
                                        v1::ListWorkersResponse* resp) override;
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

  Scheduler* scheduler() { return scheduler_; }

 private:
  struct ParkedLease {
    grpc::ServerUnaryReactor* reactor;
    grpc::CallbackServerContext* ctx;
    std::string worker_id;
    v1::LeaseShardResponse* resp;
    int64_t deadline_ms;
    uint64_t seen_version;  // the scheduler's version when it last asked for a shard
  };
  void Pump();
  void ServeParked(bool all);

  Scheduler* scheduler_;
  const Authorizer* auth_;
  RealClock clock_;
  std::thread pump_;
  std::atomic<bool> stop_{false};
  absl::Mutex mu_;
  std::list<ParkedLease> parked_ ABSL_GUARDED_BY(mu_);
  std::list<WatchReactor*> watchers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lensgrid::service

#endif  // LENSGRID_SERVICE_COORDINATOR_SERVICE_H_
