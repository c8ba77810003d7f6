#include "worker/wire_buffers.h"

#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/slice.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "common/varint.h"
#include "google/protobuf/io/coded_stream.h"

namespace lensgrid {
namespace {

// RunResponse.chunk is field 2, TensorChunk.data field 6, both length-delimited.
constexpr uint8_t kChunkTag = (2 << 3) | 2;
constexpr uint8_t kDataTag = (6 << 3) | 2;

void ReleaseOwner(void* owner) { delete static_cast<std::shared_ptr<const void>*>(owner); }

}  // namespace

grpc::ByteBuffer SerializedMessage(const google::protobuf::MessageLite& message) {
  std::string bytes = message.SerializeAsString();
  grpc::Slice slice(std::move(bytes));
  return grpc::ByteBuffer(&slice, 1);
}

grpc::ByteBuffer ChunkBuffer(const v1::TensorChunk& meta, absl::Span<const uint8_t> data,
                             std::shared_ptr<const void> owner) {
  const std::string meta_bytes = meta.SerializeAsString();
  using google::protobuf::io::CodedOutputStream;
  const uint64_t data_field =
      data.empty() ? 0 : 1 + CodedOutputStream::VarintSize64(data.size()) + data.size();
  std::string prefix;
  prefix.reserve(meta_bytes.size() + 24);
  prefix.push_back(static_cast<char>(kChunkTag));
  AppendVarint(meta_bytes.size() + data_field, &prefix);
  prefix += meta_bytes;
  if (data.empty()) {
    grpc::Slice only(std::move(prefix));
    return grpc::ByteBuffer(&only, 1);
  }
  prefix.push_back(static_cast<char>(kDataTag));
  AppendVarint(data.size(), &prefix);
  grpc::Slice slices[2] = {
      grpc::Slice(std::move(prefix)),
      grpc::Slice(const_cast<uint8_t*>(data.data()), data.size(), &ReleaseOwner,
                  new std::shared_ptr<const void>(std::move(owner)))};
  return grpc::ByteBuffer(slices, 2);
}

absl::Status ParseRequest(const grpc::ByteBuffer& raw, google::protobuf::MessageLite* message,
                          const char* what) {
  grpc::ByteBuffer shared(raw);  // the same slices, read in place
  grpc::ProtoBufferReader reader(&shared);
  if (!reader.status().ok() || !message->ParseFromZeroCopyStream(&reader)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request is not a valid ", what, " message (", raw.Length(), " bytes)"));
  }
  return absl::OkStatus();
}

}  // namespace lensgrid
