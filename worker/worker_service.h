// The Worker gRPC service: a thin adapter (unpack, hand to the executor, call
// the backend, pack, finish) over a WorkerBackend. gRPC callback threads never
// run model work; streamed replies are written chunk by chunk, one write in
// flight, from the results the executor produced.
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
#include "worker/worker_backend.h"

namespace lensgrid {

class WorkerService final : public v1::Worker::CallbackService {
 public:
  struct Options {
    size_t chunk_bytes = 1 << 20;
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
  grpc::ServerWriteReactor<v1::RunResponse>* RunWithCache(
      grpc::CallbackServerContext* ctx, const v1::RunWithCacheRequest* request) override;
  grpc::ServerWriteReactor<v1::RunResponse>* RunWithInterventions(
      grpc::CallbackServerContext* ctx, const v1::RunWithInterventionsRequest* request) override;
  grpc::ServerWriteReactor<v1::RunResponse>* RunShard(grpc::CallbackServerContext* ctx,
                                                      const v1::RunShardRequest* request) override;
  grpc::ServerWriteReactor<v1::RunResponse>* GetWeights(
      grpc::CallbackServerContext* ctx, const v1::GetWeightsRequest* request) override;
  // One message per generated token, written as the steps finish.
  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* ctx, const v1::GenerateRequest* request) override;

 private:
  std::shared_ptr<const WorkerBackend> backend() const;
  absl::Status Authorize(const grpc::CallbackServerContext* ctx, const char* method) const;
  template <typename Response, typename Fn>
  grpc::ServerUnaryReactor* Unary(const char* method, grpc::CallbackServerContext* ctx,
                                  size_t request_bytes, Response* response, Fn fn);
  template <typename Fn>
  grpc::ServerWriteReactor<v1::RunResponse>* Stream(const char* method,
                                                    grpc::CallbackServerContext* ctx,
                                                    size_t request_bytes, int64_t tokens, Fn fn);

  Executor* executor_;
  Options options_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const WorkerBackend> backend_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> bytes_sent_{0};
};

// "method tokens=N bytes=B ms=T status=CODE[: message]" (the request log line).
std::string RequestLogLine(absl::string_view method, int64_t tokens, uint64_t bytes, double ms,
                           const absl::Status& status);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_WORKER_SERVICE_H_
