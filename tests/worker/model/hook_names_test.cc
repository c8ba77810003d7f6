#include "worker/model/hook_names.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lensgrid {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ActNameTest, ExpandsTransformerLensShorthand) {
  EXPECT_EQ(ActName("pattern", 0), "blocks.0.attn.hook_pattern");
  EXPECT_EQ(ActName("attn", 3), "blocks.3.attn.hook_pattern");
  EXPECT_EQ(ActName("resid_post", -1, "", 12), "blocks.11.hook_resid_post");
  EXPECT_EQ(ActName("k6"), "blocks.6.attn.hook_k");
  EXPECT_EQ(ActName("scale4ln1"), "blocks.4.ln1.hook_scale");
  EXPECT_EQ(ActName("normalized2ln2"), "blocks.2.ln2.hook_normalized");
  EXPECT_EQ(ActName("scale"), "ln_final.hook_scale");
  EXPECT_EQ(ActName("post", 5), "blocks.5.mlp.hook_post");
  EXPECT_EQ(ActName("mlp_pre", 1), "blocks.1.mlp.hook_pre");
  EXPECT_EQ(ActName("z", 2), "blocks.2.attn.hook_z");
  EXPECT_EQ(ActName("attn_logits", 0), "blocks.0.attn.hook_attn_scores");
  EXPECT_EQ(ActName("mlp_out", 7), "blocks.7.hook_mlp_out");
  EXPECT_EQ(ActName("embed"), "hook_embed");
  EXPECT_EQ(ActName("hook_pos_embed"), "hook_pos_embed");
  EXPECT_EQ(ActName("blocks.2.hook_mlp_out"), "blocks.2.hook_mlp_out");
}

TEST(ClosestNamesTest, SuggestsTyposOnly) {
  std::vector<std::string> known = {"blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z",
                                    "blocks.1.attn.hook_pattern", "hook_embed"};
  EXPECT_THAT(ClosestNames("blocks.0.attn.hook_patern", known, 2),
              ElementsAre("blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"));
  EXPECT_TRUE(ClosestNames("something.else.entirely.different", known).empty());
  EXPECT_THAT(UnknownHookMessage("blocks.0.attn.hook_patern", known),
              HasSubstr("did you mean \"blocks.0.attn.hook_pattern\""));
}

}  // namespace
}  // namespace lensgrid
