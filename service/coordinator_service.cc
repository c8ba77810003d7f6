#include "service/coordinator_service.h"

#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/echo.h"
#include "common/grpc_status.h"
#include "common/tensor_chunks.h"

namespace lensgrid::service {

namespace {

grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx, const absl::Status& status) {
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  r->Finish(ToGrpcStatus(status));
  return r;
}

// A streaming call refused before it started (the authorization check).
template <typename Message>
class RefusedWrite final : public grpc::ServerWriteReactor<Message> {
 public:
  explicit RefusedWrite(const absl::Status& why) { this->Finish(ToGrpcStatus(why)); }
  void OnDone() override { delete this; }
};
class RefusedRead final : public grpc::ServerReadReactor<v1::CompleteShardRequest> {
 public:
  explicit RefusedRead(const absl::Status& why) { Finish(ToGrpcStatus(why)); }
  void OnDone() override { delete this; }
};

}  // namespace

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

// No shard's result comes near this (a whole GPT-2 small patch-resid grid
// over 1,000 prompts of 1,024 tokens is ~50 MB); more is a broken worker.
constexpr uint64_t kMaxResultBytes = uint64_t{256} << 20;

// Receives a shard's header and result chunks, then hands them to the
// scheduler.
class CompleteReactor : public grpc::ServerReadReactor<v1::CompleteShardRequest> {
 public:
  CompleteReactor(Scheduler* scheduler, v1::CompleteShardResponse* resp)
      : scheduler_(scheduler), resp_(resp) {
    StartRead(&req_);
  }
  void OnReadDone(bool ok) override {
    if (!ok) return Complete();
    if (!have_header_) {
      if (!req_.has_header() || req_.header().lease_id().empty()) {
        return Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                   "the first CompleteShard message must be a "
                                   "header with a lease_id"));
      }
      header_ = req_.header();
      have_header_ = true;
    } else if (req_.has_chunk()) {
      absl::Status s = assembler_.Add(std::move(*req_.mutable_chunk()));
      if (!s.ok()) return Malformed(s);
      if (assembler_.bytes_received() > kMaxResultBytes) {
        return Malformed(
            absl::ResourceExhaustedError(absl::StrCat("result over ", kMaxResultBytes, " bytes")));
      }
    } else {
      return Malformed(absl::InvalidArgumentError("a second header"));
    }
    StartRead(&req_);
  }
  void OnDone() override { delete this; }

 private:
  void Malformed(const absl::Status& why) {
    const std::string msg = absl::StrCat("malformed result stream: ", why.message());
    if (have_header_) {
      (void)scheduler_->Fail(header_.worker_id(), header_.lease_id(), absl::InternalError(msg));
    }
    Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, msg));
  }
  void Complete() {
    if (!have_header_) {
      return Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no header"));
    }
    if (header_.has_prepared()) {
      if (assembler_.bytes_received() > 0) {
        return Malformed(absl::InvalidArgumentError("a prepared dataset comes with no tensors"));
      }
      auto accepted =
          scheduler_->CompletePrepare(header_.worker_id(), header_.lease_id(), header_.prepared());
      if (!accepted.ok()) return Finish(ToGrpcStatus(accepted.status()));
      resp_->set_accepted(*accepted);
      if (!*accepted) resp_->set_message("dropped: the job is over or was prepared already");
      return Finish(grpc::Status::OK);
    }
    auto tensors = assembler_.Finish();
    if (!tensors.ok()) return Malformed(tensors.status());
    std::vector<Array> arrays;
    for (WireTensor& t : *tensors) {
      if (t.dtype != TensorDType::kF32) {
        return Malformed(
            absl::InvalidArgumentError(absl::StrCat("tensor ", Echo(t.name), " is not F32")));
      }
      Array a{t.name, t.shape, std::vector<float>(t.data.size() / sizeof(float))};
      std::memcpy(a.values.data(), t.data.data(), a.values.size() * sizeof(float));
      arrays.push_back(std::move(a));
    }
    std::string note;
    auto accepted =
        scheduler_->Complete(header_.worker_id(), header_.lease_id(), std::move(arrays), &note);
    if (!accepted.ok()) return Finish(ToGrpcStatus(accepted.status()));
    resp_->set_accepted(*accepted);
    resp_->set_message(*accepted ? note
                                 : "dropped: the shard was already done or "
                                   "its job is over");
    Finish(grpc::Status::OK);
  }

  Scheduler* scheduler_;
  v1::CompleteShardResponse* resp_;
  v1::CompleteShardRequest req_;
  v1::CompleteShardHeader header_;
  bool have_header_ = false;
  TensorAssembler assembler_;
};

void CoordinatorService::Start() {
  stop_ = false;
  pump_ = std::thread([this] { Pump(); });
}

void CoordinatorService::Stop() {
  if (stop_.exchange(true)) return;
  if (pump_.joinable()) pump_.join();
  ServeParked(/*all=*/true);
}

CoordinatorService::~CoordinatorService() {
  Stop();
  // The server has shut down (it is destroyed first): every watcher is done.
  absl::MutexLock lock(&mu_);
  for (WatchReactor* w : watchers_) delete w;
}

// Wakes when the scheduler changes (a job submitted, a shard re-queued, an
// event) or at the next tick (every kTickMs: expiries, backoffs, workers
// lost); no poll in between. Parked workers ask the scheduler again only when
// it changed since they last asked.
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
    ServeParked(/*all=*/false);
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

void CoordinatorService::ServeParked(bool all) {
  // Taken out of the list under the service mutex; the scheduler is asked
  // without it (LeaseShard and watchers are not held up meanwhile).
  std::list<ParkedLease> parked;
  {
    absl::MutexLock lock(&mu_);
    parked.splice(parked.end(), parked_);
  }
  const uint64_t version = scheduler_->version();
  const int64_t now = clock_.NowMs();
  std::vector<std::pair<ParkedLease, grpc::Status>> finish;
  for (auto it = parked.begin(); it != parked.end();) {
    grpc::Status status;
    bool done = all || now >= it->deadline_ms || it->ctx->IsCancelled();
    if (!done && it->seen_version != version) {
      it->seen_version = version;
      auto lease = scheduler_->Lease(it->worker_id);
      if (!lease.ok()) {
        status = ToGrpcStatus(lease.status());
        done = true;
      } else if (lease->has_value()) {
        it->resp->set_has_shard(true);
        *it->resp->mutable_lease() = std::move(**lease);
        done = true;
      }
    }
    if (done) {
      finish.emplace_back(*it, status);
      it = parked.erase(it);
    } else {
      ++it;
    }
  }
  {
    absl::MutexLock lock(&mu_);
    parked_.splice(parked_.begin(), parked);
  }
  for (auto& [p, status] : finish) p.reactor->Finish(status);
}

grpc::ServerUnaryReactor* CoordinatorService::SubmitJob(grpc::CallbackServerContext* ctx,
                                                        const v1::SubmitJobRequest* req,
                                                        v1::SubmitJobResponse* resp) {
  auto caller = auth_->Authorize(*ctx, "SubmitJob");
  if (!caller.ok()) return Done(ctx, caller.status());
  auto id = scheduler_->Submit(*caller, req->spec(), req->request_id());
  if (!id.ok()) return Done(ctx, id.status());
  resp->set_job_id(*id);
  auto status = scheduler_->GetJob(*caller, *id);
  if (status.ok()) resp->set_shards_total(status->shards_total());
  return Done(ctx, absl::OkStatus());
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
  if (!caller.ok()) return Done(ctx, caller.status());
  auto s = scheduler_->GetJob(*caller, req->job_id());
  if (s.ok()) *resp = *s;
  return Done(ctx, s.status());
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
  if (!caller.ok()) return Done(ctx, caller.status());
  auto s = scheduler_->Cancel(*caller, req->job_id());
  if (s.ok()) *resp = *s;
  return Done(ctx, s.status());
}

grpc::ServerUnaryReactor* CoordinatorService::DeleteJob(grpc::CallbackServerContext* ctx,
                                                        const v1::DeleteJobRequest* req,
                                                        v1::DeleteJobResponse* resp) {
  auto caller = auth_->Authorize(*ctx, "DeleteJob");
  if (!caller.ok()) return Done(ctx, caller.status());
  return Done(ctx, scheduler_->Delete(*caller, req->job_id()));
}

grpc::ServerUnaryReactor* CoordinatorService::ListJobs(grpc::CallbackServerContext* ctx,
                                                       const v1::ListJobsRequest* req,
                                                       v1::ListJobsResponse* resp) {
  auto caller = auth_->Authorize(*ctx, "ListJobs");
  if (!caller.ok()) return Done(ctx, caller.status());
  auto jobs =
      scheduler_->ListJobs(*caller, {req->page_size(), req->page_token()},
                           resp->mutable_next_page_token(), JobFilter{req->state(), req->owner()});
  if (!jobs.ok()) return Done(ctx, jobs.status());
  for (auto& j : *jobs) *resp->add_jobs() = std::move(j);
  return Done(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* CoordinatorService::ListWorkers(grpc::CallbackServerContext* ctx,
                                                          const v1::ListWorkersRequest* req,
                                                          v1::ListWorkersResponse* resp) {
  auto caller = auth_->Authorize(*ctx, "ListWorkers");
  if (!caller.ok()) return Done(ctx, caller.status());
  auto workers = scheduler_->ListWorkers({req->page_size(), req->page_token()},
                                         resp->mutable_next_page_token());
  if (!workers.ok()) return Done(ctx, workers.status());
  for (auto& w : *workers) *resp->add_workers() = std::move(w);
  return Done(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* CoordinatorService::Register(grpc::CallbackServerContext* ctx,
                                                       const v1::RegisterRequest* req,
                                                       v1::RegisterResponse* resp) {
  auto caller = auth_->Authorize(*ctx, "Register");
  if (!caller.ok()) return Done(ctx, caller.status());
  if (req->model_id().empty() || req->weights_sha256().empty()) {
    return Done(ctx, absl::InvalidArgumentError("model_id and weights_sha256 are required"));
  }
  auto id = scheduler_->RegisterWorker(*req);
  if (!id.ok()) return Done(ctx, id.status());
  resp->set_worker_id(*id);
  resp->set_heartbeat_interval_ms(scheduler_->heartbeat_interval_ms());
  return Done(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* CoordinatorService::LeaseShard(grpc::CallbackServerContext* ctx,
                                                         const v1::LeaseShardRequest* req,
                                                         v1::LeaseShardResponse* resp) {
  auto caller = auth_->Authorize(*ctx, "LeaseShard");
  if (!caller.ok()) return Done(ctx, caller.status());
  // The version before asking: a change after it (work that arrived while
  // this call parks) makes the pump ask again for this worker.
  const uint64_t version = scheduler_->version();
  auto lease = scheduler_->Lease(req->worker_id());
  if (!lease.ok()) return Done(ctx, lease.status());
  if (lease->has_value()) {
    resp->set_has_shard(true);
    *resp->mutable_lease() = std::move(**lease);
    return Done(ctx, absl::OkStatus());
  }
  if (req->wait_ms() <= 0 || stop_) return Done(ctx, absl::OkStatus());
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  absl::MutexLock lock(&mu_);
  parked_.push_back({r, ctx, req->worker_id(), resp,
                     clock_.NowMs() + std::min(req->wait_ms(), kMaxWaitMs), version});
  return r;
}

grpc::ServerUnaryReactor* CoordinatorService::Heartbeat(grpc::CallbackServerContext* ctx,
                                                        const v1::HeartbeatRequest* req,
                                                        v1::HeartbeatResponse* resp) {
  auto caller = auth_->Authorize(*ctx, "Heartbeat");
  if (!caller.ok()) return Done(ctx, caller.status());
  int64_t lease_ms = 0;
  auto cancelled = scheduler_->Heartbeat(
      req->worker_id(), std::vector<std::string>(req->lease_ids().begin(), req->lease_ids().end()),
      &lease_ms);
  if (!cancelled.ok()) return Done(ctx, cancelled.status());
  for (auto& id : *cancelled) resp->add_cancelled_lease_ids(std::move(id));
  resp->set_lease_ms(lease_ms);
  return Done(ctx, absl::OkStatus());
}

grpc::ServerReadReactor<v1::CompleteShardRequest>* CoordinatorService::CompleteShard(
    grpc::CallbackServerContext* ctx, v1::CompleteShardResponse* resp) {
  auto caller = auth_->Authorize(*ctx, "CompleteShard");
  if (!caller.ok()) return new RefusedRead(caller.status());
  return new CompleteReactor(scheduler_, resp);
}

grpc::ServerUnaryReactor* CoordinatorService::FailShard(grpc::CallbackServerContext* ctx,
                                                        const v1::FailShardRequest* req,
                                                        v1::FailShardResponse* resp) {
  auto caller = auth_->Authorize(*ctx, "FailShard");
  if (!caller.ok()) return Done(ctx, caller.status());
  if (req->code() <= 0 || req->code() > 16) {
    return Done(ctx, absl::InvalidArgumentError("code must be a google.rpc.Code other than OK"));
  }
  if (req->handed_back()) {
    return Done(ctx, scheduler_->HandBack(req->worker_id(), req->lease_id()));
  }
  return Done(ctx, scheduler_->Fail(
                       req->worker_id(), req->lease_id(),
                       absl::Status(static_cast<absl::StatusCode>(req->code()), req->message())));
}

}  // namespace lensgrid::service
