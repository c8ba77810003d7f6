// What the worker's gRPC service serves: a model behind request/response
// protos, with no gRPC or LibTorch in sight. WorkerCore is the real one (a
// hooked GPT-2); tests use fakes.
//
//   RunResult result = backend.RunWithCache(request, cancel).value();
//   ChunkCursor cursor(std::move(result.tensors), chunk_bytes);
#ifndef LENSGRID_WORKER_WORKER_BACKEND_H_
#define LENSGRID_WORKER_WORKER_BACKEND_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tensor_chunks.h"
#include "lensgrid/v1/coordinator.pb.h"
#include "lensgrid/v1/worker.pb.h"

namespace lensgrid {

// True once the caller has gone away or its deadline has passed; polled
// between layers.
using CancelCheck = std::function<bool()>;

// A streamed reply: the header, then `tensors` (the ones header.tensors lists).
struct RunResult {
  v1::RunHeader header;
  std::vector<TensorBytes> tensors;
  int64_t tokens = 0;  // batch * pos run, for the request log
  // The reply's share of the worker's ReplyBudget: keep it until the last
  // chunk is written (or the call ends), then drop it with the tensors.
  std::shared_ptr<const void> hold;
};

// Where Generate sends its messages, in order; any thread may call it.
class GenerateSink {
 public:
  virtual ~GenerateSink() = default;
  // Keeps the reply's ReplyBudget share until the call ends.
  virtual void Hold(std::shared_ptr<const void> hold) = 0;
  // Queues one message for the client; never blocks.
  virtual void Send(v1::GenerateResponse message) = 0;
};

class WorkerBackend {
 public:
  virtual ~WorkerBackend() = default;

  virtual const v1::ModelInfo& Info() const = 0;
  virtual absl::StatusOr<v1::TokenizeResponse> Tokenize(const v1::TokenizeRequest& request,
                                                        const CancelCheck& cancelled) const = 0;
  virtual absl::StatusOr<v1::DetokenizeResponse> Detokenize(
      const v1::DetokenizeRequest& request) const = 0;
  virtual absl::StatusOr<RunResult> RunWithCache(const v1::RunWithCacheRequest& request,
                                                 const CancelCheck& cancelled) const = 0;
  virtual absl::StatusOr<RunResult> RunWithInterventions(
      const v1::RunWithInterventionsRequest& request, const CancelCheck& cancelled) const = 0;
  virtual absl::StatusOr<RunResult> RunShard(const v1::RunShardRequest& request,
                                             const CancelCheck& cancelled) const = 0;
  // A coordinator's ShardLease.prepare: builds the job's dataset (when the
  // request has one) with this model's tokenizer and reports the model.
  // INVALID_ARGUMENT for a bad dataset (naming the line of a JSONL),
  // RESOURCE_EXHAUSTED over the worker's --max-dataset-prompts.
  virtual absl::StatusOr<v1::PreparedDataset> PrepareJob(const v1::PrepareJob& request) const {
    (void)request;
    return absl::UnimplementedError("this worker cannot prepare jobs");
  }
  // Weights by TransformerLens name, as a run's reply (a header listing them,
  // then their bytes). NOT_FOUND for an unknown name.
  virtual absl::StatusOr<RunResult> GetWeights(const v1::GetWeightsRequest& request,
                                               const CancelCheck& cancelled) const {
    (void)request;
    (void)cancelled;
    return absl::UnimplementedError("this worker does not serve weights");
  }
  // Generates tokens, sending one message per step to `sink` as it goes; the
  // status ends the call (after the messages already sent).
  virtual absl::Status Generate(const v1::GenerateRequest& request, const CancelCheck& cancelled,
                                GenerateSink* sink) const {
    (void)request;
    (void)cancelled;
    (void)sink;
    return absl::UnimplementedError("this worker does not generate");
  }
};

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_WORKER_BACKEND_H_
