#include "common/tensor_chunks.h"

#include <numeric>

#include "common/grpc_status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lensgrid {
namespace {

TensorBytes Bytes(std::string name, std::vector<int64_t> shape,
                  TensorDType dtype = TensorDType::kF32) {
  int64_t n = std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
  auto data = std::make_shared<std::vector<uint8_t>>(n * DTypeSize(dtype));
  std::iota(data->begin(), data->end(), static_cast<uint8_t>(name.size()));
  TensorBytes t{std::move(name), dtype, std::move(shape), {data->data(), data->size()}, data};
  return t;
}

std::vector<v1::TensorChunk> Split(std::vector<TensorBytes> tensors, size_t chunk) {
  ChunkCursor cursor(std::move(tensors), chunk);
  std::vector<v1::TensorChunk> out;
  v1::TensorChunk c;
  while (cursor.Next(&c)) out.push_back(c);
  return out;
}

TEST(TensorChunksTest, RoundTripsAnySizeInOrder) {
  for (size_t chunk : {1, 7, 64, 4096, 1 << 20}) {
    std::vector<TensorBytes> tensors = {Bytes("a", {3, 5}), Bytes("empty", {0, 4}),
                                        Bytes("scalar", {}), Bytes("ids", {16}, TensorDType::kI64)};
    ChunkCursor meta_cursor(tensors, chunk);
    auto metas = meta_cursor.Metas();
    TensorAssembler assembler;
    assembler.Expect(metas);
    for (auto& c : Split(tensors, chunk)) {
      EXPECT_LE(c.data().size(), chunk);
      ASSERT_TRUE(assembler.Add(c).ok());
    }
    auto got = assembler.Finish();
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), 4u);
    for (size_t i = 0; i < tensors.size(); ++i) {
      EXPECT_EQ((*got)[i].name, tensors[i].name);
      EXPECT_EQ((*got)[i].shape, tensors[i].shape);
      EXPECT_EQ((*got)[i].data, std::string(tensors[i].bytes.begin(), tensors[i].bytes.end()));
    }
  }
}

TEST(TensorChunksTest, OnlyTheFirstChunkCarriesTheShape) {
  auto chunks = Split({Bytes("a", {10})}, 16);
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(chunks[0].total_bytes(), 40u);
  EXPECT_EQ(chunks[0].shape_size(), 1);
  EXPECT_EQ(chunks[1].shape_size(), 0);
  EXPECT_EQ(chunks[2].offset(), 32u);
}

TEST(TensorChunksTest, AssemblerRejectsBrokenStreams) {
  auto chunks = Split({Bytes("a", {10})}, 16);
  {
    TensorAssembler a;
    EXPECT_EQ(a.Add(chunks[1]).code(),
              absl::StatusCode::kInternal);  // no start
  }
  {
    TensorAssembler a;
    ASSERT_TRUE(a.Add(chunks[0]).ok());
    EXPECT_EQ(a.Add(chunks[2]).code(), absl::StatusCode::kInternal);  // gap
  }
  {
    TensorAssembler a;
    ASSERT_TRUE(a.Add(chunks[0]).ok());
    EXPECT_THAT(a.Finish().status().message(), ::testing::HasSubstr("ended inside"));
  }
  {
    auto bad = chunks[0];
    bad.set_total_bytes(12);
    TensorAssembler a;
    EXPECT_EQ(a.Add(bad).code(), absl::StatusCode::kInternal);
  }
}

TEST(TensorChunksTest, ValidateTensorNamesWhatIsWrong) {
  v1::Tensor t;
  t.set_dtype(v1::F32);
  t.add_shape(2);
  t.add_shape(3);
  t.set_data(std::string(24, '\0'));
  EXPECT_TRUE(ValidateTensor(t, "x").ok());
  t.set_data(std::string(20, '\0'));
  EXPECT_THAT(ValidateTensor(t, "value").message(),
              ::testing::HasSubstr("value: F32 [2, 3] needs 24 bytes of data, got 20"));
  t.set_shape(0, -2);
  EXPECT_THAT(ValidateTensor(t, "value").message(), ::testing::HasSubstr("negative"));
  t.set_shape(0, int64_t{1} << 40);
  t.set_shape(1, int64_t{1} << 40);
  EXPECT_EQ(ValidateTensor(t, "value").code(), absl::StatusCode::kInvalidArgument);
  t.set_dtype(v1::DTYPE_UNSPECIFIED);
  EXPECT_THAT(ValidateTensor(t, "value").message(), ::testing::HasSubstr("dtype"));
}

TEST(GrpcStatusTest, CodesAndMessagesMapOneToOne) {
  for (int code = 0; code <= 16; ++code) {
    absl::Status s(static_cast<absl::StatusCode>(code), code == 0 ? "" : "why");
    grpc::Status g = ToGrpcStatus(s);
    EXPECT_EQ(static_cast<int>(g.error_code()), code);
    EXPECT_EQ(FromGrpcStatus(g), s);
  }
}

}  // namespace
}  // namespace lensgrid
