#include "client/worker_client.h"

#include <grpcpp/grpcpp.h>

#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
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

// Reads protobuf wire format across a message's slices.
class SliceReader {
 public:
  explicit SliceReader(const std::vector<grpc::Slice>* slices) : slices_(slices) { Settle(); }
  size_t position() const { return position_; }
  bool ReadByte(uint8_t* out) {
    if (slice_ >= slices_->size()) return false;
    *out = (*slices_)[slice_].begin()[offset_++];
    ++position_;
    Settle();
    return true;
  }
  bool ReadVarint(uint64_t* out) {
    *out = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b;
      if (!ReadByte(&b)) return false;
      *out |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return true;
    }
    return false;
  }
  // Copies (dst != nullptr) or skips n bytes; false past the end.
  bool Take(size_t n, char* dst) {
    while (n > 0) {
      if (slice_ >= slices_->size()) return false;
      const grpc::Slice& s = (*slices_)[slice_];
      const size_t k = std::min(n, s.size() - offset_);
      if (dst != nullptr) {
        std::memcpy(dst, s.begin() + offset_, k);
        dst += k;
      }
      offset_ += k;
      position_ += k;
      n -= k;
      Settle();
    }
    return true;
  }
  bool Append(size_t n, std::string* out) {
    const size_t at = out->size();
    out->resize(at + n);
    return Take(n, n > 0 ? &(*out)[at] : nullptr);
  }

 private:
  void Settle() {
    while (slice_ < slices_->size() && offset_ >= (*slices_)[slice_].size()) {
      ++slice_;
      offset_ = 0;
    }
  }
  const std::vector<grpc::Slice>* slices_;
  size_t slice_ = 0, offset_ = 0, position_ = 0;
};

void AppendVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

absl::Status Malformed(const std::string& what) {
  return absl::InternalError("stream: a malformed RunResponse (" + what + ")");
}

// One RunResponse: a header (parsed whole), or a chunk whose data goes
// straight from gRPC's slices into the tensor it belongs to (one copy).
absl::Status ReadRawResponse(const grpc::ByteBuffer& buffer, bool* have_header,
                             v1::RunHeader* header, TensorAssembler* assembler) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return Malformed("unreadable");
  SliceReader in(&slices);
  const size_t total = buffer.Length();
  while (in.position() < total) {
    uint64_t tag, length;
    if (!in.ReadVarint(&tag)) return Malformed("a cut tag");
    if ((tag & 7) != 2) return Malformed("a field that is not length-delimited");
    if (!in.ReadVarint(&length) || length > total - in.position()) {
      return Malformed("a field past the end");
    }
    if (tag >> 3 == 1) {  // header
      std::string bytes;
      if (!in.Append(length, &bytes) || !header->ParseFromString(bytes)) {
        return Malformed("a bad header");
      }
      if (*have_header) return absl::InternalError("stream: a second header");
      *have_header = true;
      if (!header->in_shared_memory()) {
        assembler->Expect({header->tensors().begin(), header->tensors().end()});
      }
    } else if (tag >> 3 == 2) {  // chunk
      if (!*have_header) return absl::InternalError("stream: a chunk before the header");
      if (header->in_shared_memory()) {
        return absl::InternalError("stream: a chunk after a shared-memory header");
      }
      const size_t end = in.position() + length;
      std::string meta_bytes;
      std::optional<SliceReader> data;
      uint64_t data_size = 0;
      while (in.position() < end) {
        uint64_t field;
        if (!in.ReadVarint(&field)) return Malformed("a cut chunk field");
        if ((field & 7) == 2) {
          uint64_t n;
          if (!in.ReadVarint(&n) || n > end - in.position()) {
            return Malformed("a chunk field past its end");
          }
          if (field >> 3 == 6) {  // data: read in place below
            data.emplace(in);
            data_size = n;
            if (!in.Take(n, nullptr)) return Malformed("cut data");
            continue;
          }
          AppendVarint(field, &meta_bytes);
          AppendVarint(n, &meta_bytes);
          if (!in.Append(n, &meta_bytes)) return Malformed("a cut chunk field");
        } else if ((field & 7) == 0) {
          uint64_t v;
          if (!in.ReadVarint(&v)) return Malformed("a cut varint");
          AppendVarint(field, &meta_bytes);
          AppendVarint(v, &meta_bytes);
        } else if ((field & 7) == 1 || (field & 7) == 5) {
          AppendVarint(field, &meta_bytes);
          if (!in.Append((field & 7) == 1 ? 8 : 4, &meta_bytes)) return Malformed("a cut field");
        } else {
          return Malformed("a chunk field of wire type " + std::to_string(field & 7));
        }
      }
      if (in.position() != end) return Malformed("a chunk longer than announced");
      v1::TensorChunk meta;
      if (!meta.ParseFromString(meta_bytes)) return Malformed("a bad chunk");
      LG_RETURN_IF_ERROR(assembler->AddPiece(
          meta, data_size, [&data, data_size](char* dst) { data->Take(data_size, dst); }));
    } else {
      if (!in.Take(length, nullptr)) return Malformed("a cut field");  // unknown: skipped
    }
  }
  return absl::OkStatus();
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
  std::unique_ptr<grpc::ClientReader<RawRunResponse>> reader(
      grpc::internal::ClientReaderFactory<RawRunResponse>::Create(channel_.get(), rpc, &ctx,
                                                                  request));
  RunReply reply;
  TensorAssembler assembler;
  RawRunResponse response;
  bool have_header = false;
  absl::Status stream_error;
  while (reader->Read(&response)) {
    if (!stream_error.ok()) continue;  // drain; the status comes from Finish
    stream_error = ReadRawResponse(response.buffer, &have_header, &reply.header, &assembler);
    response.buffer.Clear();
    if (!stream_error.ok()) ctx.TryCancel();
  }
  absl::Status status = FromGrpcStatus(reader->Finish());
  LG_RETURN_IF_ERROR(stream_error);
  LG_RETURN_IF_ERROR(status);
  if (!have_header) return absl::InternalError("stream: the reply had no header");
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
