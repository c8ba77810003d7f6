// Reading and writing the safetensors format without LibTorch.
//
// A file is: 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//  "__metadata__": {"k": "v"}}, then the raw little-endian row-major data; offsets
// are relative to the first byte after the header.
//
//   LG_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open("model.safetensors"));
//   const SafetensorsEntry* wte = file->Find("wte.weight");
//   absl::Span<const uint8_t> bytes = file->Data(*wte);
#ifndef LENSGRID_COMMON_SAFETENSORS_H_
#define LENSGRID_COMMON_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/dtype.h"

namespace lensgrid {

struct SafetensorsEntry {
  std::string name;
  TensorDType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets into the data section
  uint64_t end = 0;
  int64_t NumElements() const;
};

// The parsed header: pure, testable on bytes in memory.
struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;  // in file order of data_offsets
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // 8 + header length
};

// Validates everything that can be checked without reading tensor data: header
// length within the file, JSON well formed, every entry's dtype, shape and
// offsets, offsets inside the data section and matching the shape's byte size.
// Errors name `source` (a path) and the offending tensor.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::Span<const uint8_t> file_bytes,
                                                         absl::string_view source);

// A read-only, memory-mapped safetensors file.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsEntry>& entries() const { return header_.entries; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  // Returns nullptr when there is no tensor of that name.
  const SafetensorsEntry* Find(absl::string_view name) const;
  absl::Span<const uint8_t> Data(const SafetensorsEntry& entry) const;

 private:
  SafetensorsFile(std::string path, const uint8_t* map, size_t size, SafetensorsHeader header);
  std::string path_;
  const uint8_t* map_;
  size_t size_;
  SafetensorsHeader header_;
};

// A tensor to write; `data` must hold NumElements * DTypeSize(dtype) bytes.
struct SafetensorsTensorView {
  std::string name;
  TensorDType dtype;
  std::vector<int64_t> shape;
  const void* data;
  size_t num_bytes;
};

// Serializes tensors (in the order given) into safetensors bytes.
absl::StatusOr<std::string> SerializeSafetensors(
    const std::vector<SafetensorsTensorView>& tensors,
    const std::map<std::string, std::string>& metadata = {});

// Writes atomically: a temporary file beside `path`, then rename.
absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<SafetensorsTensorView>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_SAFETENSORS_H_
