// The Hugging Face loader: round trips, dtypes, and every way a checkpoint can be wrong.
#include "worker/model/weights.h"

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/model/test_util.h"
#include "worker/model/hooked_transformer.h"
#include "worker/model/tensor_io.h"

namespace lensgrid {
namespace {

using ::lensgrid::testing::AllClose;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

HookedTransformerConfig TinyConfig() {
  return ::lensgrid::testing::TestConfig(2, 2, 16, 64, 8, 30);
}

class WeightsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::lensgrid::testing::MakeTempDir(
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    weights_ = RandomWeights(TinyConfig(), 3);
    ASSERT_TRUE(SaveHfCheckpoint(weights_, TinyConfig(), dir_, /*f16=*/false).ok());
    tensors_ = ReadTensorFile(path()).value();
  }
  std::string path() const { return dir_ + "/model.safetensors"; }
  void Rewrite() { ASSERT_TRUE(WriteTensorFile(path(), tensors_).ok()); }
  absl::Status LoadStatus() {
    LoadReport report;
    return LoadHfWeights(path(), TinyConfig(), &report).status();
  }

  std::string dir_;
  GPT2Weights weights_;
  NamedTensors tensors_;
};

torch::Tensor Logits(const HookedTransformer& model) {
  ForwardInput in;
  in.tokens = torch::tensor({{1, 5, 9, 28, 3}}, torch::kInt64);
  return model.Run(in, {}).value().logits;
}

TEST_F(WeightsTest, SavedCheckpointLoadsBackToTheSameModel) {
  LoadOptions options;
  options.processing = ProcessingOptions::None();
  auto loaded = HookedTransformer::FromPretrained(dir_, options).value();
  auto direct = HookedTransformer::FromWeights(TinyConfig(), weights_).value();
  EXPECT_TRUE(torch::equal(Logits(*loaded), Logits(*direct)));
  EXPECT_TRUE(loaded->load_report().lm_head_tied);
  EXPECT_TRUE(loaded->load_report().unknown_tensors.empty());
  EXPECT_EQ(loaded->load_report().weights_sha256.size(), 64u);
}

TEST_F(WeightsTest, HalfPrecisionFilesLoad) {
  auto reference = HookedTransformer::FromWeights(TinyConfig(), weights_).value();
  for (auto type : {torch::kFloat16, torch::kBFloat16}) {
    NamedTensors converted;
    for (auto& [n, t] : tensors_) converted.emplace_back(n, t.to(type));
    ASSERT_TRUE(WriteTensorFile(path(), converted).ok());
    LoadOptions options;
    options.processing = ProcessingOptions::None();
    auto model = HookedTransformer::FromPretrained(dir_, options);
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_TRUE(AllClose(Logits(**model), Logits(*reference), 2e-2, c10::toString(type)));
  }
}

TEST_F(WeightsTest, MissingTensorIsNamedWithItsShape) {
  tensors_.erase(tensors_.begin() + 5);  // transformer.h.0.attn.c_attn.bias
  Rewrite();
  auto status = LoadStatus();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("missing tensor \"h.0.attn.c_attn.bias\""));
  EXPECT_THAT(status.message(), HasSubstr("[48]"));
}

TEST_F(WeightsTest, MisShapedTensorNamesBothShapes) {
  for (auto& [n, t] : tensors_) {
    if (n == "transformer.h.1.mlp.c_fc.weight") t = torch::zeros({64, 16});  // transposed
  }
  Rewrite();
  auto status = LoadStatus();
  EXPECT_THAT(status.message(),
              HasSubstr("tensor \"transformer.h.1.mlp.c_fc.weight\" has shape [64, 16], "
                        "expected [16, 64]"));
}

TEST_F(WeightsTest, UnknownExtraTensorsAreReportedAndBuffersIgnored) {
  tensors_.emplace_back("transformer.h.0.attn.bias", torch::ones({1, 1, 8, 8}));
  tensors_.emplace_back("transformer.h.0.attn.masked_bias", torch::tensor(-1e4));
  tensors_.emplace_back("transformer.h.0.adapter.weight", torch::ones({2}));
  tensors_.emplace_back("lm_head.weight", torch::randn({30, 16}));
  Rewrite();
  LoadReport report;
  auto w = LoadHfWeights(path(), TinyConfig(), &report);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_THAT(report.unknown_tensors, ElementsAre("transformer.h.0.adapter.weight"));
  EXPECT_FALSE(report.lm_head_tied);
}

TEST_F(WeightsTest, UnsupportedDtypeIsNamed) {
  for (auto& [n, t] : tensors_) {
    if (n == "transformer.wpe.weight") t = t.to(torch::kInt32);
  }
  Rewrite();
  EXPECT_THAT(LoadStatus().message(),
              HasSubstr("\"transformer.wpe.weight\": dtype I32 is not a floating type"));
}

TEST_F(WeightsTest, TruncatedFileIsAClearError) {
  std::ifstream in(path(), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  std::ofstream(path(), std::ios::binary | std::ios::trunc)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  auto status = LoadStatus();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("out of range"));
  EXPECT_THAT(status.message(), HasSubstr("truncated"));
}

TEST_F(WeightsTest, MissingFilesAreNotFound) {
  EXPECT_EQ(HookedTransformer::FromPretrained(dir_ + "/nope").status().code(),
            absl::StatusCode::kNotFound);
  std::remove(path().c_str());
  auto status = HookedTransformer::FromPretrained(dir_).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr("model.safetensors"));
}

}  // namespace
}  // namespace lensgrid
