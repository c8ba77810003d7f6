// MakeEdit: the one check of an intervention against an activation's layout,
// and ApplyEdit doing what the checked edit says.
#include "worker/model/activation_edit.h"

#include <torch/torch.h>

#include "gtest/gtest.h"

namespace lensgrid {
namespace {

// hook_z-like: [batch 2, pos 3, head 4, d_head 5].
ActivationLayout ZLayout() { return {{2, 3, 4, 5}, 1, 2}; }

absl::StatusOr<ActivationEdit> Make(const EditRequest& r,
                                    const ActivationLayout& layout = ZLayout()) {
  return MakeEdit(r, layout, "blocks.0.attn.hook_z", torch::kCPU, torch::kFloat32);
}

std::string Message(const EditRequest& r, const ActivationLayout& layout = ZLayout()) {
  absl::StatusOr<ActivationEdit> e = Make(r, layout);
  EXPECT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(e.status().message());
}

TEST(MakeEditTest, ABadRequestSaysWhatIsWrong) {
  EditRequest r;
  r.positions = {3};
  EXPECT_NE(Message(r).find("position 3 is outside the input's 3 positions"), std::string::npos);
  r.positions = {0, -3};
  EXPECT_NE(Message(r).find("position -3 is repeated"), std::string::npos);
  r.positions = {0};
  EXPECT_NE(Message(r, {{2, 3, 8}, std::nullopt, std::nullopt}).find("no position axis"),
            std::string::npos);
  r = {};
  r.head = 4;
  EXPECT_NE(Message(r).find("head 4 is outside [0, 4)"), std::string::npos);
  EXPECT_NE(Message(r, {{2, 3, 8}, 1, std::nullopt}).find("has no head axis"), std::string::npos);
  r = {};
  r.op = EditOp::kSet;
  EXPECT_NE(Message(r).find("SET needs a value tensor"), std::string::npos);
  r.op = EditOp::kZero;
  r.value = torch::zeros({5});
  EXPECT_NE(Message(r).find("ZERO takes no value tensor"), std::string::npos);
  r.op = EditOp::kAdd;
  r.value = torch::zeros({5}, torch::kInt64);
  EXPECT_NE(Message(r).find("dtype must be"), std::string::npos);
  r.value = torch::zeros({4, 5});  // the region of head 2 at positions {0, 1} is [2, 2, 5]
  r.head = 2;
  r.positions = {0, 1};
  EXPECT_NE(Message(r).find("does not broadcast to the edited region [2, 2, 5]"),
            std::string::npos);
}

TEST(MakeEditTest, ACheckedEditChangesOnlyItsRegion) {
  EditRequest r;
  r.op = EditOp::kAdd;
  r.head = 1;
  r.positions = {-1};
  r.value = torch::ones({5});
  absl::StatusOr<ActivationEdit> e = Make(r);
  ASSERT_TRUE(e.ok()) << e.status();
  torch::Tensor act = torch::zeros({2, 3, 4, 5});
  ApplyEdit(*e, act);
  EXPECT_EQ(act.sum().item<float>(), 2 * 5);  // batch 2 x d_head 5 ones
  EXPECT_TRUE(torch::equal(act.index({torch::indexing::Slice(), 2, 1}), torch::ones({2, 5})));
  EXPECT_EQ(act.index({torch::indexing::Slice(), 0}).sum().item<float>(), 0);
}

}  // namespace
}  // namespace lensgrid
