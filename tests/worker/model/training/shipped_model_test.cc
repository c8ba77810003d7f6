// Facts about the embedded default model, models/lensgrid-tiny, read from its
// committed weights (nothing is trained here). See its MODEL_CARD.md.
#include <fstream>
#include <iterator>

#include "gtest/gtest.h"
#include "tests/worker/model/test_util.h"
#include "worker/model/analysis/search.h"
#include "worker/model/hooked_transformer.h"
#include "worker/model/training/evaluate.h"
#include "worker/model/training/train_data.h"

namespace lensgrid {
namespace {

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
  // The card's promise: a head with previous-token score >= 0.6 (L0H1: 0.915, MODEL_CARD.md).
  EXPECT_GE(facts_->top_previous.score, 0.6) << facts_->top_previous.name();
  const double mul =
      facts_->previous_token[facts_->top_previous.layer][facts_->top_previous.head].item<double>();
  EXPECT_GE(mul, 0.6);
  EXPECT_LT(facts_->top_previous.layer, facts_->top_induction.layer);
  // It is causal: the induction head reads it.
  EXPECT_GE(
      facts_->ablation_delta[facts_->top_previous.layer][facts_->top_previous.head].item<double>(),
      1.0);
}

TEST_F(ShippedModelTest, AblatingTheInductionHeadCostsOverANat) {
  // The repeated half is predictable only by induction.
  EXPECT_LT(facts_->clean_loss, 3.0);
  EXPECT_GE(facts_->top_induction_ablation_delta, 1.0) << facts_->top_induction.name();
}

TEST_F(ShippedModelTest, HasNoIoiBehaviourToSearch) {
  // Trained without IOI sentences: with GPT-2's first 50 merges no name is one
  // token, so the IOI data cannot be built and the demo skips the IOI search.
  auto tok = LoadTokenizerForModel(ModelDir()).value();
  auto data = TrainData::Create(TrainDataOptions{}, (*model_)->cfg().d_vocab, tok.get());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kFailedPrecondition) << data.status();
  auto ioi = MakeDataset({"ioi", 8, 0, 16}, (*model_)->cfg(), tok.get());
  EXPECT_EQ(ioi.status().code(), absl::StatusCode::kFailedPrecondition) << ioi.status();
  std::ifstream card(ModelDir() + "/MODEL_CARD.md");
  std::string text((std::istreambuf_iterator<char>(card)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("## IOI-like behaviour\n\nNot trained"), std::string::npos);
  // The card names the model, not a path of the machine that trained it.
  EXPECT_EQ(text.rfind("# lensgrid-tiny: ", 0), 0u) << text.substr(0, 80);
  EXPECT_EQ(text.find("/tmp/"), std::string::npos);
}

}  // namespace
}  // namespace lensgrid
