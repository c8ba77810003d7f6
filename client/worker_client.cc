#include "client/worker_client.h"

#include <grpcpp/grpcpp.h>

#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/raw_run_response.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"

namespace lensgrid {

// A streamed RunResponse as gRPC received it: its slices, unparsed.
struct RawRunResponse {
  grpc::ByteBuffer buffer;
};

}  // namespace lensgrid

template <>
class grpc::SerializationTraits<lensgrid::RawRunResponse, void> {
 public:
  static grpc::Status Serialize(const lensgrid::RawRunResponse& message, grpc::ByteBuffer* buffer,
                                bool* own_buffer) {
    *buffer = message.buffer;
    *own_buffer = true;
    return grpc::Status::OK;
  }
  static grpc::Status Deserialize(grpc::ByteBuffer* buffer, lensgrid::RawRunResponse* message) {
    message->buffer.Swap(buffer);
    return grpc::Status::OK;
  }
};

namespace lensgrid {
namespace {

// A request that sets only `inline_tensors`.
void SetInlineTensors(v1::RunWithCacheRequest* r) {
  r->mutable_options()->set_inline_tensors(true);
}
void SetInlineTensors(v1::RunWithInterventionsRequest* r) {
  r->mutable_options()->set_inline_tensors(true);
}
void SetInlineTensors(v1::RunShardRequest* r) { r->set_inline_tensors(true); }
void SetInlineTensors(v1::GetWeightsRequest* r) { r->set_inline_tensors(true); }

// `request` serialized, with inline_tensors set when `inline_tensors`. The
// flag goes as a second, tiny serialized message after the request's own
// bytes (a parser merges a field that appears twice, embedded messages
// included), so a large request is neither copied nor re-encoded to set it.
template <typename Request>
absl::StatusOr<grpc::ByteBuffer> SerializeRequest(const Request& request, bool inline_tensors) {
  grpc::ByteBuffer bytes;
  bool own_buffer = false;
  grpc::Status serialized =
      grpc::SerializationTraits<Request>::Serialize(request, &bytes, &own_buffer);
  if (!serialized.ok()) return FromGrpcStatus(serialized);
  if (!inline_tensors) return bytes;
  Request flag;
  SetInlineTensors(&flag);
  std::vector<grpc::Slice> slices;
  if (!bytes.Dump(&slices).ok()) return absl::InternalError("cannot read a serialized request");
  slices.emplace_back(flag.SerializeAsString());
  return grpc::ByteBuffer(slices.data(), slices.size());
}

}  // namespace

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

template <typename Request>
absl::StatusOr<RunReply> WorkerClient::StreamRun(const char* method, const Request& request) {
  grpc::ClientContext ctx;
  Prepare(&ctx);
  // The raw messages, so that a chunk's bytes are copied once, from gRPC's
  // slices into their tensor (a parsed RunResponse would copy them twice).
  const grpc::internal::RpcMethod rpc(method, grpc::internal::RpcMethod::SERVER_STREAMING,
                                      channel_);
  LG_ASSIGN_OR_RETURN(grpc::ByteBuffer raw_request,
                      SerializeRequest(request, options_.inline_tensors));
  std::unique_ptr<grpc::ClientReader<RawRunResponse>> reader(
      grpc::internal::ClientReaderFactory<RawRunResponse>::Create(channel_.get(), rpc, &ctx,
                                                                  raw_request));
  RunReply reply;
  TensorAssembler assembler;
  RawRunResponse response;
  RawReplyState state;
  absl::Status stream_error;
  while (reader->Read(&response)) {
    if (!stream_error.ok()) continue;  // drain; the status comes from Finish
    stream_error = ReadRawResponse(response.buffer, &state, &reply.header, &assembler);
    response.buffer.Clear();
    if (!stream_error.ok()) ctx.TryCancel();
  }
  absl::Status status = FromGrpcStatus(reader->Finish());
  LG_RETURN_IF_ERROR(stream_error);
  LG_RETURN_IF_ERROR(status);
  if (!state.have_header) return absl::InternalError("stream: the reply had no header");
  LG_ASSIGN_OR_RETURN(reply.tensors, assembler.Finish());
  return reply;
}

absl::StatusOr<RunReply> WorkerClient::RunWithCache(const v1::RunWithCacheRequest& request) {
  return StreamRun("/lensgrid.v1.Worker/RunWithCache", request);
}

absl::StatusOr<RunReply> WorkerClient::RunWithInterventions(
    const v1::RunWithInterventionsRequest& request) {
  return StreamRun("/lensgrid.v1.Worker/RunWithInterventions", request);
}

absl::StatusOr<RunReply> WorkerClient::RunShard(const v1::RunShardRequest& request) {
  return StreamRun("/lensgrid.v1.Worker/RunShard", request);
}

absl::StatusOr<RunReply> WorkerClient::GetWeights(const v1::GetWeightsRequest& request) {
  return StreamRun("/lensgrid.v1.Worker/GetWeights", request);
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
