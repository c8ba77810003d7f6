#include "worker/model/config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lensgrid {
namespace {

using ::testing::HasSubstr;

TEST(ConfigTest, ParsesHuggingFaceGpt2Config) {
  auto cfg = ParseHfConfig(R"({"model_type": "gpt2", "n_layer": 12, "n_head": 12,
      "n_embd": 768, "n_positions": 1024, "vocab_size": 50257, "n_inner": null,
      "layer_norm_epsilon": 1e-05, "activation_function": "gelu_new",
      "bos_token_id": 50256, "eos_token_id": 50256})",
                           "config.json");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->n_layers, 12);
  EXPECT_EQ(cfg->d_head, 64);
  EXPECT_EQ(cfg->d_mlp, 3072);
  EXPECT_EQ(cfg->n_ctx, 1024);
  EXPECT_EQ(cfg->act_fn, Activation::kGeluNew);
  EXPECT_EQ(cfg->bos_token_id, 50256);
}

TEST(ConfigTest, RoundTripsThroughJson) {
  HookedTransformerConfig cfg = ModelConfigPreset("gpt2-medium").value();
  cfg.act_fn = Activation::kGelu;
  cfg.attn_only = true;
  auto back = ParseHfConfig(ModelConfigToHfJson(cfg), "mem");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->n_layers, 24);
  EXPECT_EQ(back->d_model, 1024);
  EXPECT_EQ(back->act_fn, Activation::kGelu);
  EXPECT_TRUE(back->attn_only);
}

TEST(ConfigTest, PresetsHaveGpt2Sizes) {
  EXPECT_EQ(ModelConfigPreset("gpt2")->d_model, 768);
  EXPECT_EQ(ModelConfigPreset("gpt2-large")->n_layers, 36);
  EXPECT_EQ(ModelConfigPreset("gpt2-xl")->n_heads, 25);
  EXPECT_EQ(ModelConfigPreset("gpt2-xl")->d_head, 64);
  EXPECT_EQ(ModelConfigPreset("gpt3").status().code(), absl::StatusCode::kNotFound);
}

TEST(ConfigTest, MissingAndBadFieldsAreNamed) {
  auto missing = ParseHfConfig(R"({"n_layer": 2, "n_head": 2, "n_embd": 8, "vocab_size": 5})",
                               "dir/config.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr("dir/config.json"));
  EXPECT_THAT(missing.status().message(), HasSubstr("\"n_positions\" is missing"));

  auto bad = ParseHfConfig(
      R"({"n_layer": 2, "n_head": 3, "n_embd": 8, "n_positions": 4, "vocab_size": 5})", "c");
  EXPECT_THAT(bad.status().message(), HasSubstr("not divisible by n_head"));

  auto act = ParseHfConfig(R"({"n_layer": 2, "n_head": 2, "n_embd": 8, "n_positions": 4,
      "vocab_size": 5, "activation_function": "swish"})",
                           "c");
  EXPECT_THAT(act.status().message(), HasSubstr("\"swish\" is not supported"));

  EXPECT_THAT(ParseHfConfig("[1, 2]", "c").status().message(), HasSubstr("not a JSON object"));
  EXPECT_EQ(LoadModelConfig("/nonexistent").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace lensgrid
