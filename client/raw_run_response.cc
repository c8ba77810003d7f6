#include "client/raw_run_response.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/varint.h"

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

absl::Status Malformed(const std::string& what) {
  return absl::InternalError("stream: a malformed RunResponse (" + what + ")");
}

// A chunk the assembler refuses (a bad dtype is INVALID_ARGUMENT there, as a
// request's) is, in a reply, the worker's fault: INTERNAL.
absl::Status AsMalformedReply(const absl::Status& status) {
  if (status.ok() || status.code() == absl::StatusCode::kInternal) return status;
  return absl::InternalError(absl::StrCat("stream: ", status.message()));
}

}  // namespace

absl::Status ReadRawResponse(const grpc::ByteBuffer& buffer, RawReplyState* state,
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
      if (state->have_header) return absl::InternalError("stream: a second header");
      state->have_header = true;
      if (!header->in_shared_memory()) {
        assembler->Expect({header->tensors().begin(), header->tensors().end()});
      }
      if (header->inline_chunks_size() > 0) {
        if (header->in_shared_memory()) {
          return absl::InternalError("stream: a shared-memory header with inline tensors");
        }
        state->inline_tensors = true;
        for (v1::TensorChunk& chunk : *header->mutable_inline_chunks()) {
          LG_RETURN_IF_ERROR(AsMalformedReply(assembler->Add(std::move(chunk))));
        }
        header->clear_inline_chunks();
      }
    } else if (tag >> 3 == 2) {  // chunk
      if (!state->have_header) return absl::InternalError("stream: a chunk before the header");
      if (header->in_shared_memory()) {
        return absl::InternalError("stream: a chunk after a shared-memory header");
      }
      if (state->inline_tensors) {
        return absl::InternalError("stream: a chunk after a header with inline tensors");
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
          // The varints may have run past the chunk's end: check before subtracting.
          if (!in.ReadVarint(&n) || in.position() > end || n > end - in.position()) {
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
      LG_RETURN_IF_ERROR(AsMalformedReply(assembler->AddPiece(
          meta, data_size, [&data, data_size](char* dst) { data->Take(data_size, dst); })));
    } else {
      if (!in.Take(length, nullptr)) return Malformed("a cut field");  // unknown: skipped
    }
  }
  return absl::OkStatus();
}

}  // namespace lensgrid
