// Fuzz target: a safetensors file's bytes (a model dir on disk, or a
// downloaded result) through ParseSafetensorsHeader. Properties: no crash;
// what it accepts lies inside the file and matches its shape; and what it
// accepts serializes back into a file that parses to the same entries.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/safetensors.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto header =
      lensgrid::ParseSafetensorsHeader(absl::MakeConstSpan(data, size), "fuzz.safetensors");
  if (!header.ok()) {
    FUZZ_CHECK(!header.status().message().empty(), "an error says why");
    return 0;
  }
  std::vector<lensgrid::SafetensorsTensorView> views;
  volatile uint8_t sink = 0;
  for (const lensgrid::SafetensorsEntry& e : header->entries) {
    FUZZ_CHECK(e.begin <= e.end && e.end <= size - header->data_start,
               "data_offsets inside the data section");
    const uint64_t bytes = e.end - e.begin;
    const uint64_t elems = static_cast<uint64_t>(e.NumElements());
    FUZZ_CHECK(elems * lensgrid::DTypeSize(e.dtype) == bytes,
               "the span holds exactly the shape's elements");
    const uint8_t* p = data + header->data_start + e.begin;
    if (bytes > 0) sink = sink + p[0] + p[bytes - 1];  // ASan: inside the buffer
    views.push_back({e.name, e.dtype, e.shape, p, bytes});
  }
  auto again = lensgrid::SerializeSafetensors(views, header->metadata);
  FUZZ_CHECK(again.ok(), "an accepted file serializes again");
  auto reparsed = lensgrid::ParseSafetensorsHeader(
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(again->data()), again->size()),
      "again.safetensors");
  FUZZ_CHECK(reparsed.ok(), "what we write, we read");
  FUZZ_CHECK(
      reparsed->entries.size() == header->entries.size() && reparsed->metadata == header->metadata,
      "the same entries and metadata after a round trip");
  // Tensors of zero bytes may share an offset, so their order is not fixed.
  auto by_name = [](std::vector<lensgrid::SafetensorsEntry> v) {
    std::sort(v.begin(), v.end(), [](const auto& x, const auto& y) { return x.name < y.name; });
    return v;
  };
  const auto before = by_name(header->entries);
  const auto after = by_name(reparsed->entries);
  for (size_t i = 0; i < before.size(); ++i) {
    const auto& a = before[i];
    const auto& b = after[i];
    FUZZ_CHECK(a.name == b.name && a.dtype == b.dtype && a.shape == b.shape &&
                   a.end - a.begin == b.end - b.begin,
               "entry survives a round trip");
  }
  return 0;
}
