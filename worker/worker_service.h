// The Worker gRPC service: a thin adapter (unpack, hand to the executor, call
// the backend, pack, finish) over a WorkerBackend. gRPC callback threads never
// run model work; streamed replies are written chunk by chunk, one write in
// flight, from the results the executor produced. The streamed methods are
// raw (byte buffers): a chunk's bytes go to gRPC as a slice over the tensor's
// memory, never copied into a protobuf string (worker/wire_buffers.h). A run
// whose options name an attached shared-memory region gets its tensors written
// there instead (worker/shared_memory.h), and the reply is the header alone.
//
//   Executor executor({.threads = 1, .max_pending = 64});
//   WorkerService service(&executor, {});
//   builder.RegisterService(&service);
//   ... server starts ...
//   service.SetBackend(std::move(core));  // until then: UNAVAILABLE
//
// A cancelled or expired call stops its run between layers (CANCELLED /
// DEADLINE_EXCEEDED). Every call first passes Options::auth's check
// (common/auth.h: UNAUTHENTICATED without a known token, PERMISSION_DENIED for
// a role that may not run models). Every call logs one line: method, tokens, bytes, ms,
// status.
#ifndef LENSGRID_WORKER_WORKER_SERVICE_H_
#define LENSGRID_WORKER_WORKER_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/auth.h"
#include "lensgrid/v1/worker.grpc.pb.h"
#include "worker/executor.h"
#include "worker/shared_memory.h"
#include "worker/worker_backend.h"

namespace lensgrid {

// The generated callback service with the streamed-run methods taken raw.
using WorkerServiceBase = v1::Worker::WithRawCallbackMethod_RunWithCache<
    v1::Worker::WithRawCallbackMethod_RunWithInterventions<
        v1::Worker::WithRawCallbackMethod_RunShard<
            v1::Worker::WithRawCallbackMethod_GetWeights<v1::Worker::CallbackService>>>>;

class WorkerService final : public WorkerServiceBase {
 public:
  struct Options {
    size_t chunk_bytes = 1 << 20;
    SharedMemoryLimits shared_memory = {};
    bool log_requests = true;  // one line per request on stderr
    // Who may call (outlives the service). Default: nullptr, every caller is
    // Caller::Anonymous() (as an Authorizer without --auth-tokens).
    const Authorizer* auth = nullptr;
  };
  WorkerService(Executor* executor, Options options);

  void SetBackend(std::shared_ptr<const WorkerBackend> backend);
  // Tensor bytes streamed out so far (for /metrics).
  uint64_t bytes_sent() const { return bytes_sent_.load(); }

  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* ctx,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* ctx,
                                       const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override;
  // Raw: the request is parsed here, and the reply is RunResponse messages.
  grpc::ServerWriteReactor<grpc::ByteBuffer>* RunWithCache(
      grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* RunWithInterventions(
      grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* RunShard(grpc::CallbackServerContext* ctx,
                                                       const grpc::ByteBuffer* request) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* GetWeights(grpc::CallbackServerContext* ctx,
                                                         const grpc::ByteBuffer* request) override;
  // One message per generated token, written as the steps finish.
  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* ctx, const v1::GenerateRequest* request) override;
  // Holds a shared-memory region attached while the call stays open.
  grpc::ServerWriteReactor<v1::SharedMemoryRegion>* AttachSharedMemory(
      grpc::CallbackServerContext* ctx, const v1::AttachSharedMemoryRequest* request) override;
  // Regions attached now (for /metrics and tests).
  int shared_memory_regions() const { return regions_.size(); }

 private:
  std::shared_ptr<const WorkerBackend> backend() const;
  absl::StatusOr<Caller> Authorize(const grpc::CallbackServerContext* ctx,
                                   const char* method) const;
  template <typename Response, typename Fn>
  grpc::ServerUnaryReactor* Unary(const char* method, grpc::CallbackServerContext* ctx,
                                  size_t request_bytes, Response* response, Fn fn);
  // Parses a raw `Request`, then runs fn(backend, request, cancelled) on the
  // executor and streams its RunResult (or writes it into shared memory).
  template <typename Request, typename Fn>
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Stream(const char* method,
                                                     grpc::CallbackServerContext* ctx,
                                                     const grpc::ByteBuffer* raw, Fn fn);

  Executor* executor_;
  Options options_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const WorkerBackend> backend_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> bytes_sent_{0};
  SharedMemoryRegions regions_;
};

// Whether a gRPC peer ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000", "unix:...")
// is on this host: only such a client may attach shared memory.
bool IsLocalPeer(absl::string_view peer);

// "method tokens=N bytes=B ms=T status=CODE[: message]" (the request log line).
std::string RequestLogLine(absl::string_view method, int64_t tokens, uint64_t bytes, double ms,
                           const absl::Status& status);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_WORKER_SERVICE_H_
