// Circuit discovery against a circuit known by construction: models/induction-compiled
// (scripts/compile_induction_model.py, weights written by hand) does induction with a
// previous-token head L0H1 and an induction head L1H2 that K-composes with it; its other six heads
// are distractors. Its card (MODEL_CARD.md) states the true edge set, true_edges.txt lists it, and
// EAP, EAP-IG and ACDC must each rank those edges above the rest: ROC AUC >= 0.95.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "tests/worker/model/test_util.h"
#include "worker/model/analysis/acdc.h"
#include "worker/model/analysis/circuit.h"
#include "worker/model/analysis/dataset.h"
#include "worker/model/analysis/edge_patching.h"
#include "worker/model/hooked_transformer.h"

namespace lensgrid {
namespace {

// The area under the ROC curve of `scores` for telling the edges with positive[e] from the rest:
// the probability that a random positive scores above a random negative, a tie counting 1/2 (the
// Mann-Whitney U statistic over n_positive x n_negative). NaN without a positive or a negative,
// or with a NaN score.
double RocAuc(const std::vector<double>& scores, const std::vector<bool>& positive) {
  double wins = 0;
  int64_t n_pos = 0, n_neg = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    if (std::isnan(scores[i])) return std::nan("");
    ++(positive[i] ? n_pos : n_neg);
  }
  if (n_pos == 0 || n_neg == 0) return std::nan("");
  for (size_t i = 0; i < scores.size(); ++i) {
    if (!positive[i]) continue;
    for (size_t j = 0; j < scores.size(); ++j) {
      if (positive[j]) continue;
      wins += scores[i] > scores[j] ? 1.0 : scores[i] == scores[j] ? 0.5 : 0.0;
    }
  }
  return wins / (static_cast<double>(n_pos) * static_cast<double>(n_neg));
}

TEST(RocAucTest, HandExamples) {
  EXPECT_DOUBLE_EQ(RocAuc({3, 2, 1, 0}, {true, true, false, false}), 1.0);
  EXPECT_DOUBLE_EQ(RocAuc({0, 1, 2, 3}, {true, true, false, false}), 0.0);
  EXPECT_DOUBLE_EQ(RocAuc({5, 5, 5, 5}, {true, false, true, false}), 0.5);  // all tied
  // scikit-learn's roc_auc_score example: 3 of the 4 (positive, negative) pairs in order.
  EXPECT_DOUBLE_EQ(RocAuc({0.1, 0.4, 0.35, 0.8}, {false, false, true, true}), 0.75);
  // Pairs: 0.9 beats both negatives, 0.5 ties 0.5 (1/2) and beats 0.1: 3.5 / 4.
  EXPECT_DOUBLE_EQ(RocAuc({0.9, 0.5, 0.5, 0.1}, {true, false, true, false}), 0.875);
  // One positive among five: its rank alone decides (above 3 of the 4 negatives).
  EXPECT_DOUBLE_EQ(RocAuc({1, 7, 3, 9, 2}, {false, true, false, false, false}), 0.75);
  EXPECT_TRUE(std::isnan(RocAuc({1, 2}, {true, true})));
  EXPECT_TRUE(std::isnan(RocAuc({1, 2}, {false, false})));
  EXPECT_TRUE(std::isnan(RocAuc({1, std::nan("")}, {true, false})));
}

constexpr int64_t kPrompts = 24, kSeqLen = 10;

std::string ModelDir() { return ::lensgrid::testing::SourceDir() + "/models/induction-compiled"; }

// The edges listed in a file, one name a line ('#' comments and blank lines skipped).
absl::StatusOr<std::vector<int>> ReadEdges(const CircuitGraph& graph, const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::vector<int> edges;
  for (std::string line; std::getline(in, line);) {
    const std::string name(absl::StripAsciiWhitespace(line));
    if (name.empty() || name[0] == '#') continue;
    absl::StatusOr<int> e = graph.FindEdge(name);
    if (!e.ok()) return e.status();
    edges.push_back(*e);
  }
  return edges;
}

class GroundTruthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::shared_ptr<HookedTransformer>> model =
        HookedTransformer::FromPretrained(ModelDir());
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *model;
    graph_ = std::make_unique<CircuitGraph>(CircuitGraphOf(model_->cfg()));
    absl::StatusOr<std::vector<int>> truth = ReadEdges(*graph_, ModelDir() + "/true_edges.txt");
    ASSERT_TRUE(truth.ok()) << truth.status();
    ASSERT_FALSE(truth->empty());
    truth_.assign(graph_->edges().size(), false);
    for (int e : *truth) truth_[e] = true;
    // The circuit as built also reads positions: the previous-token head's query and key.
    mechanism_ = truth_;
    for (const char* name : {"embed -> L0H1.q", "embed -> L0H1.k"}) {
      mechanism_[graph_->FindEdge(name).value()] = true;
    }

    DatasetSpec spec;
    spec.name = "induction";
    spec.n_prompts = kPrompts;
    spec.seed = 1;
    spec.seq_len = kSeqLen;
    absl::StatusOr<Dataset> ds = MakeDataset(spec, model_->cfg(), nullptr);
    ASSERT_TRUE(ds.ok()) << ds.status();
    ds_ = *ds;
    // Corruption by resampling: each prompt's corrupted version is the next prompt (another
    // repeated sequence, where the model predicts another token). The built-in corruption
    // (the same first half, a fresh second half) leaves the first half, and so what L0H1 writes
    // at the induction target, as it was: L0H1 -> L1H2.k, embed -> L0H1.v and embed -> L1H2.v
    // would carry the same values in both runs, and no patching method could see them.
    for (int64_t i = 0; i < kPrompts; ++i) {
      ds_.prompts[i].corrupted_tokens = ds->prompts[(i + 1) % kPrompts].tokens;
    }
  }

  // Prints the true edges' scores and the highest of the others'; returns the AUC against the
  // true edge set (and prints the one against the mechanism's, position edges included).
  double Report(const std::string& method, const std::vector<double>& scores) {
    const double auc = RocAuc(scores, truth_);
    std::vector<int> order(scores.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return scores[a] > scores[b]; });
    std::printf("%s: ROC AUC %.4f against true_edges.txt (%.4f with the 2 position edges)\n",
                method.c_str(), auc, RocAuc(scores, mechanism_));
    int shown_false = 0;
    for (size_t rank = 0; rank < order.size(); ++rank) {
      const int e = order[rank];
      if (!mechanism_[e] && shown_false++ >= 4) continue;
      std::printf("  #%-2zu %-18s %12.6g%s\n", rank + 1, graph_->EdgeName(e).c_str(), scores[e],
                  truth_[e]       ? "  (true)"
                  : mechanism_[e] ? "  (position)"
                                  : "");
    }
    return auc;
  }

  std::vector<double> EapScores(int ig_steps) {
    EdgeAttributionOptions options;
    options.ig_steps = ig_steps;  // the metric: logit difference (answer - wrong), the default
    absl::StatusOr<EdgeScores> s = EdgeAttribution(*model_, ds_, *graph_, options);
    EXPECT_TRUE(s.ok()) << s.status();
    if (!s.ok()) return {};
    // |mean over prompts|: an edge matters whichever way it moves the metric, as both papers
    // rank edges (Syed et al. by absolute attribution; Hanna et al.'s EAP-IG likewise, "abs").
    const at::Tensor mean = s->per_prompt.to(torch::kFloat64).mean(0).abs().contiguous();
    return std::vector<double>(mean.data_ptr<double>(), mean.data_ptr<double>() + mean.numel());
  }

  std::shared_ptr<HookedTransformer> model_;
  std::unique_ptr<CircuitGraph> graph_;
  std::vector<bool> truth_, mechanism_;
  Dataset ds_;
};

TEST_F(GroundTruthTest, TheModelDoesInductionWithTheNamedHeads) {
  EXPECT_FALSE(model_->load_report().lm_head_tied);
  EXPECT_TRUE(model_->load_report().unknown_tensors.empty())
      << absl::StrJoin(model_->load_report().unknown_tensors, ", ");
  const HookedTransformerConfig& cfg = model_->cfg();
  ASSERT_EQ(graph_->edges().size(), 81u);  // 2 layers x 4 heads, attention only

  std::vector<int64_t> flat;
  for (const Prompt& p : ds_.prompts) flat.insert(flat.end(), p.tokens.begin(), p.tokens.end());
  const int64_t n_pos = 2 * kSeqLen;
  ForwardInput input;
  input.tokens = torch::tensor(flat, torch::kInt64).view({kPrompts, n_pos});
  CacheOptions patterns;
  patterns.names = {"blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"};
  ActivationCache cache;
  absl::StatusOr<RunOutput> out = model_->RunWithCache(input, {}, patterns, &cache);
  ASSERT_TRUE(out.ok()) << out.status();
  const at::Tensor pred = out->logits.argmax(-1);                           // [prompt, pos]
  const at::Tensor prev = cache.Get("blocks.0.attn.hook_pattern").value();  // [b, head, q, k]
  const at::Tensor ind = cache.Get("blocks.1.attn.hook_pattern").value();

  // Top-1 predictions in the repeated half: position p (token half[p - L - 1]) predicts
  // half[p - L] = tokens[p - L + 1], for p = L + 1 .. 2L - 1 (the last one is the prompt's
  // answer; the repeated half's first token, predicted at p = L, has no earlier copy to go by).
  // Unambiguous where the current token occurs once in the first half (else it has two
  // successors there).
  int64_t hits = 0, n = 0, hits_once = 0, n_once = 0;
  double prev_attn = 0, ind_attn = 0;
  for (int64_t b = 0; b < kPrompts; ++b) {
    const std::vector<int64_t>& t = ds_.prompts[b].tokens;
    for (int64_t p = 1; p < n_pos; ++p) prev_attn += prev[b][1][p][p - 1].item<double>();
    for (int64_t p = kSeqLen + 1; p < n_pos; ++p) {
      const int64_t want = t[p - kSeqLen + 1];
      const bool hit = pred[b][p].item<int64_t>() == want;
      const bool once = std::count(t.begin() + 1, t.begin() + 1 + kSeqLen, t[p]) == 1;
      hits += hit;
      ++n;
      if (once) {
        hits_once += hit;
        ++n_once;
        ind_attn += ind[b][2][p][p - kSeqLen + 1].item<double>();
      }
    }
    EXPECT_EQ(ds_.prompts[b].answers.front(), t[kSeqLen]);
  }
  const double accuracy = static_cast<double>(hits) / n;
  const double unambiguous = static_cast<double>(hits_once) / n_once;
  prev_attn /= kPrompts * (n_pos - 1);
  ind_attn /= n_once;
  std::printf(
      "induction top-1 accuracy %.4f (%ld of %ld predictions; chance 1/%ld); %.4f where "
      "unambiguous (%ld of %ld); L0H1 attention to p-1: %.4f; L1H2 attention to the token "
      "after the earlier copy (unambiguous): %.4f\n",
      accuracy, static_cast<long>(hits), static_cast<long>(n), static_cast<long>(cfg.d_vocab - 1),
      unambiguous, static_cast<long>(hits_once), static_cast<long>(n_once), prev_attn, ind_attn);
  EXPECT_GE(accuracy, 0.75);
  EXPECT_GE(unambiguous, 0.95);
  EXPECT_GE(prev_attn, 0.99);
  EXPECT_GE(ind_attn, 0.7);

  // The corruption takes the answer away: the logit difference falls to about nothing.
  std::vector<bool> none(graph_->edges().size(), false);
  absl::StatusOr<Faithfulness> f =
      CircuitFaithfulness(*model_, ds_, *graph_, none, MetricKind::kLogitDiff);
  ASSERT_TRUE(f.ok()) << f.status();
  std::printf("logit difference: clean %.4f, corrupted %.4f\n", f->full, f->corrupted);
  EXPECT_GT(f->full, 3.0);
  EXPECT_LT(std::abs(f->corrupted), f->full / 4);
}

TEST_F(GroundTruthTest, EapRecoversTheTrueEdges) {
  const std::vector<double> scores = EapScores(0);
  ASSERT_EQ(scores.size(), graph_->edges().size());
  EXPECT_GE(Report("EAP", scores), 0.95);
}

TEST_F(GroundTruthTest, EapIgRecoversTheTrueEdges) {
  const std::vector<double> scores = EapScores(5);
  ASSERT_EQ(scores.size(), graph_->edges().size());
  EXPECT_GE(Report("EAP-IG (5 steps)", scores), 0.95);
}

TEST_F(GroundTruthTest, AcdcRecoversTheTrueEdges) {
  // The threshold: a fiftieth of the distance (KL at the last position) of the fully corrupted
  // run, measured here.
  std::vector<bool> none(graph_->edges().size(), false);
  absl::StatusOr<Faithfulness> f =
      CircuitFaithfulness(*model_, ds_, *graph_, none, MetricKind::kKl);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_GT(f->corrupted, 0.1) << "the corruption should move the output";
  AcdcOptions options;
  options.threshold = f->corrupted / 50;
  absl::StatusOr<AcdcResult> r = Acdc(*model_, ds_, *graph_, options);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->score.size(), graph_->edges().size());
  std::printf(
      "ACDC: KL of the corrupted run %.4f, threshold %.5f, final distance %.6f, %ld "
      "evaluations\n",
      f->corrupted, options.threshold, r->distance, static_cast<long>(r->evaluations));
  EXPECT_GE(Report("ACDC (score: the KL increase when the edge was tried)", r->score), 0.95);

  std::vector<std::string> kept, missing;
  for (size_t e = 0; e < r->kept.size(); ++e) {
    // Kept exactly when the increase reached the threshold.
    EXPECT_EQ(r->kept[e], r->score[e] >= options.threshold) << graph_->EdgeName(e);
    if (r->kept[e]) kept.push_back(graph_->EdgeName(e));
    if (truth_[e] && !r->kept[e]) missing.push_back(graph_->EdgeName(e));
  }
  std::printf("ACDC kept %ld edges: %s\n", static_cast<long>(kept.size()),
              absl::StrJoin(kept, ", ").c_str());
  EXPECT_TRUE(missing.empty()) << "true edges ACDC dropped: " << absl::StrJoin(missing, ", ");
  std::vector<std::string> want;
  for (size_t e = 0; e < truth_.size(); ++e) {
    if (truth_[e]) want.push_back(graph_->EdgeName(e));
  }
  EXPECT_EQ(kept, want);
  // What it kept is the model's behaviour: corrupting everything else leaves it nearly whole.
  absl::StatusOr<Faithfulness> circuit =
      CircuitFaithfulness(*model_, ds_, *graph_, r->kept, MetricKind::kLogitDiff);
  ASSERT_TRUE(circuit.ok()) << circuit.status();
  std::printf("ACDC circuit's normalized faithfulness (logit difference): %.4f\n",
              circuit->normalized());
  EXPECT_GT(circuit->normalized(), 0.9);
}

}  // namespace
}  // namespace lensgrid
