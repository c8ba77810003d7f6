// A few training steps on a tiny config: the loss falls, the unembedding stays
// tied, and the checkpoint loads back as any GPT-2 checkpoint does.
#include "worker/model/training/trainer.h"

#include "gtest/gtest.h"
#include "tests/worker/model/test_util.h"
#include "worker/model/hooked_transformer.h"

namespace lensgrid {
namespace {

HookedTransformerConfig TinyConfig() {
  // 96 token ids, the last one <|endoftext|>.
  return ::lensgrid::testing::TestConfig(2, 2, 32, 64, 48, 96);
}

TrainDataOptions TinyData() {
  TrainDataOptions o;
  o.seq_len = 48;
  o.max_span = 8;
  o.max_gap = 8;
  o.chain_alphabet = 16;
  o.ioi_fraction = 0;  // no tokenizer
  o.repeats_fraction = 0.5;
  o.chain_fraction = 0.5;
  return o;
}

TEST(TrainerTest, AFewStepsReduceTheLossAndKeepTheUnembeddingTied) {
  HookedTransformerConfig cfg = TinyConfig();
  TrainData data = TrainData::Create(TinyData(), cfg.d_vocab, nullptr).value();
  TrainOptions o;
  o.steps = 60;
  o.batch = 8;
  o.lr = 3e-3;
  o.warmup_steps = 10;
  o.log_every = 10;
  o.eval_every = 30;
  o.eval_batches = 2;
  std::vector<TrainProgress> progress;
  auto result = Train(cfg, data, o, [&](const TrainProgress& p) { progress.push_back(p); });
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(progress.size(), 6u);
  EXPECT_EQ(progress.back().step, 60);
  EXPECT_GE(progress[2].held_out_loss, 0);  // step 30 evaluates
  EXPECT_LT(progress[1].held_out_loss, 0);  // step 20 does not
  // Uniform over 96 ids is 4.56 nats; the chain rows alone are worth much less.
  EXPECT_GT(progress.front().loss, 4.0);
  EXPECT_LT(result->final_loss, progress.front().loss - 0.5);
  EXPECT_LT(result->held_out_loss, progress.front().loss - 0.5);
  EXPECT_TRUE(result->weights.W_U.t().equal(result->weights.W_E));
  EXPECT_TRUE(result->weights.b_U.eq(0).all().item<bool>());
  EXPECT_FALSE(result->weights.ln_final.folded());

  // Saved as F16 Hugging Face layout with a tied lm_head, it loads and scores the same.
  std::string dir = ::lensgrid::testing::MakeTempDir("trainer_ckpt");
  ASSERT_TRUE(SaveHfCheckpoint(result->weights, cfg, dir, /*f16=*/true).ok());
  auto model = HookedTransformer::FromPretrained(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_TRUE((*model)->load_report().lm_head_tied);
  ForwardInput in;
  in.tokens = torch::tensor(data.HeldOutBatch(o.batch, 0), torch::kInt64).view({o.batch, -1});
  ForwardOptions run;
  run.return_type = ForwardReturn::kLoss;
  double loss = (*model)->Run(in, run).value().loss.item<double>();
  EXPECT_NEAR(loss, result->held_out_loss, 0.3);
}

TEST(TrainerTest, IsDeterministicForASeed) {
  HookedTransformerConfig cfg = TinyConfig();
  TrainData data = TrainData::Create(TinyData(), cfg.d_vocab, nullptr).value();
  TrainOptions o;
  o.steps = 5;
  o.batch = 4;
  auto a = Train(cfg, data, o).value();
  auto b = Train(cfg, data, o).value();
  EXPECT_TRUE(a.weights.W_E.equal(b.weights.W_E));
  EXPECT_EQ(a.final_loss, b.final_loss);
}

TEST(TrainerTest, RejectsRowsLongerThanTheContext) {
  HookedTransformerConfig cfg = TinyConfig();
  cfg.n_ctx = 32;
  TrainData data = TrainData::Create(TinyData(), cfg.d_vocab, nullptr).value();
  EXPECT_EQ(Train(cfg, data, TrainOptions{}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lensgrid
