#include "service/coordinator_service.h"

#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/echo.h"
#include "common/grpc_status.h"
#include "common/refused_calls.h"
#include "common/tensor_chunks.h"

namespace lensgrid::service {

// Streams a job's events from a sequence number; parks when it has sent them
// all and the job is still running, until the pump pokes it.
class WatchReactor : public grpc::ServerWriteReactor<v1::JobEvent> {
 public:
  WatchReactor(CoordinatorService* service, Caller caller, std::string job_id, int64_t after_seq)
      : service_(service),
        caller_(std::move(caller)),
        job_id_(std::move(job_id)),
        last_seq_(after_seq) {}

  // Writes the next event or finishes; a no-op while a write is in flight.
  void Poke() {
    enum { kNothing, kWrite, kFinish } action = kNothing;
    grpc::Status finish;
    {
      absl::MutexLock lock(&mu_);
      if (writing_ || finished_) return;
      if (cancelled_) {
        finished_ = true;
        action = kFinish;
        finish = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
      } else {
        if (pending_.empty()) {
          bool final = false;
          auto events = service_->scheduler()->EventsAfter(caller_, job_id_, last_seq_, &final);
          if (!events.ok()) {
            finished_ = true;
            action = kFinish;
            finish = ToGrpcStatus(events.status());
          } else {
            pending_.assign(events->begin(), events->end());
            final_ = final;
          }
        }
        if (action == kNothing && !pending_.empty()) {
          current_ = std::move(pending_.front());
          pending_.pop_front();
          last_seq_ = current_.seq();
          writing_ = true;
          action = kWrite;
        } else if (action == kNothing && final_) {
          finished_ = true;
          action = kFinish;
        }
      }
    }
    if (action == kWrite) StartWrite(&current_);
    if (action == kFinish) Finish(finish);
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) cancelled_ = true;
    }
    Poke();
  }
  void OnCancel() override {
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
    }
    Poke();
  }
  // May run inline inside Finish() on the pump thread, which holds the
  // service's lock: only mark; the pump deletes done watchers.
  void OnDone() override { done_ = true; }
  bool done() const { return done_; }

 private:
  CoordinatorService* service_;
  const Caller caller_;
  const std::string job_id_;
  absl::Mutex mu_;
  int64_t last_seq_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::JobEvent> pending_ ABSL_GUARDED_BY(mu_);
  v1::JobEvent current_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool final_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> done_{false};
};

// Sends a finished job's header, then its tensors in <= 1 MiB chunks.
class ResultReactor : public grpc::ServerWriteReactor<v1::GetResultResponse> {
 public:
  explicit ResultReactor(absl::StatusOr<Scheduler::Result> result) {
    if (!result.ok()) {
      Finish(ToGrpcStatus(result.status()));
      return;
    }
    v1::ResultHeader* header = msg_.mutable_header();
    *header->mutable_job() = result->job;
    for (const Grid& g : result->grids) {
      v1::ResultGrid* rg = header->add_grids();
      rg->set_name(g.name);
      for (const auto& a : g.axes) rg->add_axes(a);
      for (int64_t d : g.shape) rg->add_shape(d);
    }
    auto owner = std::make_shared<std::vector<Array>>(std::move(result->tensors));
    std::vector<TensorBytes> tensors;
    for (const Array& a : *owner) {
      tensors.push_back(
          TensorBytes{a.name, TensorDType::kF32, a.shape,
                      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(a.values.data()),
                                                a.values.size() * sizeof(float)),
                      owner});
    }
    cursor_ = std::make_unique<ChunkCursor>(std::move(tensors));
    StartWrite(&msg_);
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
      return;
    }
    msg_.Clear();
    if (cursor_->Next(msg_.mutable_chunk())) {
      StartWrite(&msg_);
    } else {
      Finish(grpc::Status::OK);
    }
  }
  void OnDone() override { delete this; }

 private:
  v1::GetResultResponse msg_;
  std::unique_ptr<ChunkCursor> cursor_;
};

void CoordinatorService::Start() {
  stop_ = false;
  pump_ = std::thread([this] { Pump(); });
}

void CoordinatorService::Stop() {
  if (stop_.exchange(true)) return;
  if (pump_.joinable()) pump_.join();
  queue_->Stop();
}

CoordinatorService::~CoordinatorService() {
  Stop();
  // The server has shut down (it is destroyed first): every watcher is done.
  absl::MutexLock lock(&mu_);
  for (WatchReactor* w : watchers_) delete w;
}

// Wakes when the scheduler changes (a job submitted, a shard re-queued, an
// event) or at the next tick (every kTickMs: expiries, backoffs, workers
// lost); no poll in between. The work queue's parked workers ask the
// scheduler again only when it changed since they last asked.
void CoordinatorService::Pump() {
  constexpr int64_t kTickMs = 50;
  uint64_t version = scheduler_->version();
  int64_t last_tick = clock_.NowMs();
  while (!stop_) {
    const uint64_t before = version;
    scheduler_->WaitForChange(&version, std::max<int64_t>(1, last_tick + kTickMs - clock_.NowMs()));
    const int64_t now = clock_.NowMs();
    const bool tick = now - last_tick >= kTickMs;
    if (tick) {
      scheduler_->Tick();
      last_tick = now;
    }
    if (!tick && version == before) continue;
    queue_->ServeParked(/*all=*/false);
    absl::MutexLock lock(&mu_);
    for (auto it = watchers_.begin(); it != watchers_.end();) {
      if ((*it)->done()) {
        delete *it;
        it = watchers_.erase(it);
      } else {
        (*it)->Poke();
        ++it;
      }
    }
  }
}

grpc::ServerUnaryReactor* CoordinatorService::SubmitJob(grpc::CallbackServerContext* ctx,
                                                        const v1::SubmitJobRequest* req,
                                                        v1::SubmitJobResponse* resp) {
  auto caller = auth_->Authorize(*ctx, "SubmitJob");
  if (!caller.ok()) return FinishUnary(ctx, caller.status());
  auto id = scheduler_->Submit(*caller, req->spec(), req->request_id());
  if (!id.ok()) return FinishUnary(ctx, id.status());
  resp->set_job_id(*id);
  auto status = scheduler_->GetJob(*caller, *id);
  if (status.ok()) resp->set_shards_total(status->shards_total());
  return FinishUnary(ctx, absl::OkStatus());
}

grpc::ServerWriteReactor<v1::JobEvent>* CoordinatorService::WatchJob(
    grpc::CallbackServerContext* ctx, const v1::WatchJobRequest* req) {
  auto caller = auth_->Authorize(*ctx, "WatchJob");
  if (!caller.ok()) return new RefusedWrite<v1::JobEvent>(caller.status());
  auto* w = new WatchReactor(this, *caller, req->job_id(), req->after_seq());
  {
    absl::MutexLock lock(&mu_);
    watchers_.push_back(w);
  }
  w->Poke();
  return w;
}

grpc::ServerUnaryReactor* CoordinatorService::GetJob(grpc::CallbackServerContext* ctx,
                                                     const v1::GetJobRequest* req,
                                                     v1::JobStatus* resp) {
  auto caller = auth_->Authorize(*ctx, "GetJob");
  if (!caller.ok()) return FinishUnary(ctx, caller.status());
  auto s = scheduler_->GetJob(*caller, req->job_id());
  if (s.ok()) *resp = *s;
  return FinishUnary(ctx, s.status());
}

grpc::ServerWriteReactor<v1::GetResultResponse>* CoordinatorService::GetResult(
    grpc::CallbackServerContext* ctx, const v1::GetResultRequest* req) {
  auto caller = auth_->Authorize(*ctx, "GetResult");
  if (!caller.ok()) return new RefusedWrite<v1::GetResultResponse>(caller.status());
  return new ResultReactor(scheduler_->GetResult(*caller, req->job_id()));
}

grpc::ServerUnaryReactor* CoordinatorService::CancelJob(grpc::CallbackServerContext* ctx,
                                                        const v1::CancelJobRequest* req,
                                                        v1::JobStatus* resp) {
  auto caller = auth_->Authorize(*ctx, "CancelJob");
  if (!caller.ok()) return FinishUnary(ctx, caller.status());
  auto s = scheduler_->Cancel(*caller, req->job_id());
  if (s.ok()) *resp = *s;
  return FinishUnary(ctx, s.status());
}

grpc::ServerUnaryReactor* CoordinatorService::DeleteJob(grpc::CallbackServerContext* ctx,
                                                        const v1::DeleteJobRequest* req,
                                                        v1::DeleteJobResponse* resp) {
  auto caller = auth_->Authorize(*ctx, "DeleteJob");
  if (!caller.ok()) return FinishUnary(ctx, caller.status());
  return FinishUnary(ctx, scheduler_->Delete(*caller, req->job_id()));
}

grpc::ServerUnaryReactor* CoordinatorService::ListJobs(grpc::CallbackServerContext* ctx,
                                                       const v1::ListJobsRequest* req,
                                                       v1::ListJobsResponse* resp) {
  auto caller = auth_->Authorize(*ctx, "ListJobs");
  if (!caller.ok()) return FinishUnary(ctx, caller.status());
  auto jobs =
      scheduler_->ListJobs(*caller, {req->page_size(), req->page_token()},
                           resp->mutable_next_page_token(), JobFilter{req->state(), req->owner()});
  if (!jobs.ok()) return FinishUnary(ctx, jobs.status());
  for (auto& j : *jobs) *resp->add_jobs() = std::move(j);
  return FinishUnary(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* CoordinatorService::ListWorkers(grpc::CallbackServerContext* ctx,
                                                          const v1::ListWorkersRequest* req,
                                                          v1::ListWorkersResponse* resp) {
  auto caller = auth_->Authorize(*ctx, "ListWorkers");
  if (!caller.ok()) return FinishUnary(ctx, caller.status());
  auto workers = scheduler_->ListWorkers({req->page_size(), req->page_token()},
                                         resp->mutable_next_page_token(),
                                         {req->alive_only(), req->model_id()});
  if (!workers.ok()) return FinishUnary(ctx, workers.status());
  for (auto& w : *workers) *resp->add_workers() = std::move(w);
  return FinishUnary(ctx, absl::OkStatus());
}

}  // namespace lensgrid::service
