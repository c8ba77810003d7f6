// Golden tests: lensgrid's GPT-2 against an independent float64 reference of
// Hugging Face's GPT-2 (tests/reference/hf_gpt2.py), on random checkpoints the
// reference writes in HF layout.
#include <map>

#include "common/safetensors.h"
#include "gtest/gtest.h"
#include "tests/worker/model/test_util.h"
#include "worker/model/hooked_transformer.h"
#include "worker/model/tensor_io.h"

namespace lensgrid {
namespace {

using ::lensgrid::testing::AllClose;

struct GoldenCase {
  std::string name;
  std::string reference_args;
};

class GoldenTest : public ::testing::TestWithParam<GoldenCase> {
 protected:
  void SetUp() override {
    dir_ = ::lensgrid::testing::MakeTempDir("golden_" + GetParam().name);
    ASSERT_NO_FATAL_FAILURE(::lensgrid::testing::RunReference(dir_, GetParam().reference_args));
    auto ref = ReadTensorFile(dir_ + "/reference.safetensors");
    ASSERT_TRUE(ref.ok()) << ref.status();
    for (auto& [name, t] : *ref) ref_[name] = t;
  }

  std::shared_ptr<HookedTransformer> Load(const ProcessingOptions& processing) {
    LoadOptions options;
    options.processing = processing;
    auto model = HookedTransformer::FromPretrained(dir_, options);
    EXPECT_TRUE(model.ok()) << model.status();
    return model.ok() ? *model : nullptr;
  }

  std::string dir_;
  std::map<std::string, torch::Tensor> ref_;
};

TEST_P(GoldenTest, UnprocessedLogitsAndActivationsMatchReference) {
  auto model = Load(ProcessingOptions::None());
  ASSERT_NE(model, nullptr);
  EXPECT_TRUE(model->load_report().unknown_tensors.empty());
  ForwardInput input;
  input.tokens = ref_.at("tokens");
  ForwardOptions options;
  options.return_type = ForwardReturn::kBoth;
  CacheOptions cache_options;
  cache_options.regexes = {"hook_(resid_pre|attn_out|mlp_out|resid_post|pattern)$",
                           "^ln_final.hook_normalized$"};
  ActivationCache cache;
  auto out = model->RunWithCache(input, options, cache_options, &cache);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(AllClose(out->logits, ref_.at("logits"), 1e-4, "logits"));
  EXPECT_TRUE(AllClose(out->loss, ref_.at("loss"), 1e-4, "loss"));
  int compared = 0;
  for (const auto& [name, expected] : ref_) {
    if (name.rfind("blocks.", 0) != 0 && name.rfind("ln_final.", 0) != 0) continue;
    auto actual = cache.Get(name);
    ASSERT_TRUE(actual.ok()) << actual.status();
    EXPECT_TRUE(AllClose(*actual, expected, 1e-4, name));
    ++compared;
  }
  EXPECT_EQ(compared, 5 * model->cfg().n_layers + 1);
}

TEST_P(GoldenTest, PerTokenLossMatchesReference) {
  auto model = Load(ProcessingOptions::None());
  ASSERT_NE(model, nullptr);
  ForwardInput input;
  input.tokens = ref_.at("tokens");
  ForwardOptions options;
  options.return_type = ForwardReturn::kLoss;
  options.per_token_loss = true;
  auto out = model->Run(input, options);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(AllClose(out->loss, ref_.at("per_token_loss"), 1e-4, "per_token_loss"));
  EXPECT_FALSE(out->logits.defined());
}

TEST_P(GoldenTest, ProcessedLogProbsMatchReference) {
  auto model = Load(ProcessingOptions{});
  ASSERT_NE(model, nullptr);
  EXPECT_TRUE(model->processed());
  ForwardInput input;
  input.tokens = ref_.at("tokens");
  auto out = model->Run(input, {});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(AllClose(torch::log_softmax(out->logits, -1),
                       torch::log_softmax(ref_.at("logits").to(torch::kFloat64), -1), 1e-4,
                       "log_softmax(logits)"));
  // Processing moves logits by a per-position constant only.
  torch::Tensor shift = out->logits - ref_.at("logits");
  EXPECT_TRUE(AllClose(shift, shift.mean(-1, true).expand_as(shift), 1e-4, "logit shift"));
  // Patterns do not depend on processing.
  ActivationCache cache;
  CacheOptions cache_options;
  cache_options.names = {"pattern0"};
  ASSERT_TRUE(model->RunWithCache(input, {}, cache_options, &cache).ok());
  EXPECT_TRUE(AllClose(cache.Get("pattern", 0).value(), ref_.at("blocks.0.attn.hook_pattern"), 1e-4,
                       "pattern0"));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GoldenTest,
    ::testing::Values(
        GoldenCase{"TwoLayersFourHeadsF32Prefixed",
                   "--n-layer 2 --n-head 4 --n-embd 64 --vocab 101 --dtype F32 --seed 1"},
        GoldenCase{"GeluF16NoPrefixLmHead",
                   "--n-layer 3 --n-head 4 --n-embd 64 --vocab 97 --dtype F16 --no-prefix "
                   "--lm-head --activation gelu --seed 2 --batch 3 --seq 9"},
        GoldenCase{"Gpt2SmallWidthsF16NoPrefix",
                   "--n-layer 2 --n-head 12 --n-embd 768 --vocab 211 --dtype F16 --no-prefix "
                   "--lm-head --seed 3"},
        GoldenCase{"Gpt2SmallWidthsF32Prefixed",
                   "--n-layer 2 --n-head 12 --n-embd 768 --vocab 211 --dtype F32 --seed 4 "
                   "--seq 16 --n-positions 64"}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace lensgrid
