// The claims of models/lensgrid-ioi/MODEL_CARD.md, checked against its committed weights
// (nothing is trained here): a 3-layer attention-only model trained by `lensgrid train --ioi 1`
// that does indirect object identification on the `ioi` search dataset, and the heads and edges
// the card says each search method finds.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "tests/worker/model/test_util.h"
#include "worker/model/analysis/acdc.h"
#include "worker/model/analysis/circuit.h"
#include "worker/model/analysis/dataset.h"
#include "worker/model/analysis/edge_patching.h"
#include "worker/model/analysis/search.h"
#include "worker/model/hooked_transformer.h"
#include "worker/model/tokenizer/tokenizer.h"
#include "worker/model/training/evaluate.h"
#include "worker/model/training/train_data.h"

namespace lensgrid {
namespace {

// The card's dataset: `lensgrid search --dataset ioi --n-prompts 100 --seed 0`.
constexpr int64_t kPrompts = 100;

std::string ModelDir() { return ::lensgrid::testing::SourceDir() + "/models/lensgrid-ioi"; }

class IoiModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto m = HookedTransformer::FromPretrained(ModelDir());
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = new std::shared_ptr<HookedTransformer>(*m);
    auto tok = LoadTokenizerForModel(ModelDir());
    ASSERT_TRUE(tok.ok()) << tok.status();
    auto ds = MakeDataset({"ioi", kPrompts, 0, 16}, (*m)->cfg(), tok->get());
    ASSERT_TRUE(ds.ok()) << ds.status();
    dataset_ = new Dataset(*ds);
    tokenizer_ = tok->release();
  }
  static const HookedTransformer& model() { return **model_; }
  static const Dataset& dataset() { return *dataset_; }

  // The components of a [layer, head] search, ranked by |mean delta|, as names.
  static std::vector<std::string> RankedHeads(Method method, AblationKind ablation) {
    SearchSpec spec;
    spec.method = method;
    spec.metric = MetricKind::kLogitDiff;
    spec.ablation = ablation;
    auto r = RunSearch(model(), dataset(), spec);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return {};
    std::vector<std::string> names;
    std::printf("%s:", MethodName(method).c_str());
    for (const auto& [index, value] : RankComponents(r->outputs[0], 12)) {
      names.push_back(ComponentName(r->outputs[0], index));
      std::printf(" %s %+.3f", names.back().c_str(), value);
    }
    std::printf("\n");
    return names;
  }

  static std::shared_ptr<HookedTransformer>* model_;
  static Dataset* dataset_;
  static Tokenizer* tokenizer_;
};
std::shared_ptr<HookedTransformer>* IoiModelTest::model_ = nullptr;
Dataset* IoiModelTest::dataset_ = nullptr;
Tokenizer* IoiModelTest::tokenizer_ = nullptr;

TEST_F(IoiModelTest, IsSmallAndSelfContained) {
  std::ifstream f(ModelDir() + "/model.safetensors", std::ios::binary | std::ios::ate);
  ASSERT_TRUE(f);
  EXPECT_LE(static_cast<int64_t>(f.tellg()), 2 << 20);
  const HookedTransformerConfig& cfg = model().cfg();
  EXPECT_EQ(cfg.n_layers, 3);
  EXPECT_EQ(cfg.n_heads, 4);
  EXPECT_TRUE(cfg.attn_only);
  EXPECT_EQ(tokenizer_->vocab_size(), cfg.d_vocab);
  EXPECT_EQ(tokenizer_->eot_token(), cfg.bos_token_id);
  EXPECT_TRUE(model().load_report().lm_head_tied);
  // GPT-2's first 6,000 merges keep the training split's names, places and objects as one token
  // each (what --ioi needs), so the `ioi` dataset builds from this model's own tokenizer.
  TrainDataOptions options;
  options.ioi_fraction = 1.0;
  auto data = TrainData::Create(options, cfg.d_vocab, tokenizer_);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->train_names().size(), 29u);
  std::ifstream card(ModelDir() + "/MODEL_CARD.md");
  std::string text((std::istreambuf_iterator<char>(card)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text.rfind("# lensgrid-ioi: ", 0), 0u) << text.substr(0, 80);
  EXPECT_EQ(text.find("/tmp/"), std::string::npos);
}

TEST_F(IoiModelTest, DoesIndirectObjectIdentification) {
  // The card: accuracy (logit IO > logit S) and mean logit difference on the `ioi` dataset
  // (Wang et al.'s 15 templates, BABA and ABBA, names the model was trained on).
  auto score = ScoreIoi(model(), dataset().prompts);
  ASSERT_TRUE(score.ok()) << score.status();
  std::printf("ioi (%ld prompts): accuracy %.3f, mean logit diff %.3f\n",
              static_cast<long>(score->n), score->accuracy, score->mean_logit_diff);
  EXPECT_GE(score->accuracy, 0.9);
  EXPECT_GE(score->mean_logit_diff, 3.0);
  // The corruption (three unrelated names) takes the answer away.
  CircuitGraph graph = CircuitGraphOf(model().cfg());
  auto f =
      CircuitFaithfulness(model(), dataset(), graph, std::vector<bool>(graph.edges().size(), false),
                          MetricKind::kLogitDiff);
  ASSERT_TRUE(f.ok()) << f.status();
  std::printf("logit diff: clean %.4f, corrupted %.4f\n", f->full, f->corrupted);
  EXPECT_NEAR(f->full, score->mean_logit_diff, 1e-3);  // left padding changes nothing
  EXPECT_LT(std::abs(f->corrupted), f->full / 4);
}

// Mean attention from the final position (END, " to") to the indirect object (IO), the
// subject's first (S1) and second (S2) occurrence, END itself and BOS, per head:
// [layer, head, {IO, S1, S2, END, BOS}].
at::Tensor EndAttention(const HookedTransformer& model, const Dataset& ds) {
  const HookedTransformerConfig& cfg = model.cfg();
  at::Tensor sum = torch::zeros({cfg.n_layers, cfg.n_heads, 5}, torch::kFloat64);
  CacheOptions patterns;
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    patterns.names.push_back("blocks." + std::to_string(l) + ".attn.hook_pattern");
  }
  for (const Prompt& p : ds.prompts) {
    const std::vector<int64_t>& t = p.tokens;
    const int64_t end = static_cast<int64_t>(t.size()) - 1;
    const int64_t io = std::find(t.begin(), t.end(), p.answers[0]) - t.begin();
    const int64_t s1 = std::find(t.begin(), t.end(), p.wrongs[0]) - t.begin();
    const int64_t s2 = std::find(t.begin() + s1 + 1, t.end(), p.wrongs[0]) - t.begin();
    EXPECT_LT(s2, end) << p.text;
    ForwardInput in;
    in.tokens = torch::tensor(t, torch::kInt64).view({1, -1});
    ActivationCache cache;
    auto out = model.RunWithCache(in, {}, patterns, &cache);
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok()) return sum;
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
      const at::Tensor pat = cache.Get(patterns.names[l]).value()[0].to(torch::kFloat64);
      for (int64_t h = 0; h < cfg.n_heads; ++h) {
        sum[l][h][0] += pat[h][end][io];
        sum[l][h][1] += pat[h][end][s1];
        sum[l][h][2] += pat[h][end][s2];
        sum[l][h][3] += pat[h][end][end];
        sum[l][h][4] += pat[h][end][0];
      }
    }
  }
  return sum / static_cast<double>(ds.prompts.size());
}

TEST_F(IoiModelTest, AttentionFromTheEnd) {
  const at::Tensor a = EndAttention(model(), dataset());
  std::printf("attention from END to IO / S1 / S2 / END / BOS:\n");
  for (int64_t l = 0; l < a.size(0); ++l) {
    for (int64_t h = 0; h < a.size(1); ++h) {
      std::printf("  L%ldH%ld  %.3f / %.3f / %.3f / %.3f / %.3f\n", static_cast<long>(l),
                  static_cast<long>(h), a[l][h][0].item<double>(), a[l][h][1].item<double>(),
                  a[l][h][2].item<double>(), a[l][h][3].item<double>(), a[l][h][4].item<double>());
    }
  }
  // The card's mechanism: L0H2 attends from END to S2 (the subject's second occurrence); L1H3,
  // the name mover, attends to IO; L2H0 and L2H3 attend to IO more than to S1 and S2.
  EXPECT_GE(a[0][2][2].item<double>(), 0.9);
  EXPECT_GE(a[1][3][0].item<double>(), 0.9);
  for (int head : {0, 3}) {
    EXPECT_GT(a[2][head][0].item<double>(),
              a[2][head][1].item<double>() + a[2][head][2].item<double>())
        << "L2H" << head;
  }
}

TEST_F(IoiModelTest, MethodsFindTheCardsHeads) {
  const std::vector<std::string> ablation = RankedHeads(Method::kAblateHeads, AblationKind::kMean);
  const std::vector<std::string> patching = RankedHeads(Method::kPatchHeads, AblationKind::kZero);
  const std::vector<std::string> path = RankedHeads(Method::kPathPatch, AblationKind::kZero);
  ASSERT_GE(ablation.size(), 3u);
  ASSERT_GE(patching.size(), 3u);
  ASSERT_GE(path.size(), 3u);
  // Mean ablation and activation patching: L0H2 first, by far.
  EXPECT_EQ(ablation[0], "L0H2");
  EXPECT_EQ(patching[0], "L0H2");
  // Path patching to the logits: the layer-2 heads L2H0 and L2H2 first (6.4 and 6.0 in the
  // card, close), then L0H2.
  std::vector<std::string> top2(path.begin(), path.begin() + 2);
  std::sort(top2.begin(), top2.end());
  EXPECT_EQ(top2, (std::vector<std::string>{"L2H0", "L2H2"}));
  EXPECT_EQ(path[2], "L0H2");
}

TEST_F(IoiModelTest, EapAndAcdcCircuits) {
  CircuitGraph graph = CircuitGraphOf(model().cfg());
  auto s = EdgeAttribution(model(), dataset(), graph, {});
  ASSERT_TRUE(s.ok()) << s.status();
  const at::Tensor mean = s->per_prompt.to(torch::kFloat64).mean(0).abs();
  const at::Tensor top = std::get<1>(mean.topk(20));
  std::vector<bool> kept(graph.edges().size(), false);
  std::vector<std::string> names;
  for (int64_t i = 0; i < top.size(0); ++i) {
    kept[top[i].item<int64_t>()] = true;
    names.push_back(graph.EdgeName(top[i].item<int64_t>()));
  }
  std::printf("EAP top 20: %s\n", absl::StrJoin(names, ", ").c_str());
  EXPECT_EQ(names[0], "embed -> L0H2.v");
  auto eap = CircuitFaithfulness(model(), dataset(), graph, kept, MetricKind::kLogitDiff);
  ASSERT_TRUE(eap.ok()) << eap.status();
  std::printf("EAP top-20 circuit: normalized faithfulness (logit diff) %.4f\n", eap->normalized());
  // The card: 0.28, a poor circuit (the first-order estimate misses the name mover's edges).
  EXPECT_GT(eap->normalized(), 0.1);
  EXPECT_LT(eap->normalized(), 0.6);

  AcdcOptions options;
  options.threshold = 0.05;  // KL at the last position, as `--method acdc --threshold 0.05`
  auto acdc = Acdc(model(), dataset(), graph, options);
  ASSERT_TRUE(acdc.ok()) << acdc.status();
  std::vector<std::string> acdc_kept;
  for (size_t e = 0; e < acdc->kept.size(); ++e) {
    if (acdc->kept[e]) acdc_kept.push_back(graph.EdgeName(e));
  }
  std::printf("ACDC kept %ld edges: %s\n", static_cast<long>(acdc_kept.size()),
              absl::StrJoin(acdc_kept, ", ").c_str());
  EXPECT_LE(acdc_kept.size(), 30u);
  // The card's core: L0H2 reads the subject, writes it into the queries (and keys and values)
  // of the name movers L1H3, L2H0 and L2H3, which write the IO to the logits.
  for (const char* edge :
       {"embed -> L0H2.v", "embed -> L0H2.k", "L0H2 -> L1H3.q", "L0H2 -> L2H0.v", "L1H3 -> L2H0.q",
        "L0H2 -> L2H3.v", "L2H0 -> logits", "L2H3 -> logits"}) {
    EXPECT_NE(std::find(acdc_kept.begin(), acdc_kept.end(), edge), acdc_kept.end()) << edge;
  }
  auto kl = CircuitFaithfulness(model(), dataset(), graph, acdc->kept, MetricKind::kKl);
  ASSERT_TRUE(kl.ok()) << kl.status();
  auto diff = CircuitFaithfulness(model(), dataset(), graph, acdc->kept, MetricKind::kLogitDiff);
  ASSERT_TRUE(diff.ok()) << diff.status();
  std::printf(
      "ACDC circuit: KL %.4f (corrupted %.4f), normalized %.4f; logit diff %.3f, "
      "normalized %.4f\n",
      kl->circuit, kl->corrupted, kl->normalized(), diff->circuit, diff->normalized());
  EXPECT_GE(kl->normalized(), 0.9);
  EXPECT_GE(diff->normalized(), 0.4);
}

}  // namespace
}  // namespace lensgrid
