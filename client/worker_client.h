// C++ client of a lensgrid worker (lensgrid.v1.Worker): StatusOr calls, with
// streamed replies reassembled into whole tensors.
//
//   LG_ASSIGN_OR_RETURN(auto worker, WorkerClient::Connect("127.0.0.1:7070"));
//   LG_RETURN_IF_ERROR(worker->WaitUntilReady(absl::Seconds(30)));
//   v1::RunWithCacheRequest request;
//   request.mutable_input()->add_texts("Hello world");
//   request.mutable_cache()->add_names("pattern0");
//   LG_ASSIGN_OR_RETURN(RunReply reply, worker->RunWithCache(request));
//   const WireTensor* pattern = reply.Find("blocks.0.attn.hook_pattern");
//
// Errors are the worker's status (code and message) as absl::Status. No
// LibTorch here.
#ifndef LENSGRID_CLIENT_WORKER_CLIENT_H_
#define LENSGRID_CLIENT_WORKER_CLIENT_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/auth.h"
#include "common/tensor_chunks.h"
#include "lensgrid/v1/worker.grpc.pb.h"

namespace lensgrid {

// A streamed reply: the header and every tensor it announced, in order. A
// reply written into shared memory (header.in_shared_memory) has no tensors
// here: AttachedSharedMemory::Views reads them.
struct RunReply {
  v1::RunHeader header;
  std::vector<WireTensor> tensors;
  // nullptr when there is no tensor of that name.
  const WireTensor* Find(absl::string_view name) const;
};

// A Generate call's messages: the prompt as run (I64 [batch, pos]) and one
// message per step, in order.
struct GenerateReply {
  v1::Tensor prompt_tokens;
  std::vector<v1::GenerateResponse> steps;
  // Row `row`'s new tokens, one per step.
  std::vector<int64_t> Tokens(int row) const;
};

class WorkerClient {
 public:
  struct Options {
    absl::Duration timeout = absl::InfiniteDuration();  // per call
    ClientTransport transport;  // TLS and token (common/auth.h); default: plaintext, no token
    // Ask for small replies as one message (inline_tensors, Worker API 2.2;
    // an older worker streams them as before). Off: always chunks.
    bool inline_tensors = true;
  };
  // Creates the channel; does not wait for the worker (see WaitUntilReady).
  static absl::StatusOr<std::unique_ptr<WorkerClient>> Connect(const std::string& address,
                                                               Options options);
  static absl::StatusOr<std::unique_ptr<WorkerClient>> Connect(const std::string& address) {
    return Connect(address, Options());
  }
  WorkerClient(std::shared_ptr<grpc::Channel> channel, Options options);

  // Polls GetModelInfo until the worker has loaded its weights; the last
  // error (e.g. UNAVAILABLE) after `timeout`.
  absl::Status WaitUntilReady(absl::Duration timeout);

  absl::StatusOr<v1::ModelInfo> GetModelInfo();
  absl::StatusOr<v1::TokenizeResponse> Tokenize(const v1::TokenizeRequest& request);
  absl::StatusOr<v1::DetokenizeResponse> Detokenize(const v1::DetokenizeRequest& request);
  absl::StatusOr<RunReply> RunWithCache(const v1::RunWithCacheRequest& request);
  absl::StatusOr<RunReply> RunWithInterventions(const v1::RunWithInterventionsRequest& request);
  absl::StatusOr<RunReply> RunShard(const v1::RunShardRequest& request);
  // Weights by TransformerLens name (none: every weight), as tensors.
  absl::StatusOr<RunReply> GetWeights(const v1::GetWeightsRequest& request);
  // `on_step` (optional) sees each message as it arrives; returning false
  // cancels the call (CANCELLED).
  absl::StatusOr<GenerateReply> Generate(
      const v1::GenerateRequest& request,
      const std::function<bool(const v1::GenerateResponse&)>& on_step = nullptr);
  // Opens an AttachSharedMemory call on `ctx` (AttachedSharedMemory holds it).
  std::unique_ptr<grpc::ClientReader<v1::SharedMemoryRegion>> AttachSharedMemory(
      grpc::ClientContext* ctx, const v1::AttachSharedMemoryRequest& request);

 private:
  void Prepare(grpc::ClientContext* ctx) const;
  // Calls a streamed-run method (its full path) and reassembles the reply.
  template <typename Request>
  absl::StatusOr<RunReply> StreamRun(const char* method, const Request& request);

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Worker::Stub> stub_;
  Options options_;
};

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_WORKER_CLIENT_H_
