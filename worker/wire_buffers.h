// RunResponse messages as gRPC byte buffers for the worker's raw streaming
// methods. A chunk's tensor bytes are not copied: the buffer holds a slice
// over the tensor's memory that keeps its owner alive until gRPC has sent it.
//
//   grpc::ByteBuffer header = SerializedMessage(response);
//   grpc::ByteBuffer chunk = ChunkBuffer(meta, data, owner);  // parses as RunResponse{chunk}
#ifndef LENSGRID_WORKER_WIRE_BUFFERS_H_
#define LENSGRID_WORKER_WIRE_BUFFERS_H_

#include <grpcpp/support/byte_buffer.h>

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "google/protobuf/message_lite.h"
#include "lensgrid/v1/tensor.pb.h"

namespace lensgrid {

// Any message, serialized (one copy: for headers and other small messages).
grpc::ByteBuffer SerializedMessage(const google::protobuf::MessageLite& message);

// The bytes of RunResponse{chunk = meta with data = `data`}: the framing and
// `meta` (whose data must be empty) in one small slice, `data` as a second
// slice borrowed from `owner`.
grpc::ByteBuffer ChunkBuffer(const v1::TensorChunk& meta, absl::Span<const uint8_t> data,
                             std::shared_ptr<const void> owner);

// Parses a raw request; INVALID_ARGUMENT naming `what` when it is not one.
absl::Status ParseRequest(const grpc::ByteBuffer& raw, google::protobuf::MessageLite* message,
                          const char* what);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_WIRE_BUFFERS_H_
