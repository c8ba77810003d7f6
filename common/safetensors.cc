#include "common/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/json_limits.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace lensgrid {
namespace {

// Refuse absurd headers before allocating for them (the reference
// implementation uses the same 100 MB bound).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status EntryError(absl::string_view source, absl::string_view name, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": tensor \"", name, "\": ", what));
}

absl::StatusOr<SafetensorsEntry> ParseEntry(absl::string_view source, const std::string& name,
                                            const nlohmann::json& value, uint64_t data_size) {
  if (!value.is_object()) return EntryError(source, name, "entry is not an object");
  SafetensorsEntry entry;
  entry.name = name;
  auto dtype_it = value.find("dtype");
  if (dtype_it == value.end() || !dtype_it->is_string()) {
    return EntryError(source, name, "missing string field \"dtype\"");
  }
  auto dtype = ParseDType(dtype_it->get<std::string>());
  if (!dtype.ok()) return EntryError(source, name, dtype.status().message());
  entry.dtype = *dtype;

  auto shape_it = value.find("shape");
  if (shape_it == value.end() || !shape_it->is_array()) {
    return EntryError(source, name, "missing array field \"shape\"");
  }
  for (const auto& dim : *shape_it) {
    if (!dim.is_number_integer() || dim.get<int64_t>() < 0) {
      return EntryError(source, name,
                        absl::StrCat("shape ", shape_it->dump(),
                                     " has a dimension that is not a "
                                     "non-negative integer"));
    }
    entry.shape.push_back(dim.get<int64_t>());
  }

  auto offsets_it = value.find("data_offsets");
  if (offsets_it == value.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
    return EntryError(source, name, "\"data_offsets\" must be two non-negative integers");
  }
  entry.begin = (*offsets_it)[0].get<uint64_t>();
  entry.end = (*offsets_it)[1].get<uint64_t>();
  if (entry.begin > entry.end || entry.end > data_size) {
    return EntryError(source, name,
                      absl::StrCat("data_offsets [", entry.begin, ", ", entry.end,
                                   "] out of range: the data section holds ", data_size,
                                   " bytes (file truncated or header corrupt)"));
  }
  // Overflow-safe byte count of the shape. The element count, multiplied in
  // NumElements()'s order, must fit in int64 too, even where a later zero
  // dimension makes the byte count 0.
  uint64_t expected = DTypeSize(entry.dtype);
  int64_t elements = 1;
  for (int64_t dim : entry.shape) {
    if ((dim != 0 && expected > UINT64_MAX / static_cast<uint64_t>(dim)) ||
        __builtin_mul_overflow(elements, dim, &elements)) {
      return EntryError(source, name, "shape overflows");
    }
    expected *= static_cast<uint64_t>(dim);
  }
  if (entry.end - entry.begin != expected) {
    return EntryError(
        source, name,
        absl::StrCat("shape ", ShapeString(entry.shape), " of ", DTypeName(entry.dtype), " needs ",
                     expected, " bytes but data_offsets span ", entry.end - entry.begin));
  }
  return entry;
}

}  // namespace

int64_t SafetensorsEntry::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::Span<const uint8_t> file_bytes,
                                                         absl::string_view source) {
  if (file_bytes.size() < 8) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": not a safetensors file: ", file_bytes.size(),
                     " bytes, shorter than the 8-byte header length"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | file_bytes[i];
  if (header_len > kMaxHeaderBytes || header_len > file_bytes.size() - 8) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": header length ", header_len,
                                                   " exceeds the file (", file_bytes.size(),
                                                   " bytes): truncated or not a safetensors file"));
  }
  const char* json_begin = reinterpret_cast<const char*>(file_bytes.data() + 8);
  auto parsed = ParseJsonBounded(absl::string_view(json_begin, header_len), "header");
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": header is not a JSON object (corrupt ",
                     "safetensors file): ", parsed.status().message()));
  }
  nlohmann::json header = *std::move(parsed);
  if (!header.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": header is not a JSON object (corrupt safetensors file)"));
  }
  SafetensorsHeader result;
  result.data_start = 8 + header_len;
  const uint64_t data_size = file_bytes.size() - result.data_start;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) {
        return absl::InvalidArgumentError(absl::StrCat(source, ": __metadata__ is not an object"));
      }
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string()) {
          return absl::InvalidArgumentError(
              absl::StrCat(source, ": __metadata__ value for \"", k, "\" is not a string"));
        }
        result.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    LG_ASSIGN_OR_RETURN(SafetensorsEntry entry, ParseEntry(source, name, value, data_size));
    result.entries.push_back(std::move(entry));
  }
  // In file order; ties (tensors of zero bytes share offsets) by name, so the
  // order never depends on the sort algorithm.
  std::sort(result.entries.begin(), result.entries.end(), [](const auto& a, const auto& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  // A tensor of zero bytes holds no data, so it overlaps nothing wherever its
  // offsets point (inside the data section: checked above). Only tensors with
  // bytes may not share any.
  const SafetensorsEntry* prev = nullptr;
  for (const SafetensorsEntry& cur : result.entries) {
    if (cur.begin == cur.end) continue;
    if (prev != nullptr && cur.begin < prev->end) {
      return EntryError(source, cur.name,
                        absl::StrCat("data overlaps tensor \"", prev->name, "\""));
    }
    prev = &cur;
  }
  return result;
}

SafetensorsFile::SafetensorsFile(std::string path, const uint8_t* map, size_t size,
                                 SafetensorsHeader header)
    : path_(std::move(path)), map_(map), size_(size), header_(std::move(header)) {}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr && size_ > 0) {
    munmap(const_cast<uint8_t*>(map_), size_);
  }
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    std::string msg = absl::StrCat("cannot open ", path, ": ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::PermissionDeniedError(msg);
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat("cannot stat ", path));
  }
  size_t size = static_cast<size_t>(st.st_size);
  const uint8_t* map = nullptr;
  if (size > 0) {
    void* p = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      return absl::InternalError(absl::StrCat("cannot mmap ", path, ": ", std::strerror(errno)));
    }
    map = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  auto header = ParseSafetensorsHeader(absl::MakeConstSpan(map, size), path);
  if (!header.ok()) {
    if (map != nullptr) munmap(const_cast<uint8_t*>(map), size);
    return header.status();
  }
  return std::unique_ptr<SafetensorsFile>(new SafetensorsFile(path, map, size, std::move(*header)));
}

const SafetensorsEntry* SafetensorsFile::Find(absl::string_view name) const {
  for (const auto& e : header_.entries) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

absl::Span<const uint8_t> SafetensorsFile::Data(const SafetensorsEntry& entry) const {
  return absl::MakeConstSpan(map_ + header_.data_start + entry.begin, entry.end - entry.begin);
}

absl::StatusOr<std::string> SerializeSafetensors(
    const std::vector<SafetensorsTensorView>& tensors,
    const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    if (!names.insert(t.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate tensor name \"", t.name, "\""));
    }
    uint64_t expected = DTypeSize(t.dtype);
    for (int64_t d : t.shape) expected *= static_cast<uint64_t>(d);
    if (expected != t.num_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor \"", t.name, "\": shape ", ShapeString(t.shape), " of ",
                       DTypeName(t.dtype), " needs ", expected, " bytes, got ", t.num_bytes));
    }
    header[t.name] = {{"dtype", std::string(DTypeName(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.num_bytes}}};
    offset += t.num_bytes;
  }
  std::string json = header.dump();
  // Pad with spaces so the data section starts 8-byte aligned.
  while ((8 + json.size()) % 8 != 0) json.push_back(' ');
  std::string out;
  out.reserve(8 + json.size() + offset);
  uint64_t len = json.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((len >> (8 * i)) & 0xff));
  out += json;
  for (const auto& t : tensors) {
    out.append(static_cast<const char*>(t.data), t.num_bytes);
  }
  return out;
}

absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<SafetensorsTensorView>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  LG_ASSIGN_OR_RETURN(std::string bytes, SerializeSafetensors(tensors, metadata));
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot write ", tmp, ": ", std::strerror(errno)));
    }
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) {
      return absl::DataLossError(absl::StrCat("short write to ", tmp));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot rename ", tmp, " to ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace lensgrid
