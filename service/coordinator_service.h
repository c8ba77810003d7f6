// The coordinator's client-facing gRPC adapter (lensgrid.v1.Coordinator,
// callback API): unpacks requests, calls the Scheduler, packs replies.
// WatchJob streams park until the scheduler changes; a pump thread wakes them
// and the work queue's parked LeaseShard polls (service/work_queue_service.h,
// the worker-facing API over the same Scheduler), expires leases and notices
// lost workers.
//
//   WorkQueueService queue(&scheduler, authorizer.get());  // common/auth.h
//   CoordinatorService service(&scheduler, authorizer.get(), &queue);
//   builder.RegisterService(&service);
//   builder.RegisterService(&queue);  // or on a server of its own
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
#include "service/work_queue_service.h"

namespace lensgrid::service {

class WatchReactor;

class CoordinatorService final : public v1::Coordinator::CallbackService {
 public:
  // Every handler first asks `auth` (which outlives the service) who calls and
  // whether that caller's role may call the method; a refused call does nothing.
  // The pump serves `queue`'s parked polls (it outlives the service).
  CoordinatorService(Scheduler* scheduler, const Authorizer* auth, WorkQueueService* queue)
      : scheduler_(scheduler), auth_(auth), queue_(queue) {}
  // REQUIRES: the servers using this service and the queue have been shut down.
  ~CoordinatorService() override;
  void Start();
  // Answers every parked call (the queue's too); call before the servers'
  // Shutdown().
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
  Scheduler* scheduler() { return scheduler_; }

 private:
  void Pump();

  Scheduler* scheduler_;
  const Authorizer* auth_;
  WorkQueueService* queue_;
  RealClock clock_;
  std::thread pump_;
  std::atomic<bool> stop_{false};
  absl::Mutex mu_;
  std::list<WatchReactor*> watchers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lensgrid::service

#endif  // LENSGRID_SERVICE_COORDINATOR_SERVICE_H_
