#include "common/tensor_chunks.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace lensgrid {
namespace {

constexpr uint64_t kReservePerChunkByte = 256;

std::string ShapeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

int64_t WireTensor::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<TensorDType> FromProtoDType(v1::DType dtype, absl::string_view what) {
  switch (dtype) {
    case v1::F32:
      return TensorDType::kF32;
    case v1::F16:
      return TensorDType::kF16;
    case v1::BF16:
      return TensorDType::kBF16;
    case v1::I64:
      return TensorDType::kI64;
    case v1::I32:
      return TensorDType::kI32;
    case v1::BOOL:
      return TensorDType::kBool;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": dtype ",
                       v1::DType_Name(dtype).empty() ? absl::StrCat(dtype) : v1::DType_Name(dtype),
                       " is not one of F32, F16, BF16, I64, I32, BOOL"));
  }
}

absl::StatusOr<v1::DType> ToProtoDType(TensorDType dtype) {
  switch (dtype) {
    case TensorDType::kF32:
      return v1::F32;
    case TensorDType::kF16:
      return v1::F16;
    case TensorDType::kBF16:
      return v1::BF16;
    case TensorDType::kI64:
      return v1::I64;
    case TensorDType::kI32:
      return v1::I32;
    case TensorDType::kBool:
      return v1::BOOL;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("dtype ", DTypeName(dtype), " has no wire representation"));
  }
}

absl::StatusOr<uint64_t> ExpectedByteSize(TensorDType dtype, absl::Span<const int64_t> shape,
                                          absl::string_view what) {
  uint64_t n = DTypeSize(dtype);
  constexpr uint64_t kMax = uint64_t{1} << 62;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": shape ", ShapeString(shape), " has a negative dimension"));
    }
    if (d != 0 && n > kMax / static_cast<uint64_t>(d)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": shape ", ShapeString(shape), " is too large"));
    }
    n *= static_cast<uint64_t>(d);
  }
  return n;
}

absl::Status ValidateTensor(const v1::Tensor& tensor, absl::string_view what) {
  LG_ASSIGN_OR_RETURN(TensorDType dtype, FromProtoDType(tensor.dtype(), what));
  std::vector<int64_t> shape(tensor.shape().begin(), tensor.shape().end());
  LG_ASSIGN_OR_RETURN(uint64_t expected, ExpectedByteSize(dtype, shape, what));
  if (tensor.data().size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", DTypeName(dtype), " ",
                                                   ShapeString(shape), " needs ", expected,
                                                   " bytes of data, got ", tensor.data().size()));
  }
  return absl::OkStatus();
}

absl::StatusOr<WireTensor> FromProtoTensor(const v1::Tensor& tensor, absl::string_view what) {
  LG_RETURN_IF_ERROR(ValidateTensor(tensor, what));
  WireTensor out;
  out.name = tensor.name();
  out.dtype = FromProtoDType(tensor.dtype(), what).value();
  out.shape.assign(tensor.shape().begin(), tensor.shape().end());
  out.data = tensor.data();
  return out;
}

v1::Tensor ToProtoTensor(const WireTensor& tensor) {
  v1::Tensor out;
  out.set_name(tensor.name);
  out.set_dtype(ToProtoDType(tensor.dtype).value_or(v1::DTYPE_UNSPECIFIED));
  for (int64_t d : tensor.shape) out.add_shape(d);
  out.set_data(tensor.data);
  return out;
}

ChunkCursor::ChunkCursor(std::vector<TensorBytes> tensors, size_t chunk_bytes)
    : tensors_(std::move(tensors)), chunk_bytes_(std::max<size_t>(chunk_bytes, 1)) {}

std::vector<v1::TensorMeta> ChunkCursor::Metas() const {
  std::vector<v1::TensorMeta> metas;
  for (const TensorBytes& t : tensors_) {
    v1::TensorMeta meta;
    meta.set_name(t.name);
    meta.set_dtype(ToProtoDType(t.dtype).value_or(v1::DTYPE_UNSPECIFIED));
    for (int64_t d : t.shape) meta.add_shape(d);
    meta.set_num_bytes(t.bytes.size());
    metas.push_back(std::move(meta));
  }
  return metas;
}

uint64_t ChunkCursor::total_bytes() const {
  uint64_t total = 0;
  for (const TensorBytes& t : tensors_) total += t.bytes.size();
  return total;
}

bool ChunkCursor::Next(v1::TensorChunk* chunk) {
  absl::Span<const uint8_t> data;
  std::shared_ptr<const void> owner;
  if (!NextPiece(chunk, &data, &owner)) return false;
  chunk->set_data(reinterpret_cast<const char*>(data.data()), data.size());
  return true;
}

uint64_t ChunkCursor::MoveInto(google::protobuf::RepeatedPtrField<v1::TensorChunk>* chunks) {
  uint64_t bytes = 0;
  v1::TensorChunk chunk;
  while (Next(&chunk)) {
    bytes += chunk.data().size();
    *chunks->Add() = std::move(chunk);
  }
  return bytes;
}

bool ChunkCursor::NextPiece(v1::TensorChunk* meta, absl::Span<const uint8_t>* data,
                            std::shared_ptr<const void>* owner) {
  if (tensor_ >= tensors_.size()) return false;
  const TensorBytes& t = tensors_[tensor_];
  meta->Clear();
  meta->set_name(t.name);
  meta->set_offset(offset_);
  if (offset_ == 0) {
    meta->set_dtype(ToProtoDType(t.dtype).value_or(v1::DTYPE_UNSPECIFIED));
    for (int64_t d : t.shape) meta->add_shape(d);
    meta->set_total_bytes(t.bytes.size());
  }
  const size_t n = std::min<uint64_t>(chunk_bytes_, t.bytes.size() - offset_);
  *data = t.bytes.subspan(offset_, n);
  *owner = t.owner;
  offset_ += n;
  if (offset_ >= t.bytes.size()) {
    tensors_[tensor_] = TensorBytes();  // frees what only this tensor held
    ++tensor_;
    offset_ = 0;
  }
  return true;
}

absl::Status TensorAssembler::Accept(const v1::TensorChunk& chunk, size_t n) {
  if (!in_progress_) {
    if (chunk.offset() != 0) {
      return absl::InternalError(absl::StrCat("stream: tensor \"", chunk.name(),
                                              "\" starts at offset ", chunk.offset(),
                                              ", expected 0"));
    }
    LG_ASSIGN_OR_RETURN(
        TensorDType dtype,
        FromProtoDType(chunk.dtype(), absl::StrCat("chunk of \"", chunk.name(), "\"")));
    std::vector<int64_t> shape(chunk.shape().begin(), chunk.shape().end());
    LG_ASSIGN_OR_RETURN(uint64_t expected, ExpectedByteSize(dtype, shape, chunk.name()));
    if (expected != chunk.total_bytes()) {
      return absl::InternalError(absl::StrCat("stream: tensor \"", chunk.name(), "\" ",
                                              ShapeString(shape), " announces ",
                                              chunk.total_bytes(), " bytes, expected ", expected));
    }
    current_ = WireTensor();
    current_.name = chunk.name();
    current_.dtype = dtype;
    current_.shape = std::move(shape);
    current_total_ = expected;
    in_progress_ = true;
  } else if (chunk.name() != current_.name || chunk.offset() != current_.data.size()) {
    return absl::InternalError(
        absl::StrCat("stream: got a chunk of \"", chunk.name(), "\" at offset ", chunk.offset(),
                     " while \"", current_.name, "\" expected offset ", current_.data.size()));
  }
  if (current_.data.size() + n > current_total_) {
    return absl::InternalError(absl::StrCat("stream: tensor \"", current_.name,
                                            "\" got more than its ", current_total_, " bytes"));
  }
  if (current_.data.empty() && n > 0) {  // (n 0: a single chunk is swapped in, not copied)
    // One allocation for the tensor, but never far ahead of the bytes that
    // arrived (a 4 TB claim in a 30-byte chunk was a crash): a 1 MiB first
    // chunk reserves up to 256 MiB; beyond that the buffer doubles.
    current_.data.reserve(std::min<uint64_t>(current_total_, kReservePerChunkByte * n + 4096));
  }
  return absl::OkStatus();
}

void TensorAssembler::Landed(size_t n) {
  bytes_received_ += n;
  if (current_.data.size() == current_total_) {
    done_.push_back(std::move(current_));
    current_ = WireTensor();
    in_progress_ = false;
  }
}

absl::Status TensorAssembler::Add(v1::TensorChunk chunk) {
  const size_t n = chunk.data().size();
  if (!in_progress_ && n == chunk.total_bytes() && chunk.offset() == 0) {
    LG_RETURN_IF_ERROR(Accept(chunk, 0));       // checks the header; reserves nothing useful
    current_.data.swap(*chunk.mutable_data());  // no copy for a single-chunk tensor
  } else {
    LG_RETURN_IF_ERROR(Accept(chunk, n));
    current_.data.append(chunk.data());
  }
  Landed(n);
  return absl::OkStatus();
}

absl::Status TensorAssembler::AddPiece(const v1::TensorChunk& meta, size_t n,
                                       const std::function<void(char*)>& fill) {
  LG_RETURN_IF_ERROR(Accept(meta, n));
  const size_t at = current_.data.size();
  current_.data.resize(at + n);
  if (n > 0) fill(&current_.data[at]);
  Landed(n);
  return absl::OkStatus();
}

absl::Status TensorAssembler::CheckComplete() const {
  if (in_progress_) {
    return absl::InternalError(absl::StrCat("stream ended inside tensor \"", current_.name, "\" (",
                                            current_.data.size(), " of ", current_total_,
                                            " bytes)"));
  }
  if (expected_.empty()) return absl::OkStatus();
  if (expected_.size() != done_.size()) {
    return absl::InternalError(absl::StrCat("stream: header announced ", expected_.size(),
                                            " tensors, got ", done_.size()));
  }
  for (size_t i = 0; i < done_.size(); ++i) {
    if (expected_[i].name() != done_[i].name || expected_[i].num_bytes() != done_[i].data.size()) {
      return absl::InternalError(absl::StrCat("stream: tensor ", i, " is \"", done_[i].name,
                                              "\", header announced \"", expected_[i].name(),
                                              "\""));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<WireTensor>> TensorAssembler::Finish() {
  LG_RETURN_IF_ERROR(CheckComplete());
  return std::move(done_);
}

}  // namespace lensgrid
