// The Hugging Face loader: round trips, dtypes, and every way a checkpoint can be wrong.
#include "worker/model/weights.h"

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
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

// ---- Sharded checkpoints: model.safetensors.index.json and its shards, as
// transformers' save_pretrained writes them past max_shard_size.

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

void WriteAll(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

class ShardedWeightsTest : public WeightsTest {
 protected:
  void SetUp() override {
    WeightsTest::SetUp();
    single_sha_ = Sha256FileHex(path()).value();
    // Three shards in file order, as save_pretrained fills them; the index maps every tensor.
    const size_t n = tensors_.size();
    nlohmann::json map = nlohmann::json::object();
    int64_t total = 0;
    for (int k = 0; k < 3; ++k) {
      const std::string file = absl::StrFormat("model-%05d-of-%05d.safetensors", k + 1, 3);
      NamedTensors part(tensors_.begin() + n * k / 3, tensors_.begin() + n * (k + 1) / 3);
      for (const auto& [name, t] : part) {
        map[name] = file;
        total += static_cast<int64_t>(t.nbytes());
      }
      ASSERT_TRUE(WriteTensorFile(dir_ + "/" + file, part).ok());
      shards_.push_back(file);
    }
    index_ = {{"metadata", {{"total_size", total}}}, {"weight_map", map}};
    WriteAll(dir_ + "/model.safetensors.index.json", index_.dump(2));
    std::remove(path().c_str());
  }
  void WriteIndex(const nlohmann::json& index) {
    WriteAll(dir_ + "/model.safetensors.index.json", index.dump(2));
  }
  absl::Status DirStatus() {
    LoadReport report;
    return LoadHfModelDir(dir_, TinyConfig(), &report).status();
  }

  std::string single_sha_;
  std::vector<std::string> shards_;
  nlohmann::json index_;
};

TEST_F(ShardedWeightsTest, LoadsTheSameModelAsOneFile) {
  LoadOptions options;
  options.processing = ProcessingOptions::None();
  auto loaded = HookedTransformer::FromPretrained(dir_, options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto direct = HookedTransformer::FromWeights(TinyConfig(), weights_).value();
  EXPECT_TRUE(torch::equal(Logits(**loaded), Logits(*direct)));
  const LoadReport& report = (*loaded)->load_report();
  EXPECT_TRUE(report.sharded);
  EXPECT_TRUE(report.lm_head_tied);
  EXPECT_TRUE(report.unknown_tensors.empty());
  // The identity: the index's and each shard's sha256, in the documented text.
  std::string text = "lensgrid sharded safetensors v1\nmodel.safetensors.index.json " +
                     Sha256FileHex(dir_ + "/model.safetensors.index.json").value() + "\n";
  for (const std::string& f : shards_)
    text += f + " " + Sha256FileHex(dir_ + "/" + f).value() + "\n";
  EXPECT_EQ(report.weights_sha256, Sha256Hex(text));
  EXPECT_NE(report.weights_sha256, single_sha_);
  // Processed (the default) as well, and another index is another identity.
  ASSERT_TRUE(HookedTransformer::FromPretrained(dir_).ok());
  WriteAll(dir_ + "/model.safetensors.index.json", index_.dump());
  EXPECT_NE(HookedTransformer::FromPretrained(dir_, options).value()->load_report().weights_sha256,
            report.weights_sha256);
}

TEST_F(ShardedWeightsTest, OneFileWinsOverAnIndex) {
  ASSERT_TRUE(WriteTensorFile(path(), tensors_).ok());
  WriteAll(dir_ + "/model.safetensors.index.json", "not even json");
  LoadReport report;
  ASSERT_TRUE(LoadHfModelDir(dir_, TinyConfig(), &report).ok());
  EXPECT_FALSE(report.sharded);
  EXPECT_EQ(report.weights_sha256, Sha256FileHex(path()).value());
}

TEST_F(ShardedWeightsTest, EveryWayAnIndexCanBeWrongIsNamed) {
  const std::string index_path = dir_ + "/model.safetensors.index.json";
  auto expect = [&](const nlohmann::json& index, absl::StatusCode code, const std::string& what) {
    WriteIndex(index);
    const absl::Status s = DirStatus();
    EXPECT_EQ(s.code(), code) << what << ": " << s;
    EXPECT_THAT(s.message(), HasSubstr(what));
  };
  nlohmann::json moved = index_;
  moved["weight_map"]["transformer.h.0.ln_1.weight"] = shards_[2];
  expect(moved, absl::StatusCode::kInvalidArgument,
         "maps tensor \"transformer.h.0.ln_1.weight\" to " + shards_[2] +
             ", which has no such tensor");
  nlohmann::json missing_shard = index_;
  missing_shard["weight_map"]["transformer.wte.weight"] = "model-00009-of-00009.safetensors";
  expect(missing_shard, absl::StatusCode::kNotFound,
         "names the shard model-00009-of-00009.safetensors, which is not in " + dir_);
  for (const std::string escape : {"../model.safetensors", "/etc/passwd", "a/./b", "sub\\x"}) {
    nlohmann::json bad = index_;
    bad["weight_map"]["transformer.wte.weight"] = escape;
    expect(bad, absl::StatusCode::kInvalidArgument, "which is not a file inside the model dir");
  }
  nlohmann::json not_a_name = index_;
  not_a_name["weight_map"]["transformer.wte.weight"] = 7;
  expect(not_a_name, absl::StatusCode::kInvalidArgument, "maps to 7, not a file name");
  expect(nlohmann::json{{"metadata", {}}}, absl::StatusCode::kInvalidArgument,
         "no \"weight_map\" object");
  expect(nlohmann::json{{"weight_map", nlohmann::json::object()}},
         absl::StatusCode::kInvalidArgument, "names no tensor");
  nlohmann::json lacking = index_;
  lacking["weight_map"].erase("transformer.h.1.attn.c_proj.bias");
  expect(lacking, absl::StatusCode::kInvalidArgument, "missing tensor \"h.1.attn.c_proj.bias\"");
  WriteAll(index_path, "{\"weight_map\": ");
  EXPECT_THAT(DirStatus().message(), HasSubstr(index_path + ": the index: not valid JSON"));
  std::remove(index_path.c_str());
  const absl::Status none = DirStatus();
  EXPECT_EQ(none.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(none.message(),
              HasSubstr("neither model.safetensors nor model.safetensors.index.json"));
}

}  // namespace
}  // namespace lensgrid
