#include "service/work_queue_service.h"

#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/echo.h"
#include "common/grpc_status.h"
#include "common/refused_calls.h"
#include "common/tensor_chunks.h"

namespace lensgrid::service {

namespace {

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

}  // namespace

void WorkQueueService::Stop() {
  stop_ = true;
  ServeParked(/*all=*/true);
}

void WorkQueueService::ServeParked(bool all) {
  // Taken out of the list under the service mutex; the scheduler is asked
  // without it (LeaseShard and watchers are not held up meanwhile).
  std::list<ParkedLease> parked;
  {
    absl::MutexLock lock(&mu_);
    parked.splice(parked.end(), parked_);
  }
  const uint64_t version = scheduler_->version();
  const int64_t now = clock_.NowMs();
  // Each call is answered as soon as it has its lease: when a job arrives for
  // 1,000 parked workers, the first is not held until the 1,000th is served.
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
      it->reactor->Finish(status);
      it = parked.erase(it);
    } else {
      ++it;
    }
  }
  {
    absl::MutexLock lock(&mu_);
    parked_.splice(parked_.begin(), parked);
  }
}

grpc::ServerUnaryReactor* WorkQueueService::Register(grpc::CallbackServerContext* ctx,
                                                     const v1::RegisterRequest* req,
                                                     v1::RegisterResponse* resp) {
  auto caller = auth_->Authorize(*ctx, "Register");
  if (!caller.ok()) return FinishUnary(ctx, caller.status());
  if (req->model_id().empty() || req->weights_sha256().empty()) {
    return FinishUnary(ctx, absl::InvalidArgumentError("model_id and weights_sha256 are required"));
  }
  auto id = scheduler_->RegisterWorker(*req);
  if (!id.ok()) return FinishUnary(ctx, id.status());
  resp->set_worker_id(*id);
  resp->set_heartbeat_interval_ms(scheduler_->heartbeat_interval_ms());
  return FinishUnary(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* WorkQueueService::LeaseShard(grpc::CallbackServerContext* ctx,
                                                       const v1::LeaseShardRequest* req,
                                                       v1::LeaseShardResponse* resp) {
  auto caller = auth_->Authorize(*ctx, "LeaseShard");
  if (!caller.ok()) return FinishUnary(ctx, caller.status());
  // The version before asking: a change after it (work that arrived while
  // this call parks) makes the pump ask again for this worker.
  const uint64_t version = scheduler_->version();
  auto lease = scheduler_->Lease(req->worker_id());
  if (!lease.ok()) return FinishUnary(ctx, lease.status());
  if (lease->has_value()) {
    resp->set_has_shard(true);
    *resp->mutable_lease() = std::move(**lease);
    return FinishUnary(ctx, absl::OkStatus());
  }
  if (req->wait_ms() <= 0 || stop_) return FinishUnary(ctx, absl::OkStatus());
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  absl::MutexLock lock(&mu_);
  parked_.push_back({r, ctx, req->worker_id(), resp,
                     clock_.NowMs() + std::min(req->wait_ms(), kMaxWaitMs), version});
  return r;
}

grpc::ServerUnaryReactor* WorkQueueService::Heartbeat(grpc::CallbackServerContext* ctx,
                                                      const v1::HeartbeatRequest* req,
                                                      v1::HeartbeatResponse* resp) {
  auto caller = auth_->Authorize(*ctx, "Heartbeat");
  if (!caller.ok()) return FinishUnary(ctx, caller.status());
  int64_t lease_ms = 0;
  auto cancelled = scheduler_->Heartbeat(
      req->worker_id(), std::vector<std::string>(req->lease_ids().begin(), req->lease_ids().end()),
      &lease_ms);
  if (!cancelled.ok()) return FinishUnary(ctx, cancelled.status());
  for (auto& id : *cancelled) resp->add_cancelled_lease_ids(std::move(id));
  resp->set_lease_ms(lease_ms);
  return FinishUnary(ctx, absl::OkStatus());
}

grpc::ServerReadReactor<v1::CompleteShardRequest>* WorkQueueService::CompleteShard(
    grpc::CallbackServerContext* ctx, v1::CompleteShardResponse* resp) {
  auto caller = auth_->Authorize(*ctx, "CompleteShard");
  if (!caller.ok()) return new RefusedRead<v1::CompleteShardRequest>(caller.status());
  return new CompleteReactor(scheduler_, resp);
}

grpc::ServerUnaryReactor* WorkQueueService::FailShard(grpc::CallbackServerContext* ctx,
                                                      const v1::FailShardRequest* req,
                                                      v1::FailShardResponse* resp) {
  auto caller = auth_->Authorize(*ctx, "FailShard");
  if (!caller.ok()) return FinishUnary(ctx, caller.status());
  if (req->code() <= 0 || req->code() > 16) {
    return FinishUnary(ctx,
                       absl::InvalidArgumentError("code must be a google.rpc.Code other than OK"));
  }
  if (req->handed_back()) {
    return FinishUnary(ctx, scheduler_->HandBack(req->worker_id(), req->lease_id()));
  }
  return FinishUnary(ctx, scheduler_->Fail(req->worker_id(), req->lease_id(),
                                           absl::Status(static_cast<absl::StatusCode>(req->code()),
                                                        req->message())));
}

}  // namespace lensgrid::service
