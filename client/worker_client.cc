#include "client/worker_client.h"

#include <grpcpp/grpcpp.h>

#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"

namespace lensgrid {

const WireTensor* RunReply::Find(absl::string_view name) const {
  for (const WireTensor& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

std::vector<int64_t> GenerateReply::Tokens(int row) const {
  std::vector<int64_t> out;
  for (const v1::GenerateResponse& step : steps) {
    if (row >= 0 && row < step.tokens_size()) out.push_back(step.tokens(row));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<WorkerClient>> WorkerClient::Connect(const std::string& address,
                                                                    Options options) {
  if (address.empty() || address.find(':') == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker address \"", address, "\" is not HOST:PORT"));
  }
  grpc::ChannelArguments args;
  // Replies stream in chunks of <= 1 MiB by default; this only matters for a
  // worker started with a larger --chunk-bytes.
  args.SetMaxReceiveMessageSize(16 << 20);
  LG_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel,
                      OpenChannel(address, options.transport, args));
  return std::make_unique<WorkerClient>(std::move(channel), options);
}

WorkerClient::WorkerClient(std::shared_ptr<grpc::Channel> channel, Options options)
    : channel_(std::move(channel)), stub_(v1::Worker::NewStub(channel_)), options_(options) {}

void WorkerClient::Prepare(grpc::ClientContext* ctx) const {
  if (options_.timeout != absl::InfiniteDuration()) {
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
  }
}

absl::Status WorkerClient::WaitUntilReady(absl::Duration timeout) {
  const absl::Time end = absl::Now() + timeout;
  absl::Status last;
  do {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(std::min(end, absl::Now() + absl::Seconds(5))));
    ctx.set_wait_for_ready(true);
    v1::ModelInfo info;
    last = FromGrpcStatus(stub_->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info));
    if (last.ok() || last.code() != absl::StatusCode::kUnavailable &&
                         last.code() != absl::StatusCode::kDeadlineExceeded) {
      return last;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  } while (absl::Now() < end);
  return absl::Status(
      last.code(),
      absl::StrCat("worker not ready after ", absl::FormatDuration(timeout), ": ", last.message()));
}

absl::StatusOr<v1::ModelInfo> WorkerClient::GetModelInfo() {
  grpc::ClientContext ctx;
  Prepare(&ctx);
  v1::ModelInfo info;
  LG_RETURN_IF_ERROR(FromGrpcStatus(stub_->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info)));
  return info;
}

absl::StatusOr<v1::TokenizeResponse> WorkerClient::Tokenize(const v1::TokenizeRequest& request) {
  grpc::ClientContext ctx;
  Prepare(&ctx);
  v1::TokenizeResponse response;
  LG_RETURN_IF_ERROR(FromGrpcStatus(stub_->Tokenize(&ctx, request, &response)));
  return response;
}

absl::StatusOr<v1::DetokenizeResponse> WorkerClient::Detokenize(
    const v1::DetokenizeRequest& request) {
  grpc::ClientContext ctx;
  Prepare(&ctx);
  v1::DetokenizeResponse response;
  LG_RETURN_IF_ERROR(FromGrpcStatus(stub_->Detokenize(&ctx, request, &response)));
  return response;
}

template <typename Reader>
absl::StatusOr<RunReply> WorkerClient::ReadReply(grpc::ClientContext* ctx, Reader* reader) {
  RunReply reply;
  TensorAssembler assembler;
  v1::RunResponse response;
  bool have_header = false;
  absl::Status stream_error;
  while (reader->Read(&response)) {
    if (!stream_error.ok()) continue;  // drain; the status comes from Finish
    if (response.has_header()) {
      if (have_header) {
        stream_error = absl::InternalError("stream: a second header");
        ctx->TryCancel();
        continue;
      }
      have_header = true;
      reply.header = std::move(*response.mutable_header());
      // A reply written into shared memory streams no tensors.
      if (!reply.header.in_shared_memory()) {
        assembler.Expect({reply.header.tensors().begin(), reply.header.tensors().end()});
      }
    } else if (response.has_chunk()) {
      if (!have_header) {
        stream_error = absl::InternalError("stream: a chunk before the header");
      } else if (reply.header.in_shared_memory()) {
        stream_error = absl::InternalError("stream: a chunk after a shared-memory header");
      } else {
        stream_error = assembler.Add(std::move(*response.mutable_chunk()));
      }
      if (!stream_error.ok()) ctx->TryCancel();
    }
  }
  absl::Status status = FromGrpcStatus(reader->Finish());
  LG_RETURN_IF_ERROR(stream_error);
  LG_RETURN_IF_ERROR(status);
  if (!have_header) return absl::InternalError("stream: the reply had no header");
  LG_ASSIGN_OR_RETURN(reply.tensors, assembler.Finish());
  return reply;
}

absl::StatusOr<RunReply> WorkerClient::RunWithCache(const v1::RunWithCacheRequest& request) {
  grpc::ClientContext ctx;
  Prepare(&ctx);
  auto reader = stub_->RunWithCache(&ctx, request);
  return ReadReply(&ctx, reader.get());
}

absl::StatusOr<RunReply> WorkerClient::RunWithInterventions(
    const v1::RunWithInterventionsRequest& request) {
  grpc::ClientContext ctx;
  Prepare(&ctx);
  auto reader = stub_->RunWithInterventions(&ctx, request);
  return ReadReply(&ctx, reader.get());
}

absl::StatusOr<RunReply> WorkerClient::RunShard(const v1::RunShardRequest& request) {
  grpc::ClientContext ctx;
  Prepare(&ctx);
  auto reader = stub_->RunShard(&ctx, request);
  return ReadReply(&ctx, reader.get());
}

absl::StatusOr<RunReply> WorkerClient::GetWeights(const v1::GetWeightsRequest& request) {
  grpc::ClientContext ctx;
  Prepare(&ctx);
  auto reader = stub_->GetWeights(&ctx, request);
  return ReadReply(&ctx, reader.get());
}

std::unique_ptr<grpc::ClientReader<v1::SharedMemoryRegion>> WorkerClient::AttachSharedMemory(
    grpc::ClientContext* ctx, const v1::AttachSharedMemoryRequest& request) {
  return stub_->AttachSharedMemory(ctx, request);
}

absl::StatusOr<GenerateReply> WorkerClient::Generate(
    const v1::GenerateRequest& request,
    const std::function<bool(const v1::GenerateResponse&)>& on_step) {
  grpc::ClientContext ctx;
  Prepare(&ctx);
  auto reader = stub_->Generate(&ctx, request);
  GenerateReply reply;
  v1::GenerateResponse response;
  absl::Status stream_error;
  bool stopped = false;
  while (reader->Read(&response)) {
    if (!stream_error.ok() || stopped) continue;  // drain; the status comes from Finish
    if (response.has_prompt_tokens()) {
      if (!reply.steps.empty()) {
        stream_error = absl::InternalError("stream: prompt_tokens after the first message");
        ctx.TryCancel();
        continue;
      }
      reply.prompt_tokens = std::move(*response.mutable_prompt_tokens());
      response.clear_prompt_tokens();
    }
    if (response.step() != static_cast<int32_t>(reply.steps.size())) {
      stream_error = absl::InternalError(absl::StrCat("stream: step ", response.step(), " where ",
                                                      reply.steps.size(), " was expected"));
      ctx.TryCancel();
      continue;
    }
    if (on_step && !on_step(response)) {
      stopped = true;
      ctx.TryCancel();
    }
    reply.steps.push_back(std::move(response));
    response.Clear();
  }
  absl::Status status = FromGrpcStatus(reader->Finish());
  LG_RETURN_IF_ERROR(stream_error);
  LG_RETURN_IF_ERROR(status);
  return reply;
}

}  // namespace lensgrid
