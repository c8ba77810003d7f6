#include "worker/model/analysis/shard.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/model/test_util.h"

namespace lensgrid {
namespace {

using ::testing::HasSubstr;

std::shared_ptr<HookedTransformer> TinyModel() {
  ModelConfig cfg = ::lensgrid::testing::TestConfig(2, 2, 16, 32, 16, 20);
  return HookedTransformer::FromWeights(cfg, RandomWeights(cfg, 1)).value();
}

constexpr char kPrompts[] =
    R"([{"tokens": [19, 1, 2, 3], "answer": 4, "wrong": 5, "corrupted_tokens": [19, 6, 7, 8]},
        {"tokens": [19, 9, 10], "answer": 11, "wrong": 12, "corrupted_tokens": [19, 13, 14]},
        {"tokens": [19, 2, 4, 6, 8], "answer": 1, "wrong": 3, "corrupted_tokens": [19, 1, 1, 1, 1]}])";

TEST(ShardTest, RunsTheRequestedRanges) {
  auto model = TinyModel();
  std::string spec = std::string(R"({"method": "patch-heads", "metric": "logit-diff",
      "dataset": {"prompts": )") + kPrompts + R"(}, "prompt_begin": 1, "prompt_end": 3,
      "component_begin": 1, "component_end": 4})";
  auto tensors = RunSearchShard(*model, nullptr, spec);
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  std::map<std::string, torch::Tensor> by_name(tensors->begin(), tensors->end());
  EXPECT_EQ(by_name.at("baseline").sizes(), at::IntArrayRef({2}));
  EXPECT_EQ(by_name.at("reference").sizes(), at::IntArrayRef({2}));
  EXPECT_EQ(by_name.at("delta").sizes(), at::IntArrayRef({2, 3}));

  // The same numbers as the whole search.
  auto request = ParseSearchRequest(spec).value();
  Dataset ds = MakeRequestDataset(request, model->cfg(), nullptr).value();
  auto whole = RunSearch(*model, ds, request.spec).value();
  EXPECT_TRUE(::lensgrid::testing::AllClose(
      by_name.at("delta"), whole.outputs[0].per_prompt.slice(0, 1, 3).slice(1, 1, 4), 1e-6,
      "shard delta"));
}

TEST(ShardTest, BadSpecsAreClearErrors) {
  auto model = TinyModel();
  auto err = [&](const std::string& spec) { return RunSearchShard(*model, nullptr, spec).status(); };
  EXPECT_THAT(err("[]").message(), HasSubstr("not a JSON object"));
  EXPECT_THAT(err(R"({"dataset": {"name": "induction"}})").message(), HasSubstr("needs \"method\""));
  EXPECT_THAT(err(R"({"method": "ablate-heads"})").message(), HasSubstr("\"dataset\""));
  EXPECT_THAT(err(R"({"method": "x", "dataset": {"name": "induction"}})").message(),
              HasSubstr("unknown method"));
  EXPECT_THAT(err(R"({"method": "ablate-heads", "dataset": {"prompts": [{"tokens": [1]}]}})")
                  .message(),
              HasSubstr("inline prompt:1: missing \"answer\""));
  EXPECT_THAT(err(R"({"method": "ablate-heads", "dataset": {"name": "ioi"}})").message(),
              HasSubstr("needs tokenizer files"));
  EXPECT_THAT(err(R"({"method": "ablate-heads", "prompt_end": "x", "dataset": {"name": "induction"}})")
                  .message(),
              HasSubstr("\"prompt_end\" must be an integer"));
}

}  // namespace
}  // namespace lensgrid
