#include "worker/coordinator_link.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/tensor_chunks.h"

namespace lensgrid {
namespace {

using Clock = std::chrono::steady_clock;

int64_t MsSince(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

void SetDeadline(grpc::ClientContext* ctx, int64_t ms) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(ms));
}

std::string ShardName(const v1::ShardLease& lease) {
  return absl::StrCat(lease.job_id(), "/", lease.shard_id(), " attempt ", lease.attempt());
}

constexpr int64_t kRpcTimeoutMs = 10000;

}  // namespace

CoordinatorLink::CoordinatorLink(std::shared_ptr<const WorkerBackend> backend,
                                 std::shared_ptr<grpc::Channel> channel,
                                 CoordinatorLinkOptions options)
    : backend_(std::move(backend)),
      stub_(v1::WorkQueue::NewStub(std::move(channel))),
      options_(std::move(options)) {}

CoordinatorLink::~CoordinatorLink() { Stop(); }

void CoordinatorLink::Start() {
  const int runners = std::max(1, options_.capacity);
  for (int i = 0; i < runners; ++i) threads_.emplace_back([this] { RunnerLoop(); });
  threads_.emplace_back([this] { HeartbeatLoop(); });
}

void CoordinatorLink::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
    for (grpc::ClientContext* ctx : polls_) ctx->TryCancel();
  }
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

CoordinatorLinkStats CoordinatorLink::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void CoordinatorLink::Log(const std::string& line, const v1::ShardLease* lease) const {
  if (options_.log) {
    options_.log(line);
    return;
  }
  LogFields fields;
  if (lease != nullptr) {
    fields = {{"job", lease->job_id()},
              {"shard", absl::StrCat(lease->shard_id())},
              {"lease", lease->lease_id()}};
  }
  LogEvent(LogLevel::kInfo, line, fields);
}

void CoordinatorLink::Count(int64_t CoordinatorLinkStats::*field) {
  absl::MutexLock lock(&mu_);
  ++(stats_.*field);
}

bool CoordinatorLink::Backoff(int64_t ms) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(ms));
  return !stopping_;
}

std::string CoordinatorLink::EnsureRegistered() {
  int64_t backoff_ms = 100;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return "";
      if (!worker_id_.empty()) return worker_id_;
    }
    v1::RegisterRequest request;
    request.set_name(options_.name);
    request.set_model_id(options_.model_id);
    request.set_weights_sha256(backend_->Info().weights_sha256());
    request.set_device(backend_->Info().device());
    request.set_capacity(std::max(1, options_.capacity));
    request.set_address(options_.address);
    // What the coordinator needs to prepare jobs for clients without model files.
    const v1::ModelConfig& cfg = backend_->Info().config();
    request.mutable_model()->set_n_layers(cfg.n_layers());
    request.mutable_model()->set_n_heads(cfg.n_heads());
    request.mutable_model()->set_attn_only(cfg.attn_only());
    request.mutable_model()->set_d_vocab(cfg.d_vocab());
    request.mutable_model()->set_n_ctx(cfg.n_ctx());
    request.mutable_model()->set_processed(backend_->Info().processed());
    request.set_tokenizer_sha256(backend_->Info().tokenizer_sha256());
    v1::RegisterResponse response;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, kRpcTimeoutMs);
    absl::Status status = FromGrpcStatus(stub_->Register(&ctx, request, &response));
    absl::MutexLock lock(&mu_);
    if (!worker_id_.empty()) return worker_id_;  // another runner got there
    if (status.ok()) {
      worker_id_ = response.worker_id();
      heartbeat_ms_ = std::max<int64_t>(50, response.heartbeat_interval_ms());
      unreachable_logged_ = false;
      ++stats_.registrations;
      Log(absl::StrCat("registered with the coordinator as ", worker_id_, " (model ",
                       options_.model_id, ", capacity ", request.capacity(), ")"));
      return worker_id_;
    }
    if (!unreachable_logged_) {
      unreachable_logged_ = true;
      Log(absl::StrCat("cannot register with the coordinator (", status.ToString(), "); retrying"));
    }
    if (stopping_) return "";
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(backoff_ms));
    backoff_ms = std::min(options_.retry_max_ms, backoff_ms * 2);
  }
}

void CoordinatorLink::ForgetRegistration(const std::string& worker_id) {
  absl::MutexLock lock(&mu_);
  if (worker_id_ != worker_id) return;
  worker_id_.clear();
  Log(absl::StrCat("the coordinator does not know worker ", worker_id,
                   " (it restarted?); registering again"));
}

void CoordinatorLink::RunnerLoop() {
  int64_t backoff_ms = 100;
  while (true) {
    const std::string worker_id = EnsureRegistered();
    if (worker_id.empty()) return;
    v1::LeaseShardRequest request;
    request.set_worker_id(worker_id);
    request.set_wait_ms(options_.lease_wait_ms);
    v1::LeaseShardResponse response;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, options_.lease_wait_ms + kRpcTimeoutMs);
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      polls_.insert(&ctx);
    }
    absl::Status status = FromGrpcStatus(stub_->LeaseShard(&ctx, request, &response));
    {
      absl::MutexLock lock(&mu_);
      polls_.erase(&ctx);
      if (stopping_) return;
    }
    if (absl::IsNotFound(status)) {
      ForgetRegistration(worker_id);
      continue;
    }
    if (!status.ok()) {
      {
        absl::MutexLock lock(&mu_);
        if (!unreachable_logged_) {
          unreachable_logged_ = true;
          Log(absl::StrCat("LeaseShard: ", status.ToString(), "; retrying"));
        }
      }
      if (!Backoff(backoff_ms)) return;
      backoff_ms = std::min(options_.retry_max_ms, backoff_ms * 2);
      continue;
    }
    backoff_ms = 100;
    {
      absl::MutexLock lock(&mu_);
      unreachable_logged_ = false;
    }
    if (!response.has_shard()) continue;
    if (response.lease().has_prepare()) {
      RunPrepare(worker_id, response.lease());
    } else {
      RunLease(worker_id, response.lease());
    }
  }
}

void CoordinatorLink::RunPrepare(const std::string& worker_id, const v1::ShardLease& lease) {
  const Clock::time_point start = Clock::now();
  absl::StatusOr<v1::PreparedDataset> prepared = backend_->PrepareJob(lease.prepare());
  if (!prepared.ok()) {
    SendFailure(worker_id, lease, prepared.status(), /*hand_back=*/false);
    return;
  }
  const int n_prompts = prepared->prompts_size();
  bool accepted = false;
  absl::Status sent = SendResult(worker_id, lease, RunResult(), &accepted, &*prepared);
  if (!sent.ok()) {
    Log(absl::StrCat("job ", lease.job_id(), ": prepared dataset not delivered (", sent.ToString(),
                     "); the coordinator will lease it again"),
        &lease);
    return;
  }
  Log(absl::StrCat("job ", lease.job_id(), " prepared (", n_prompts, " prompts built) in ",
                   MsSince(start), " ms", accepted ? "" : " (dropped: job over)"),
      &lease);
}

void CoordinatorLink::RunLease(const std::string& worker_id, const v1::ShardLease& lease) {
  auto running = std::make_shared<Running>();
  running->job_id = lease.job_id();
  running->shard_id = lease.shard_id();
  {
    absl::MutexLock lock(&mu_);
    running_[lease.lease_id()] = running;
    ++stats_.shards_running;
  }
  v1::RunShardRequest request;
  *request.mutable_shard() = lease.shard();
  request.set_weights_sha256(backend_->Info().weights_sha256());
  bool stop_requested = false;
  const CancelCheck cancelled = [this, &running, &stop_requested] {
    if (running->cancelled.load()) return true;
    absl::MutexLock lock(&mu_);
    stop_requested = stopping_;
    return stopping_;
  };
  const Clock::time_point start = Clock::now();
  absl::StatusOr<RunResult> result = backend_->RunShard(request, cancelled);
  const int64_t run_ms = MsSince(start);
  {
    absl::MutexLock lock(&mu_);
    running_.erase(lease.lease_id());
    --stats_.shards_running;
    stats_.busy_seconds += static_cast<double>(run_ms) / 1000;
  }
  if (running->cancelled.load()) {
    Count(&CoordinatorLinkStats::shards_abandoned);
    Log(absl::StrCat("shard ", ShardName(lease),
                     " abandoned: the coordinator cancelled its lease (after ", run_ms, " ms)"),
        &lease);
    return;
  }
  if (!result.ok()) {
    const bool hand_back = stop_requested && absl::IsCancelled(result.status());
    SendFailure(worker_id, lease, result.status(), hand_back);
    return;
  }
  const Clock::time_point send_start = Clock::now();
  bool accepted = false;
  absl::Status sent = SendResult(worker_id, lease, std::move(*result), &accepted);
  const int64_t send_ms = MsSince(send_start);
  if (!sent.ok()) {
    Log(absl::StrCat("shard ", ShardName(lease), ": result not delivered (", sent.ToString(),
                     "); the coordinator will re-queue it"),
        &lease);
    return;
  }
  if (accepted) Count(&CoordinatorLinkStats::shards_completed);
  Log(absl::StrCat("shard ", ShardName(lease), " done in ", run_ms, " ms, result sent in ", send_ms,
                   " ms", accepted ? "" : " (dropped: done elsewhere or job over)"),
      &lease);
}

absl::Status CoordinatorLink::SendResult(const std::string& worker_id, const v1::ShardLease& lease,
                                         RunResult result, bool* accepted,
                                         v1::PreparedDataset* prepared) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, 10 * kRpcTimeoutMs);
  v1::CompleteShardResponse response;
  std::unique_ptr<grpc::ClientWriter<v1::CompleteShardRequest>> writer =
      stub_->CompleteShard(&ctx, &response);
  v1::CompleteShardRequest header;
  header.mutable_header()->set_worker_id(worker_id);
  header.mutable_header()->set_lease_id(lease.lease_id());
  if (prepared != nullptr) *header.mutable_header()->mutable_prepared() = std::move(*prepared);
  bool ok = writer->Write(header);
  ChunkCursor cursor(std::move(result.tensors), options_.chunk_bytes);
  v1::CompleteShardRequest message;
  while (ok && cursor.Next(message.mutable_chunk())) {
    {
      absl::MutexLock lock(&mu_);
      stats_.bytes_sent += message.chunk().data().size();
    }
    ok = writer->Write(message);
    message.Clear();
  }
  if (ok) writer->WritesDone();
  absl::Status status = FromGrpcStatus(writer->Finish());
  if (!status.ok()) return status;
  *accepted = response.accepted();
  return absl::OkStatus();
}

void CoordinatorLink::SendFailure(const std::string& worker_id, const v1::ShardLease& lease,
                                  const absl::Status& error, bool handed_back) {
  v1::FailShardRequest request;
  request.set_worker_id(worker_id);
  request.set_lease_id(lease.lease_id());
  request.set_code(static_cast<int32_t>(error.code()));
  request.set_message(std::string(error.message()));
  request.set_handed_back(handed_back);
  v1::FailShardResponse response;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, kRpcTimeoutMs);
  absl::Status sent = FromGrpcStatus(stub_->FailShard(&ctx, request, &response));
  Count(handed_back ? &CoordinatorLinkStats::shards_handed_back
                    : &CoordinatorLinkStats::shards_failed);
  Log(absl::StrCat("shard ", ShardName(lease),
                   handed_back ? " handed back (shutting down)"
                               : absl::StrCat(" failed: ", error.ToString()),
                   sent.ok() ? "" : absl::StrCat(" (not delivered: ", sent.ToString(), ")")),
      &lease);
}

void CoordinatorLink::HeartbeatLoop() {
  while (true) {
    std::string worker_id;
    v1::HeartbeatRequest request;
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(heartbeat_ms_));
      if (stopping_) return;
      worker_id = worker_id_;
      for (const auto& [lease_id, running] : running_) request.add_lease_ids(lease_id);
    }
    if (worker_id.empty()) continue;
    request.set_worker_id(worker_id);
    v1::HeartbeatResponse response;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, kRpcTimeoutMs);
    absl::Status status = FromGrpcStatus(stub_->Heartbeat(&ctx, request, &response));
    if (absl::IsNotFound(status)) {
      ForgetRegistration(worker_id);
      continue;
    }
    if (!status.ok()) continue;  // the runners log an unreachable coordinator
    absl::MutexLock lock(&mu_);
    for (const std::string& lease_id : response.cancelled_lease_ids()) {
      auto it = running_.find(lease_id);
      if (it != running_.end()) it->second->cancelled.store(true);
    }
  }
}

}  // namespace lensgrid
