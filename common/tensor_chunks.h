// Tensors on the wire: validation of inline Tensor messages, and the split of
// large tensors into ordered TensorChunk messages and their reassembly.
//
// Sender (the worker): the bytes are borrowed, `owner` keeps them alive.
//   ChunkCursor cursor(std::move(tensors), /*chunk_bytes=*/1 << 20);
//   v1::TensorChunk chunk;
//   while (cursor.Next(&chunk)) Write(chunk);
// Receiver (a client):
//   TensorAssembler assembler;
//   for (each chunk) LG_RETURN_IF_ERROR(assembler.Add(std::move(chunk)));
//   LG_ASSIGN_OR_RETURN(std::vector<WireTensor> tensors, assembler.Finish());
//
// No LibTorch here: the model side turns at::Tensor into TensorBytes.
#ifndef LENSGRID_COMMON_TENSOR_CHUNKS_H_
#define LENSGRID_COMMON_TENSOR_CHUNKS_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "lensgrid/v1/tensor.pb.h"
#include "lensgrid/v1/worker.pb.h"

namespace lensgrid {

inline constexpr size_t kDefaultChunkBytes = size_t{1} << 20;

// A tensor to send: row-major little-endian bytes borrowed from `owner`.
struct TensorBytes {
  std::string name;
  TensorDType dtype = TensorDType::kF32;
  std::vector<int64_t> shape;
  absl::Span<const uint8_t> bytes;
  std::shared_ptr<const void> owner;  // keeps `bytes` alive
};

// A received tensor that owns its bytes.
struct WireTensor {
  std::string name;
  TensorDType dtype = TensorDType::kF32;
  std::vector<int64_t> shape;
  std::string data;
  int64_t NumElements() const;
};

// The TensorDType of a wire v1::DType; INVALID_ARGUMENT for DTYPE_UNSPECIFIED or an unknown value
// (`what` names the field in the message).
absl::StatusOr<TensorDType> FromProtoDType(v1::DType dtype, absl::string_view what);
// INVALID_ARGUMENT for dtypes the wire has no name for (F64, I16, I8, U8).
absl::StatusOr<v1::DType> ToProtoDType(TensorDType dtype);

// product(shape) * dtype size, checking for negative dims and overflow.
absl::StatusOr<uint64_t> ExpectedByteSize(TensorDType dtype, absl::Span<const int64_t> shape,
                                          absl::string_view what);

// Checks an inline tensor: a known dtype, a valid shape, and data of exactly
// product(shape) * dtype size bytes. INVALID_ARGUMENT naming `what`.
absl::Status ValidateTensor(const v1::Tensor& tensor, absl::string_view what);
absl::StatusOr<WireTensor> FromProtoTensor(const v1::Tensor& tensor, absl::string_view what);
v1::Tensor ToProtoTensor(const WireTensor& tensor);

// Cuts tensors into chunks of at most `chunk_bytes` of data, in order.
class ChunkCursor {
 public:
  ChunkCursor(std::vector<TensorBytes> tensors, size_t chunk_bytes = kDefaultChunkBytes);

  // Name, dtype, shape and byte size of every tensor, in sending order.
  std::vector<v1::TensorMeta> Metas() const;
  uint64_t total_bytes() const;
  // Fills *chunk with the next piece; false when every tensor has been sent.
  bool Next(v1::TensorChunk* chunk);
  // The same piece without copying its bytes: *meta gets every field but
  // `data`, *data the bytes (borrowed), *owner what keeps them alive.
  bool NextPiece(v1::TensorChunk* meta, absl::Span<const uint8_t>* data,
                 std::shared_ptr<const void>* owner);
  // Takes every remaining piece as a chunk (with its bytes) into *chunks, in
  // order; returns the data bytes taken. A tensor of at most chunk_bytes is
  // one chunk.
  uint64_t MoveInto(google::protobuf::RepeatedPtrField<v1::TensorChunk>* chunks);
  // Whether every piece has been taken.
  bool done() const { return tensor_ >= tensors_.size(); }
  // Drops the tensors (and what their owners hold).
  void Clear() { tensors_.clear(); }

 private:
  std::vector<TensorBytes> tensors_;
  size_t chunk_bytes_;
  size_t tensor_ = 0;  // index of the tensor being sent
  uint64_t offset_ = 0;
};

// Reassembles chunks into tensors, checking order, offsets and sizes. Errors
// are INTERNAL: a well-behaved sender never produces them.
class TensorAssembler {
 public:
  // Optional: the tensors announced in a RunHeader; Finish() then checks that
  // exactly these arrived.
  void Expect(std::vector<v1::TensorMeta> metas) { expected_ = std::move(metas); }
  absl::Status Add(v1::TensorChunk chunk);
  // The same for a chunk whose `n` data bytes are still elsewhere (`meta` has
  // no data): once checked, fill(dst) copies them straight into the tensor.
  absl::Status AddPiece(const v1::TensorChunk& meta, size_t n,
                        const std::function<void(char*)>& fill);
  absl::StatusOr<std::vector<WireTensor>> Finish();
  uint64_t bytes_received() const { return bytes_received_; }

 private:
  absl::Status CheckComplete() const;
  // Checks a chunk of `n` bytes against the stream so far (starting a tensor
  // at offset 0) and reserves room; Landed(n) counts them once they are in.
  absl::Status Accept(const v1::TensorChunk& chunk, size_t n);
  void Landed(size_t n);
  std::vector<v1::TensorMeta> expected_;
  std::vector<WireTensor> done_;
  bool in_progress_ = false;
  WireTensor current_;
  uint64_t current_total_ = 0;
  uint64_t bytes_received_ = 0;
};

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_TENSOR_CHUNKS_H_
