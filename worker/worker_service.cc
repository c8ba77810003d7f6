#include "worker/worker_service.h"

#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/grpc_status.h"
#include "common/tensor_chunks.h"

namespace lensgrid {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kTrimAfterBytes = 16 << 20;

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

absl::Status NotReady() {
  return absl::UnavailableError("the worker is still loading its weights; retry shortly");
}

void Log(bool enabled, absl::string_view method, int64_t tokens, uint64_t bytes, double ms,
         const absl::Status& status) {
  if (!enabled) return;
  std::string line = RequestLogLine(method, tokens, bytes, ms, status) + "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);
}

bool DeadlinePassed(const grpc::CallbackServerContext* ctx) {
  return std::chrono::system_clock::now() > ctx->deadline();
}

// One streamed reply: the work runs on the executor, then the header and the
// chunks are written one at a time from gRPC's threads.
class RunStreamReactor : public grpc::ServerWriteReactor<v1::RunResponse> {
 public:
  using Work = std::function<absl::StatusOr<RunResult>(const CancelCheck&)>;

  RunStreamReactor(const char* method, grpc::CallbackServerContext* ctx, size_t request_bytes,
                   size_t chunk_bytes, bool log, int64_t tokens, std::atomic<uint64_t>* bytes_sent)
      : method_(method),
        ctx_(ctx),
        request_bytes_(request_bytes),
        bytes_sent_(bytes_sent),
        chunk_bytes_(chunk_bytes),
        log_(log),
        start_(Clock::now()),
        tokens_(tokens) {}

  void Start(Executor* executor, Work work) {
    absl::Status submitted = executor->Submit([this, executor, work = std::move(work)] {
      CancelCheck cancelled = [this, executor] {
        executor->MarkProgress();  // runs poll this between blocks
        return cancelled_.load() || ctx_->IsCancelled() || DeadlinePassed(ctx_);
      };
      absl::StatusOr<RunResult> result;
      if (cancelled()) {
        result = absl::CancelledError("cancelled before it started");
      } else {
        result = work(cancelled);
      }
      Deliver(std::move(result));
    });
    if (!submitted.ok()) End(submitted);
  }

  // Ends the call before any work (the authorization check said no).
  void Refuse(const absl::Status& why) { End(why); }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      End(absl::CancelledError("the client went away during the reply"));
      return;
    }
    WriteNext();
  }
  void OnCancel() override { cancelled_ = true; }
  void OnDone() override { delete this; }

 private:
  void Deliver(absl::StatusOr<RunResult> result) {
    if (!result.ok()) {
      absl::Status s = result.status();
      if (s.code() == absl::StatusCode::kCancelled && DeadlinePassed(ctx_)) {
        s = absl::DeadlineExceededError("the deadline passed during the run");
      }
      End(s);
      return;
    }
    if (result->tokens > 0) tokens_ = result->tokens;
    hold_ = std::move(result->hold);
    cursor_.emplace(std::move(result->tensors), chunk_bytes_);
    *response_.mutable_header() = std::move(result->header);
    StartWrite(&response_);
  }

  void WriteNext() {
    if (!cursor_->Next(response_.mutable_chunk())) {
      End(absl::OkStatus());
      return;
    }
    bytes_ += response_.chunk().data().size();
    bytes_sent_->fetch_add(response_.chunk().data().size());
    StartWrite(&response_);
  }

  void End(const absl::Status& status) {
    if (cursor_.has_value()) cursor_->Clear();  // free the results before the call ends
    hold_.reset();                              // and give their bytes back to the reply budget
    // Hand large requests' and replies' pages back to the OS: the worker's
    // memory returns to its baseline between requests.
    if (bytes_ >= kTrimAfterBytes || request_bytes_ >= kTrimAfterBytes) {
      malloc_trim(0);
    }
    Log(log_, method_, tokens_, bytes_, MsSince(start_), status);
    Finish(ToGrpcStatus(status));
  }

  const char* method_;
  grpc::CallbackServerContext* ctx_;
  size_t request_bytes_;
  std::atomic<uint64_t>* bytes_sent_;
  size_t chunk_bytes_;
  bool log_;
  Clock::time_point start_;
  std::atomic<bool> cancelled_{false};
  std::optional<ChunkCursor> cursor_;
  std::shared_ptr<const void> hold_;  // the reply's ReplyBudget share
  v1::RunResponse response_;
  int64_t tokens_ = 0;
  uint64_t bytes_ = 0;
};

// A streamed Generate: the backend runs on the executor and queues one message
// per step (GenerateSink); gRPC's threads write them one at a time, and the
// call ends once the work has returned and the queue is written.
class GenerateReactor : public grpc::ServerWriteReactor<v1::GenerateResponse>, public GenerateSink {
 public:
  using Work = std::function<absl::Status(const CancelCheck&, GenerateSink*)>;

  GenerateReactor(grpc::CallbackServerContext* ctx, bool log, std::atomic<uint64_t>* bytes_sent)
      : ctx_(ctx), bytes_sent_(bytes_sent), log_(log), start_(Clock::now()) {}

  void Start(Executor* executor, Work work) {
    absl::Status submitted = executor->Submit([this, executor, work = std::move(work)] {
      CancelCheck cancelled = [this, executor] {
        executor->MarkProgress();  // generation polls this every step and between blocks
        return cancelled_.load() || ctx_->IsCancelled() || DeadlinePassed(ctx_);
      };
      absl::Status status =
          cancelled() ? absl::CancelledError("cancelled before it started") : work(cancelled, this);
      if (status.code() == absl::StatusCode::kCancelled && DeadlinePassed(ctx_)) {
        status = absl::DeadlineExceededError("the deadline passed during generation");
      }
      WorkDone(status);
    });
    if (!submitted.ok()) Refuse(submitted);
  }

  // Ends the call before any work (the authorization check said no).
  void Refuse(const absl::Status& why) {
    {
      absl::MutexLock lock(&mu_);
      work_done_ = true;
      status_ = why;
      ended_ = true;
    }
    End();
  }

  void Hold(std::shared_ptr<const void> hold) override {
    absl::MutexLock lock(&mu_);
    hold_ = std::move(hold);
  }

  void Send(v1::GenerateResponse message) override {
    {
      absl::MutexLock lock(&mu_);
      if (write_failed_) return;
      if (message.has_prompt_tokens()) {
        int64_t n = 1;
        for (int64_t d : message.prompt_tokens().shape()) n *= d;
        tokens_ += n;
      }
      tokens_ += message.tokens_size();
      if (writing_) {
        queue_.push_back(std::move(message));
        return;
      }
      writing_ = true;
      current_ = std::move(message);
    }
    Write();
  }

  void OnWriteDone(bool ok) override {
    bool end = false;
    {
      absl::MutexLock lock(&mu_);
      if (!ok) {
        write_failed_ = true;
        cancelled_ = true;  // the work stops at its next step
        queue_.clear();
      }
      if (queue_.empty()) {
        writing_ = false;
        end = EndingLocked();
        if (!end) return;
      } else {
        current_ = std::move(queue_.front());
        queue_.pop_front();
      }
    }
    if (end) {
      End();
    } else {
      Write();
    }
  }
  void OnCancel() override { cancelled_ = true; }
  void OnDone() override { delete this; }

 private:
  // Writes current_ (only one write is ever in flight: writing_).
  void Write() {
    const uint64_t n = current_.ByteSizeLong();
    bytes_ += n;
    bytes_sent_->fetch_add(n);
    StartWrite(&current_);
  }

  void WorkDone(const absl::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      work_done_ = true;
      status_ = write_failed_ && status.ok()
                    ? absl::CancelledError("the client went away during the reply")
                    : status;
      if (!EndingLocked()) return;
    }
    End();
  }

  // True (once) when the call may end: the work has returned and no write is
  // in flight. The caller then calls End() outside the lock.
  bool EndingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (ended_ || !work_done_ || writing_) return false;
    ended_ = true;
    return true;
  }

  // Nothing else touches the reactor's state once ended_ is set; Finish may
  // delete it (OnDone).
  void End() {
    hold_.reset();  // give the reply's bytes back to the budget
    Log(log_, "Generate", tokens_, bytes_, MsSince(start_), status_);
    Finish(ToGrpcStatus(status_));
  }

  grpc::CallbackServerContext* ctx_;
  std::atomic<uint64_t>* bytes_sent_;
  bool log_;
  Clock::time_point start_;
  std::atomic<bool> cancelled_{false};
  absl::Mutex mu_;
  std::deque<v1::GenerateResponse> queue_ ABSL_GUARDED_BY(mu_);
  v1::GenerateResponse current_;  // the message being written
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool write_failed_ ABSL_GUARDED_BY(mu_) = false;
  bool work_done_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  // Under mu_ until ended_ is set; End() alone reads them after.
  absl::Status status_;
  std::shared_ptr<const void> hold_;
  int64_t tokens_ = 0;
  uint64_t bytes_ = 0;  // written by whoever holds the write (writing_)
};

// batch * pos of ids sent as a tensor (texts: known only after tokenizing).
int64_t InputTokens(const v1::ModelInput& input) {
  if (!input.has_tokens()) return 0;
  int64_t n = 1;
  for (int64_t d : input.tokens().shape()) n *= std::max<int64_t>(d, 0);
  return n;
}

}  // namespace

std::string RequestLogLine(absl::string_view method, int64_t tokens, uint64_t bytes, double ms,
                           const absl::Status& status) {
  std::string line = absl::StrFormat("%s tokens=%d bytes=%d ms=%.1f status=%s", method, tokens,
                                     bytes, ms, absl::StatusCodeToString(status.code()));
  if (!status.ok()) {
    absl::string_view msg = status.message();
    absl::StrAppend(&line, ": ", msg.substr(0, 200));
  }
  return line;
}

WorkerService::WorkerService(Executor* executor, Options options)
    : executor_(executor), options_(options) {}

void WorkerService::SetBackend(std::shared_ptr<const WorkerBackend> backend) {
  absl::MutexLock lock(&mu_);
  backend_ = std::move(backend);
}

std::shared_ptr<const WorkerBackend> WorkerService::backend() const {
  absl::MutexLock lock(&mu_);
  return backend_;
}

absl::Status WorkerService::Authorize(const grpc::CallbackServerContext* ctx,
                                      const char* method) const {
  if (options_.auth == nullptr) return absl::OkStatus();
  return options_.auth->Authorize(*ctx, method).status();
}

template <typename Response, typename Fn>
grpc::ServerUnaryReactor* WorkerService::Unary(const char* method, grpc::CallbackServerContext* ctx,
                                               size_t request_bytes, Response* response, Fn fn) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  const Clock::time_point start = Clock::now();
  if (absl::Status allowed = Authorize(ctx, method); !allowed.ok()) {
    Log(options_.log_requests, method, 0, 0, MsSince(start), allowed);
    reactor->Finish(ToGrpcStatus(allowed));
    return reactor;
  }
  std::shared_ptr<const WorkerBackend> backend = this->backend();
  if (backend == nullptr) {
    Log(options_.log_requests, method, 0, 0, MsSince(start), NotReady());
    reactor->Finish(ToGrpcStatus(NotReady()));
    return reactor;
  }
  const bool log = options_.log_requests;
  Executor* executor = executor_;
  absl::Status submitted = executor_->Submit([=] {
    absl::Status status;
    CancelCheck cancelled = [ctx, executor] {
      executor->MarkProgress();
      return ctx->IsCancelled() || DeadlinePassed(ctx);
    };
    if (cancelled()) {
      status = absl::CancelledError("cancelled before it started");
    } else {
      auto result = fn(*backend, cancelled);
      status = result.status();
      if (result.ok()) *response = std::move(*result);
      if (status.code() == absl::StatusCode::kCancelled && DeadlinePassed(ctx)) {
        status = absl::DeadlineExceededError("the deadline passed");
      }
    }
    // A large request leaves its working memory in the allocator's free
    // lists: hand it back to the OS (the reply itself is at most a few MiB).
    if (request_bytes >= kTrimAfterBytes) malloc_trim(0);
    Log(log, method, 0, response->ByteSizeLong(), MsSince(start), status);
    reactor->Finish(ToGrpcStatus(status));
  });
  if (!submitted.ok()) {
    Log(log, method, 0, 0, MsSince(start), submitted);
    reactor->Finish(ToGrpcStatus(submitted));
  }
  return reactor;
}

template <typename Fn>
grpc::ServerWriteReactor<v1::RunResponse>* WorkerService::Stream(const char* method,
                                                                 grpc::CallbackServerContext* ctx,
                                                                 size_t request_bytes,
                                                                 int64_t tokens, Fn fn) {
  auto* reactor = new RunStreamReactor(method, ctx, request_bytes, options_.chunk_bytes,
                                       options_.log_requests, tokens, &bytes_sent_);
  if (absl::Status allowed = Authorize(ctx, method); !allowed.ok()) {
    reactor->Refuse(allowed);
    return reactor;
  }
  std::shared_ptr<const WorkerBackend> backend = this->backend();
  if (backend == nullptr) {
    reactor->Start(executor_,
                   [](const CancelCheck&) -> absl::StatusOr<RunResult> { return NotReady(); });
    return reactor;
  }
  reactor->Start(executor_,
                 [backend, fn](const CancelCheck& cancelled) { return fn(*backend, cancelled); });
  return reactor;
}

grpc::ServerUnaryReactor* WorkerService::GetModelInfo(grpc::CallbackServerContext* ctx,
                                                      const v1::GetModelInfoRequest* request,
                                                      v1::ModelInfo* response) {
  // Answered on the callback thread: a copy of a message made at load time.
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  if (absl::Status allowed = Authorize(ctx, "GetModelInfo"); !allowed.ok()) {
    reactor->Finish(ToGrpcStatus(allowed));
    return reactor;
  }
  std::shared_ptr<const WorkerBackend> backend = this->backend();
  if (backend == nullptr) {
    reactor->Finish(ToGrpcStatus(NotReady()));
    return reactor;
  }
  *response = backend->Info();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* WorkerService::Tokenize(grpc::CallbackServerContext* ctx,
                                                  const v1::TokenizeRequest* request,
                                                  v1::TokenizeResponse* response) {
  return Unary(
      "Tokenize", ctx, request->ByteSizeLong(), response,
      [request](const WorkerBackend& b, const CancelCheck& c) { return b.Tokenize(*request, c); });
}

grpc::ServerUnaryReactor* WorkerService::Detokenize(grpc::CallbackServerContext* ctx,
                                                    const v1::DetokenizeRequest* request,
                                                    v1::DetokenizeResponse* response) {
  return Unary(
      "Detokenize", ctx, request->ByteSizeLong(), response,
      [request](const WorkerBackend& b, const CancelCheck&) { return b.Detokenize(*request); });
}

grpc::ServerWriteReactor<v1::RunResponse>* WorkerService::RunWithCache(
    grpc::CallbackServerContext* ctx, const v1::RunWithCacheRequest* request) {
  return Stream("RunWithCache", ctx, request->ByteSizeLong(), InputTokens(request->input()),
                [request](const WorkerBackend& b, const CancelCheck& c) {
                  return b.RunWithCache(*request, c);
                });
}

grpc::ServerWriteReactor<v1::RunResponse>* WorkerService::RunWithInterventions(
    grpc::CallbackServerContext* ctx, const v1::RunWithInterventionsRequest* request) {
  return Stream("RunWithInterventions", ctx, request->ByteSizeLong(), InputTokens(request->input()),
                [request](const WorkerBackend& b, const CancelCheck& c) {
                  return b.RunWithInterventions(*request, c);
                });
}

grpc::ServerWriteReactor<v1::RunResponse>* WorkerService::RunShard(
    grpc::CallbackServerContext* ctx, const v1::RunShardRequest* request) {
  return Stream(
      "RunShard", ctx, request->ByteSizeLong(), 0,
      [request](const WorkerBackend& b, const CancelCheck& c) { return b.RunShard(*request, c); });
}

grpc::ServerWriteReactor<v1::RunResponse>* WorkerService::GetWeights(
    grpc::CallbackServerContext* ctx, const v1::GetWeightsRequest* request) {
  return Stream("GetWeights", ctx, request->ByteSizeLong(), 0,
                [request](const WorkerBackend& b, const CancelCheck& c) {
                  return b.GetWeights(*request, c);
                });
}

grpc::ServerWriteReactor<v1::GenerateResponse>* WorkerService::Generate(
    grpc::CallbackServerContext* ctx, const v1::GenerateRequest* request) {
  auto* reactor = new GenerateReactor(ctx, options_.log_requests, &bytes_sent_);
  if (absl::Status allowed = Authorize(ctx, "Generate"); !allowed.ok()) {
    reactor->Refuse(allowed);
    return reactor;
  }
  std::shared_ptr<const WorkerBackend> backend = this->backend();
  if (backend == nullptr) {
    reactor->Refuse(NotReady());
    return reactor;
  }
  reactor->Start(executor_, [backend, request](const CancelCheck& cancelled, GenerateSink* sink) {
    return backend->Generate(*request, cancelled, sink);
  });
  return reactor;
}

}  // namespace lensgrid
