#include "common/safetensors.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lensgrid {
namespace {

using ::testing::HasSubstr;

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// A file from a header JSON and `data_bytes` bytes of data.
std::string FileWithHeader(const std::string& json, size_t data_bytes) {
  std::string out(8, '\0');
  uint64_t len = json.size();
  std::memcpy(out.data(), &len, 8);  // little-endian on x86
  return out + json + std::string(data_bytes, '\x01');
}

TEST(SafetensorsTest, RoundTripsTensorsAndMetadata) {
  std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f};
  std::vector<int64_t> b = {5, 17, 300};
  auto bytes =
      SerializeSafetensors({{"a", TensorDType::kF32, {2, 3}, a.data(), a.size() * 4},
                            {"blocks.0.hook_z", TensorDType::kI64, {3}, b.data(), b.size() * 8}},
                           {{"format", "pt"}});
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto header = ParseSafetensorsHeader(Bytes(*bytes), "mem");
  ASSERT_TRUE(header.ok()) << header.status();
  ASSERT_EQ(header->entries.size(), 2u);
  EXPECT_EQ(header->data_start % 8, 0u);
  EXPECT_EQ(header->metadata.at("format"), "pt");
  const auto& ea = header->entries[0];
  EXPECT_EQ(ea.name, "a");
  EXPECT_EQ(ea.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(0, std::memcmp(bytes->data() + header->data_start + ea.begin, a.data(), 24));
  const auto& eb = header->entries[1];
  EXPECT_EQ(eb.dtype, TensorDType::kI64);
  EXPECT_EQ(0, std::memcmp(bytes->data() + header->data_start + eb.begin, b.data(), 24));
}

TEST(SafetensorsTest, OpensAMemoryMappedFile) {
  std::vector<uint16_t> half = {0x3c00, 0x4000};
  std::string path = ::testing::TempDir() + "/st_open.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, {{"h", TensorDType::kF16, {2}, half.data(), 4}}).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsEntry* e = (*file)->Find("h");
  ASSERT_NE(e, nullptr);
  auto data = (*file)->Data(*e);
  ASSERT_EQ(data.size(), 4u);
  EXPECT_EQ(0, std::memcmp(data.data(), half.data(), 4));
  EXPECT_EQ((*file)->Find("missing"), nullptr);
  std::remove(path.c_str());
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  auto file = SafetensorsFile::Open("/nonexistent/model.safetensors");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(file.status().message(), HasSubstr("/nonexistent/model.safetensors"));
}

// A tensor of zero bytes overlaps nothing: it may sit in a gap, at another
// tensor's offset or inside its span. What such a file holds must also come
// back from what we write for it (found by fuzz_safetensors: a zero-byte
// tensor after a gap was refused once the gap was closed on writing).
TEST(SafetensorsTest, ZeroByteTensorsOverlapNothingAndRoundTrip) {
  const std::string file =
      FileWithHeader(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                     R"("z":{"dtype":"U8","shape":[0],"data_offsets":[4,4]},)"
                     R"("in":{"dtype":"F32","shape":[2,0],"data_offsets":[10,10]},)"
                     R"("m":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})",
                     12);
  auto header = ParseSafetensorsHeader(Bytes(file), "gaps.safetensors");
  ASSERT_TRUE(header.ok()) << header.status();
  std::vector<std::string> names;
  std::vector<SafetensorsTensorView> views;
  for (const auto& e : header->entries) {
    names.push_back(e.name);
    views.push_back(
        {e.name, e.dtype, e.shape, file.data() + header->data_start + e.begin, e.end - e.begin});
  }
  EXPECT_EQ(names, (std::vector<std::string>{"a", "z", "m", "in"}));  // by offset
  auto again = SerializeSafetensors(views);
  ASSERT_TRUE(again.ok()) << again.status();
  auto reparsed = ParseSafetensorsHeader(Bytes(*again), "again.safetensors");
  ASSERT_TRUE(reparsed.ok()) << reparsed.status();
  ASSERT_EQ(reparsed->entries.size(), 4u);
  for (const auto& e : reparsed->entries) {
    const auto it = std::find(names.begin(), names.end(), e.name);
    ASSERT_NE(it, names.end()) << e.name;
    const auto& before = header->entries[it - names.begin()];
    EXPECT_EQ(e.shape, before.shape) << e.name;
    EXPECT_EQ(0, std::memcmp(again->data() + reparsed->data_start + e.begin,
                             file.data() + header->data_start + before.begin, e.end - e.begin))
        << e.name;
  }
}

struct BadCase {
  std::string name;
  std::string file;
  std::string expected_message;
};

class BadSafetensorsTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadSafetensorsTest, IsAClearError) {
  auto header = ParseSafetensorsHeader(Bytes(GetParam().file), "model.safetensors");
  ASSERT_FALSE(header.ok());
  EXPECT_EQ(header.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(header.status().message(), HasSubstr("model.safetensors"));
  EXPECT_THAT(header.status().message(), HasSubstr(GetParam().expected_message));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadSafetensorsTest,
    ::testing::Values(
        BadCase{"TooShort", "abc", "shorter than the 8-byte header length"},
        BadCase{"HeaderPastEnd", FileWithHeader("{}", 0).substr(0, 9), "exceeds the file"},
        BadCase{"NotJson", FileWithHeader("{not json", 0), "not a JSON object"},
        BadCase{"OffsetsOutOfRange",
                FileWithHeader(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8),
                "tensor \"w\": data_offsets [0, 16] out of range"},
        BadCase{"SizeMismatch",
                FileWithHeader(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", 16),
                "needs 12 bytes but data_offsets span 16"},
        BadCase{"UnsupportedDtype",
                FileWithHeader(R"({"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", 1),
                "unsupported dtype \"F8_E4M3\""},
        BadCase{"NegativeDim",
                FileWithHeader(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4),
                "not a non-negative integer"},
        BadCase{"Overlap",
                FileWithHeader(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                               12),
                "overlaps"},
        BadCase{"MissingDtype", FileWithHeader(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4),
                "missing string field \"dtype\""}),
    [](const auto& info) { return info.param.name; });

TEST(SafetensorsTest, SerializeRejectsWrongByteCount) {
  float x = 1;
  auto bytes = SerializeSafetensors({{"x", TensorDType::kF32, {2}, &x, 4}});
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bytes.status().message(), HasSubstr("needs 8 bytes, got 4"));
}

}  // namespace
}  // namespace lensgrid
