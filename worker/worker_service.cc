#include "worker/worker_service.h"

#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/grpc_status.h"
#include "common/tensor_chunks.h"
#include "worker/wire_buffers.h"

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
// chunks are written one at a time from gRPC's threads; the last message goes
// with the status (StartWriteAndFinish). A chunk's bytes are a slice over the
// tensor's memory. With a shared-memory target the executor writes the
// tensors there after the run, and the header is the whole reply; so it is
// when the client asked for inline tensors and they fit in one chunk.
class RunStreamReactor : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  using Work = std::function<absl::StatusOr<RunResult>(const CancelCheck&)>;

  RunStreamReactor(const char* method, grpc::CallbackServerContext* ctx, size_t request_bytes,
                   size_t chunk_bytes, bool log, std::atomic<uint64_t>* bytes_sent)
      : method_(method),
        ctx_(ctx),
        request_bytes_(request_bytes),
        bytes_sent_(bytes_sent),
        chunk_bytes_(chunk_bytes),
        log_(log),
        start_(Clock::now()) {}

  void set_tokens(int64_t tokens) { tokens_ = tokens; }
  // The client reads RunHeader.inline_chunks: a reply of at most one chunk
  // goes as one message.
  void set_inline_tensors(bool inline_tensors) { inline_tensors_ = inline_tensors; }

  // `region`: where the tensors go instead of the stream (nullptr: streamed).
  void Start(Executor* executor, Work work,
             std::shared_ptr<SharedMemoryRegions::Writer> region = nullptr) {
    absl::Status submitted = executor->Submit(
        [this, executor, work = std::move(work), region = std::move(region)]() mutable {
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
          if (result.ok() && region != nullptr) {
            absl::Status written = WriteTensorsToRegion(*region, &result->tensors, &result->header);
            if (!written.ok()) result = written;
          }
          region.reset();  // the range is free before the client has the reply
          Deliver(std::move(result));
        });
    if (!submitted.ok()) End(submitted);
  }

  // Ends the call before any work (the authorization check said no, a bad request).
  void Refuse(const absl::Status& why) { End(why); }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      End(absl::CancelledError("the client went away during the reply"));
      return;
    }
    WriteNext();
  }
  void OnCancel() override { cancelled_ = true; }
  void OnDone() override {
    Close();
    delete this;
  }

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
    v1::RunResponse header;
    *header.mutable_header() = std::move(result->header);
    // One message instead of a header and its chunks: each message costs a
    // write completion (OnWriteDone) before the next can start.
    if (inline_tensors_ && !header.header().in_shared_memory() &&
        cursor_->total_bytes() <= chunk_bytes_) {
      const uint64_t moved = cursor_->MoveInto(header.mutable_header()->mutable_inline_chunks());
      bytes_ += moved;
      bytes_sent_->fetch_add(moved);
    }
    Write(SerializedMessage(header));
  }

  void WriteNext() {
    v1::TensorChunk meta;
    absl::Span<const uint8_t> data;
    std::shared_ptr<const void> owner;
    if (!cursor_->NextPiece(&meta, &data, &owner)) {  // only after an empty header
      End(absl::OkStatus());
      return;
    }
    bytes_ += data.size();
    bytes_sent_->fetch_add(data.size());
    Write(ChunkBuffer(meta, data, std::move(owner)));
  }

  // Writes one message; the last one carries the status.
  void Write(grpc::ByteBuffer message) {
    buffer_ = std::move(message);
    if (cursor_->done()) {
      status_ = absl::OkStatus();
      finished_ = true;
      StartWriteAndFinish(&buffer_, grpc::WriteOptions(), grpc::Status::OK);
    } else {
      StartWrite(&buffer_);
    }
  }

  void End(const absl::Status& status) {
    status_ = status;
    finished_ = true;
    Finish(ToGrpcStatus(status));
  }

  // After the call: frees the results, gives their bytes back to the reply
  // budget, returns large pages to the OS, and logs the call.
  void Close() {
    if (cursor_.has_value()) cursor_->Clear();
    hold_.reset();
    // Hand large requests' and replies' pages back to the OS: the worker's
    // memory returns to its baseline between requests.
    if (bytes_ >= kTrimAfterBytes || request_bytes_ >= kTrimAfterBytes) {
      malloc_trim(0);
    }
    if (!finished_) status_ = absl::CancelledError("the call ended before a reply");
    Log(log_, method_, tokens_, bytes_, MsSince(start_), status_);
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
  grpc::ByteBuffer buffer_;           // the message being written
  absl::Status status_;
  bool finished_ = false;
  int64_t tokens_ = 0;
  uint64_t bytes_ = 0;
  bool inline_tensors_ = false;
};

// AttachSharedMemory: the region stays attached while the call is open. One
// message names it; the call ends when the client cancels it or goes away
// (OnCancel), or the server shuts down, and the region is detached then.
class AttachReactor : public grpc::ServerWriteReactor<v1::SharedMemoryRegion> {
 public:
  AttachReactor(SharedMemoryRegions* regions, bool log)
      : regions_(regions), log_(log), start_(Clock::now()) {}

  void Start(const v1::AttachSharedMemoryRequest& request, const std::string& owner) {
    absl::StatusOr<SharedMemoryRegions::Attached> attached =
        regions_->Attach(request.name(), request.byte_size(), owner);
    if (!attached.ok()) {
      Refuse(attached.status());
      return;
    }
    absl::MutexLock lock(&mu_);
    name_ = request.name();
    region_id_ = attached->region_id;
    reply_.set_region_id(attached->region_id);
    reply_.set_byte_size(attached->byte_size);
    Log(log_, "AttachSharedMemory", 0, 0, MsSince(start_), absl::OkStatus());
    LogLine(absl::StrFormat("AttachSharedMemory: attached %s (%d bytes) as region %s", name_,
                            attached->byte_size, region_id_));
    writing_ = true;
    StartWrite(&reply_);
  }

  void Refuse(const absl::Status& why) {
    Log(log_, "AttachSharedMemory", 0, 0, MsSince(start_), why);
    absl::MutexLock lock(&mu_);
    finished_ = true;
    Finish(ToGrpcStatus(why));
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok || cancelled_) FinishLocked();
  }
  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    if (!writing_) FinishLocked();
  }
  void OnDone() override {
    if (!region_id_.empty() && regions_->Detach(region_id_)) {
      LogLine(absl::StrFormat(
          "AttachSharedMemory: detached %s (region %s): the client closed the call or went away "
          "after %.1f s",
          name_, region_id_, MsSince(start_) / 1e3));
    }
    delete this;
  }

 private:
  void FinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    Finish(grpc::Status(grpc::StatusCode::CANCELLED, "shared memory detached"));
  }
  void LogLine(const std::string& text) {
    if (!log_) return;
    std::string line = text + "\n";
    std::fwrite(line.data(), 1, line.size(), stderr);
  }

  SharedMemoryRegions* regions_;
  bool log_;
  Clock::time_point start_;
  absl::Mutex mu_;
  v1::SharedMemoryRegion reply_;
  std::string name_;
  std::string region_id_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
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

int64_t TokensOf(const v1::RunWithCacheRequest& r) { return InputTokens(r.input()); }
int64_t TokensOf(const v1::RunWithInterventionsRequest& r) { return InputTokens(r.input()); }
int64_t TokensOf(const v1::RunShardRequest&) { return 0; }
int64_t TokensOf(const v1::GetWeightsRequest&) { return 0; }

// The shared-memory target a request names, if any.
const v1::SharedMemoryTarget* TargetOf(const v1::RunWithCacheRequest& r) {
  return r.options().has_shared_memory() ? &r.options().shared_memory() : nullptr;
}
const v1::SharedMemoryTarget* TargetOf(const v1::RunWithInterventionsRequest& r) {
  return r.options().has_shared_memory() ? &r.options().shared_memory() : nullptr;
}
const v1::SharedMemoryTarget* TargetOf(const v1::RunShardRequest&) { return nullptr; }
const v1::SharedMemoryTarget* TargetOf(const v1::GetWeightsRequest& r) {
  return r.has_shared_memory() ? &r.shared_memory() : nullptr;
}

// Whether the client reads RunHeader.inline_chunks.
bool InlineTensorsOf(const v1::RunWithCacheRequest& r) { return r.options().inline_tensors(); }
bool InlineTensorsOf(const v1::RunWithInterventionsRequest& r) {
  return r.options().inline_tensors();
}
bool InlineTensorsOf(const v1::RunShardRequest& r) { return r.inline_tensors(); }
bool InlineTensorsOf(const v1::GetWeightsRequest& r) { return r.inline_tensors(); }

}  // namespace

bool IsLocalPeer(absl::string_view peer) {
  for (absl::string_view local :
       {"ipv4:127.", "ipv6:[::1]:", "ipv6:%5B::1%5D:", "ipv6:[::ffff:127.", "ipv6:%5B::ffff:127.",
        "unix:", "unix-abstract:"}) {
    if (absl::StartsWith(peer, local)) return true;
  }
  return false;
}

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
    : executor_(executor), options_(options), regions_(options.shared_memory) {}

void WorkerService::SetBackend(std::shared_ptr<const WorkerBackend> backend) {
  absl::MutexLock lock(&mu_);
  backend_ = std::move(backend);
}

std::shared_ptr<const WorkerBackend> WorkerService::backend() const {
  absl::MutexLock lock(&mu_);
  return backend_;
}

absl::StatusOr<Caller> WorkerService::Authorize(const grpc::CallbackServerContext* ctx,
                                                const char* method) const {
  if (options_.auth == nullptr) return Caller::Anonymous();
  return options_.auth->Authorize(*ctx, method);
}

template <typename Response, typename Fn>
grpc::ServerUnaryReactor* WorkerService::Unary(const char* method, grpc::CallbackServerContext* ctx,
                                               size_t request_bytes, Response* response, Fn fn) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  const Clock::time_point start = Clock::now();
  if (absl::Status allowed = Authorize(ctx, method).status(); !allowed.ok()) {
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

template <typename Request, typename Fn>
grpc::ServerWriteReactor<grpc::ByteBuffer>* WorkerService::Stream(const char* method,
                                                                  grpc::CallbackServerContext* ctx,
                                                                  const grpc::ByteBuffer* raw,
                                                                  Fn fn) {
  auto* reactor = new RunStreamReactor(method, ctx, raw->Length(), options_.chunk_bytes,
                                       options_.log_requests, &bytes_sent_);
  absl::StatusOr<Caller> caller = Authorize(ctx, method);
  if (!caller.ok()) {
    reactor->Refuse(caller.status());
    return reactor;
  }
  auto request = std::make_shared<Request>();
  if (absl::Status parsed = ParseRequest(*raw, request.get(), method); !parsed.ok()) {
    reactor->Refuse(parsed);
    return reactor;
  }
  reactor->set_tokens(TokensOf(*request));
  reactor->set_inline_tensors(InlineTensorsOf(*request));
  std::shared_ptr<const WorkerBackend> backend = this->backend();
  if (backend == nullptr) {
    reactor->Refuse(NotReady());
    return reactor;
  }
  std::shared_ptr<SharedMemoryRegions::Writer> region;
  if (const v1::SharedMemoryTarget* target = TargetOf(*request); target != nullptr) {
    absl::StatusOr<std::unique_ptr<SharedMemoryRegions::Writer>> reserved =
        regions_.Reserve(*target, caller->name);
    if (!reserved.ok()) {
      reactor->Refuse(reserved.status());
      return reactor;
    }
    region = std::move(*reserved);
  }
  reactor->Start(
      executor_,
      [backend, request, fn](const CancelCheck& cancelled) {
        return fn(*backend, *request, cancelled);
      },
      std::move(region));
  return reactor;
}

grpc::ServerUnaryReactor* WorkerService::GetModelInfo(grpc::CallbackServerContext* ctx,
                                                      const v1::GetModelInfoRequest* request,
                                                      v1::ModelInfo* response) {
  // Answered on the callback thread: a copy of a message made at load time.
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  if (absl::Status allowed = Authorize(ctx, "GetModelInfo").status(); !allowed.ok()) {
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

grpc::ServerWriteReactor<grpc::ByteBuffer>* WorkerService::RunWithCache(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request) {
  return Stream<v1::RunWithCacheRequest>(
      "RunWithCache", ctx, request,
      [](const WorkerBackend& b, const v1::RunWithCacheRequest& r, const CancelCheck& c) {
        return b.RunWithCache(r, c);
      });
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* WorkerService::RunWithInterventions(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request) {
  return Stream<v1::RunWithInterventionsRequest>(
      "RunWithInterventions", ctx, request,
      [](const WorkerBackend& b, const v1::RunWithInterventionsRequest& r, const CancelCheck& c) {
        return b.RunWithInterventions(r, c);
      });
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* WorkerService::RunShard(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request) {
  return Stream<v1::RunShardRequest>("RunShard", ctx, request,
                                     [](const WorkerBackend& b, const v1::RunShardRequest& r,
                                        const CancelCheck& c) { return b.RunShard(r, c); });
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* WorkerService::GetWeights(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request) {
  return Stream<v1::GetWeightsRequest>("GetWeights", ctx, request,
                                       [](const WorkerBackend& b, const v1::GetWeightsRequest& r,
                                          const CancelCheck& c) { return b.GetWeights(r, c); });
}

grpc::ServerWriteReactor<v1::GenerateResponse>* WorkerService::Generate(
    grpc::CallbackServerContext* ctx, const v1::GenerateRequest* request) {
  auto* reactor = new GenerateReactor(ctx, options_.log_requests, &bytes_sent_);
  if (absl::Status allowed = Authorize(ctx, "Generate").status(); !allowed.ok()) {
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

grpc::ServerWriteReactor<v1::SharedMemoryRegion>* WorkerService::AttachSharedMemory(
    grpc::CallbackServerContext* ctx, const v1::AttachSharedMemoryRequest* request) {
  auto* reactor = new AttachReactor(&regions_, options_.log_requests);
  absl::StatusOr<Caller> caller = Authorize(ctx, "AttachSharedMemory");
  if (!caller.ok()) {
    reactor->Refuse(caller.status());
    return reactor;
  }
  if (!IsLocalPeer(ctx->peer())) {
    reactor->Refuse(absl::FailedPreconditionError(
        absl::StrCat("shared memory needs a client on the worker's host; this one is ", ctx->peer(),
                     " (stream the reply instead)")));
    return reactor;
  }
  reactor->Start(*request, caller->name);
  return reactor;
}

}  // namespace lensgrid
