// Edge attribution patching against its definition, computed independently: for an edge
// sender -> receiver input, the derivative of the metric when only that input moves along
// (sender_corrupted - sender_clean), by central finite differences in float64 with a hook that
// perturbs one head's q/k/v input (or one MLP's input, or the final residual stream) of the
// same weights loaded with split inputs; EdgeAttribution itself runs the model without them.
#include "worker/model/analysis/circuit.h"

#include <torch/torch.h>

#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/model/test_util.h"
#include "worker/model/analysis/acdc.h"
#include "worker/model/analysis/edge_patching.h"
#include "worker/model/analysis/metrics.h"
#include "worker/model/analysis/prompt_batch.h"
#include "worker/model/processing.h"
#include "worker/model/weights.h"

namespace lensgrid {
namespace {

constexpr int64_t kLayers = 2, kHeads = 3, kVocab = 40;

std::shared_ptr<HookedTransformer> SplitModel(bool attn_only, bool split = true) {
  HookedTransformerConfig cfg =
      ::lensgrid::testing::TestConfig(kLayers, kHeads, 24, 48, 16, kVocab);
  cfg.attn_only = attn_only;
  cfg.use_split_qkv_input = split;
  cfg.use_hook_mlp_in = split;
  return ::lensgrid::testing::CircuitTestModel(cfg, 5, 20);
}

Dataset Data(int n, uint64_t seed) {
  std::mt19937 rng(seed);
  Dataset ds{"test", {}};
  for (int i = 0; i < n; ++i) {
    std::vector<int64_t> t = {kVocab - 1}, c = {kVocab - 1};
    const int len = 5 + i % 2;  // unequal lengths: left padding
    for (int j = 1; j < len; ++j) {
      t.push_back(rng() % (kVocab - 1));
      c.push_back(j % 2 == 0 ? t.back() : static_cast<int64_t>(rng() % (kVocab - 1)));
    }
    ds.prompts.push_back(::lensgrid::testing::TestPrompt(t, rng() % 20, 20 + rng() % 19, c));
  }
  return ds;
}

// The sender's value of `node` [batch, pos, d_model] from a cache of SenderHooks.
torch::Tensor Sender(const HookedTransformer& m, const CircuitGraph& g, const ActivationCache& c,
                     int node) {
  const CircuitNode& n = g.nodes()[node];
  if (n.kind == CircuitNode::Kind::kEmbed) {
    return c.Get("hook_embed").value() + c.Get("hook_pos_embed").value();
  }
  const std::string layer = absl::StrCat("blocks.", n.layer, ".");
  if (n.kind == CircuitNode::Kind::kMlp) return c.Get(layer + "hook_mlp_out").value();
  return torch::matmul(c.Get(layer + "attn.hook_z").value().select(2, n.head),
                       m.W_O(n.layer)[n.head]);
}

// The logit difference of each row in float64 (the library's metric returns float32, too coarse
// for a finite difference).
torch::Tensor LogitDiff(const torch::Tensor& logits, const PromptBatch& batch) {
  const torch::Tensor last = logits.select(1, -1).to(torch::kFloat64);
  return (last * batch.targets.answers.to(torch::kFloat64)).sum(-1) -
         (last * batch.targets.wrongs.to(torch::kFloat64)).sum(-1);
}

// d metric (summed over the batch's rows, per row) / d epsilon of the run where edge e's
// receiving input is shifted by epsilon * delta: central differences.
torch::Tensor FiniteDifference(const HookedTransformer& m, const CircuitGraph& g,
                               const PromptBatch& batch, const ForwardOptions& opts, int e,
                               const torch::Tensor& delta) {
  const CircuitEdge& edge = g.edges()[e];
  const CircuitNode& r = g.nodes()[edge.receiver];
  std::string hook;
  std::optional<int64_t> head;
  if (r.kind == CircuitNode::Kind::kHead) {
    hook = absl::StrCat("blocks.", r.layer, ".",
                        edge.channel == Channel::kQuery ? "hook_q_input"
                        : edge.channel == Channel::kKey ? "hook_k_input"
                                                        : "hook_v_input");
    head = r.head;
  } else if (r.kind == CircuitNode::Kind::kMlp) {
    hook = absl::StrCat("blocks.", r.layer, ".hook_mlp_in");
  } else {
    hook = absl::StrCat("blocks.", kLayers - 1, ".hook_resid_post");
  }
  auto run = [&](double eps) {
    std::vector<NamedHook> hooks = {
        {hook, [&](const at::Tensor& act, const HookPointImpl&) -> std::optional<at::Tensor> {
           at::Tensor out = act.clone();
           if (head) {
             out.select(2, *head).add_(eps * delta);
           } else {
             out.add_(eps * delta);
           }
           return out;
         }}};
    return LogitDiff(m.Run(batch.clean, opts, hooks).value().logits, batch);
  };
  const double eps = 1e-5;
  return (run(eps) - run(-eps)) / (2 * eps);
}

TEST(EdgeAttributionTest, EveryKindOfEdgeEqualsItsFiniteDifference) {
  for (bool attn_only : {false, true}) {
    auto model = SplitModel(attn_only);  // for the finite differences
    const CircuitGraph graph = CircuitGraphOf(model->cfg());
    const Dataset ds = Data(3, 7);
    EdgeAttributionOptions options;
    absl::StatusOr<EdgeScores> scores =
        EdgeAttribution(*SplitModel(attn_only, /*split=*/false), ds, graph, options);
    ASSERT_TRUE(scores.ok()) << scores.status();
    ASSERT_EQ(scores->per_prompt.sizes(),
              (std::vector<int64_t>{3, static_cast<int64_t>(graph.edges().size())}));
    EXPECT_EQ(scores->counts.backwards, 1);

    PromptBatch batch = MakePromptBatch(ds, 0, 3, true, kVocab, kVocab - 1).value();
    ForwardOptions opts;
    opts.logit_positions = torch::full({3}, batch.pos - 1, torch::kInt64);
    CacheOptions all;
    ActivationCache clean, corrupted;
    model->RunWithCache(batch.clean, opts, all, &clean).value();
    model->RunWithCache(batch.corrupted, opts, all, &corrupted).value();
    std::vector<std::string> names = {"embed -> L0H1.q", "embed -> logits", "L0H2 -> L1H0.k",
                                      "L0H0 -> L1H2.v", "L1H1 -> logits"};
    if (!attn_only) {
      names.insert(names.end(), {"MLP0 -> L1H1.q", "L1H0 -> MLP1", "embed -> MLP0",
                                 "MLP1 -> logits", "L0H1 -> MLP0"});
    }
    double largest = 0;
    for (const std::string& name : names) {
      const int e = graph.FindEdge(name).value();
      const int sender = graph.edges()[e].sender;
      const torch::Tensor delta =
          Sender(*model, graph, corrupted, sender) - Sender(*model, graph, clean, sender);
      const torch::Tensor want = FiniteDifference(*model, graph, batch, opts, e, delta);
      const torch::Tensor got = scores->per_prompt.select(1, e).to(torch::kFloat64);
      largest = std::max(largest, want.abs().max().item<double>());
      EXPECT_TRUE(::lensgrid::testing::AllClose(
          got, want, 1e-4 * std::max(1.0, want.abs().max().item<double>()), name))
          << "attn_only " << attn_only << " largest " << want.abs().max().item<double>();
    }
    EXPECT_GT(largest, 1e-3) << "the edges checked should matter";
  }
}

TEST(EdgeAttributionTest, ShardsByPromptsMergeToTheWhole) {
  auto model = SplitModel(false);
  const CircuitGraph graph = CircuitGraphOf(model->cfg());
  const Dataset ds = Data(5, 3);
  EdgeAttributionOptions whole;
  whole.max_batch_tokens = 12;  // two prompts a batch
  const torch::Tensor all = EdgeAttribution(*model, ds, graph, whole).value().per_prompt;
  EdgeAttributionOptions a = whole, b = whole;
  a.prompt_end = 2;
  b.prompt_begin = 2;
  const torch::Tensor parts =
      torch::cat({EdgeAttribution(*model, ds, graph, a).value().per_prompt,
                  EdgeAttribution(*model, ds, graph, b).value().per_prompt});
  EXPECT_TRUE(::lensgrid::testing::AllClose(parts, all, 1e-6, "shards"));
}

TEST(EdgeAttributionTest, IntegratedGradientsAverageTheGradientAlongThePath) {
  // Identical clean and corrupted prompts: every score is 0, whatever the steps.
  auto model = SplitModel(true);
  const CircuitGraph graph = CircuitGraphOf(model->cfg());
  Dataset same = Data(2, 9);
  for (Prompt& p : same.prompts) p.corrupted_tokens = p.tokens;
  EdgeAttributionOptions ig;
  ig.ig_steps = 3;
  const EdgeScores zero = EdgeAttribution(*model, same, graph, ig).value();
  EXPECT_EQ(zero.per_prompt.abs().max().item<double>(), 0.0);
  EXPECT_EQ(zero.counts.backwards, 3);

  // One step is EAP at the midpoint embedding: the same products as EAP on a dataset whose
  // gradient is taken there, checked against a finite difference at that point.
  const Dataset ds = Data(2, 4);
  ig.ig_steps = 1;
  const torch::Tensor one = EdgeAttribution(*model, ds, graph, ig).value().per_prompt;
  ig.ig_steps = 0;
  const torch::Tensor eap = EdgeAttribution(*model, ds, graph, ig).value().per_prompt;
  EXPECT_FALSE(::lensgrid::testing::AllClose(one, eap, 1e-6, "midpoint differs from clean"));
  PromptBatch batch = MakePromptBatch(ds, 0, 2, true, kVocab, kVocab - 1).value();
  ForwardOptions opts;
  opts.logit_positions = torch::full({2}, batch.pos - 1, torch::kInt64);
  CacheOptions all;
  ActivationCache clean, corrupted;
  model->RunWithCache(batch.clean, opts, all, &clean).value();
  model->RunWithCache(batch.corrupted, opts, all, &corrupted).value();
  const torch::Tensor mid =
      0.5 * (clean.Get("hook_embed").value() + corrupted.Get("hook_embed").value());
  const int e = graph.FindEdge("L0H1 -> logits").value();
  const torch::Tensor delta = Sender(*model, graph, corrupted, graph.edges()[e].sender) -
                              Sender(*model, graph, clean, graph.edges()[e].sender);
  auto run = [&](double eps) {
    std::vector<NamedHook> hooks = {
        {"hook_embed",
         [&](const at::Tensor&, const HookPointImpl&) -> std::optional<at::Tensor> { return mid; }},
        {"blocks.1.hook_resid_post",
         [&](const at::Tensor& act, const HookPointImpl&) -> std::optional<at::Tensor> {
           return act + eps * delta;
         }}};
    return LogitDiff(model->Run(batch.clean, opts, hooks).value().logits, batch);
  };
  const torch::Tensor want = (run(1e-5) - run(-1e-5)) / 2e-5;
  EXPECT_TRUE(::lensgrid::testing::AllClose(one.select(1, e).to(torch::kFloat64), want,
                                            1e-4 * std::max(1.0, want.abs().max().item<double>()),
                                            "EAP-IG, 1 step"));
}

// Edge patching: corrupting no edge is the plain run, every edge the corrupted run, and chosen
// edges equal patching the receivers' own inputs of a split-input model by hand.
class EdgePatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = SplitModel(false, /*split=*/false);
    split_ = SplitModel(false, /*split=*/true);  // the same weights, with q/k/v/mlp inputs
    graph_ = std::make_unique<CircuitGraph>(CircuitGraphOf(model_->cfg()));
    ds_ = Data(3, 11);
    batch_ = MakePromptBatch(ds_, 0, 3, true, kVocab, kVocab - 1).value();
    CacheOptions all;
    model_->RunWithCache(batch_.clean, {}, all, &clean_).value();
    corrupted_logits_ = model_->RunWithCache(batch_.corrupted, {}, all, &corrupted_).value().logits;
    corrupted_senders_ = SenderValues(*model_, corrupted_).value();
    patcher_ = EdgePatcher::Create(*model_, *graph_).value();
  }
  torch::Tensor Patched(const std::vector<std::string>& edges) {
    std::vector<bool> mask(graph_->edges().size(), false);
    for (const std::string& e : edges) mask[graph_->FindEdge(e).value()] = true;
    return patcher_.Run(batch_.clean, {}, corrupted_senders_, mask).value().logits;
  }
  torch::Tensor Sender(const ActivationCache& c, const std::string& node) {
    return SenderValues(*model_, c).value().select(2, graph_->FindNode(node).value());
  }

  std::shared_ptr<HookedTransformer> model_, split_;
  std::unique_ptr<CircuitGraph> graph_;
  Dataset ds_;
  PromptBatch batch_;
  ActivationCache clean_, corrupted_;
  torch::Tensor corrupted_logits_, corrupted_senders_;
  EdgePatcher patcher_;
};

TEST_F(EdgePatcherTest, NoEdgeIsThePlainRunAndEveryEdgeTheCorruptedRun) {
  const torch::Tensor plain = model_->Run(batch_.clean, {}).value().logits;
  std::vector<bool> none(graph_->edges().size(), false), all(graph_->edges().size(), true);
  EXPECT_TRUE(::lensgrid::testing::AllClose(
      patcher_.Run(batch_.clean, {}, corrupted_senders_, none).value().logits, plain, 1e-9,
      "no edge corrupted"));
  EXPECT_TRUE(::lensgrid::testing::AllClose(
      patcher_.Run(batch_.clean, {}, corrupted_senders_, all).value().logits, corrupted_logits_,
      1e-8, "every edge corrupted"));
}

TEST_F(EdgePatcherTest, ChosenEdgesEqualPatchingTheReceiversInputsByHand) {
  // One edge into a head's value input, one from that head to the logits (its value changes in
  // this run, so the logits read corrupted minus this run's own), one into an MLP.
  const torch::Tensor embed_delta = Sender(corrupted_, "embed") - Sender(clean_, "embed");
  const torch::Tensor W_O = model_->W_O(0)[0];
  // The senders' own values in this run (L0H0's changes with its value input, and so L1H2's).
  auto z0 = std::make_shared<torch::Tensor>(), z1 = std::make_shared<torch::Tensor>();
  std::vector<NamedHook> hooks = {
      {"blocks.0.hook_v_input",
       [&](const at::Tensor& act, const HookPointImpl&) -> std::optional<at::Tensor> {
         at::Tensor out = act.clone();
         out.select(2, 0).add_(embed_delta);
         return out;
       }},
      {"blocks.0.attn.hook_z",
       [z0](const at::Tensor& z, const HookPointImpl&) -> std::optional<at::Tensor> {
         *z0 = z;
         return std::nullopt;
       }},
      {"blocks.1.attn.hook_z",
       [z1](const at::Tensor& z, const HookPointImpl&) -> std::optional<at::Tensor> {
         *z1 = z;
         return std::nullopt;
       }},
      {"blocks.1.hook_mlp_in",
       [&, z1](const at::Tensor& act, const HookPointImpl&) -> std::optional<at::Tensor> {
         return act +
                (Sender(corrupted_, "L1H2") - torch::matmul(z1->select(2, 2), model_->W_O(1)[2]));
       }},
      {"blocks.1.hook_resid_post",
       [&, z0](const at::Tensor& act, const HookPointImpl&) -> std::optional<at::Tensor> {
         return act + (Sender(corrupted_, "L0H0") - torch::matmul(z0->select(2, 0), W_O));
       }}};
  const torch::Tensor want = split_->Run(batch_.clean, {}, hooks).value().logits;
  const torch::Tensor got = Patched({"embed -> L0H0.v", "L0H0 -> logits", "L1H2 -> MLP1"});
  EXPECT_TRUE(::lensgrid::testing::AllClose(got, want, 1e-9, "three edges"));
  EXPECT_FALSE(::lensgrid::testing::AllClose(got, model_->Run(batch_.clean, {}).value().logits,
                                             1e-3, "they matter"));
}

TEST_F(EdgePatcherTest, FaithfulnessOfTheWholeGraphAndOfNothing) {
  std::vector<bool> all(graph_->edges().size(), true), none(graph_->edges().size(), false);
  const Faithfulness whole =
      CircuitFaithfulness(*model_, ds_, *graph_, all, MetricKind::kLogitDiff).value();
  EXPECT_NEAR(whole.circuit, whole.full, 1e-5);
  EXPECT_NEAR(whole.normalized(), 1.0, 1e-5);
  const Faithfulness empty =
      CircuitFaithfulness(*model_, ds_, *graph_, none, MetricKind::kLogitDiff).value();
  EXPECT_NEAR(empty.circuit, empty.corrupted, 1e-5);
  EXPECT_NEAR(empty.normalized(), 0.0, 1e-5);
  EXPECT_GT(std::abs(whole.full - whole.corrupted), 1e-3) << "the corruption should matter";
  EXPECT_EQ(
      CircuitFaithfulness(*model_, ds_, *graph_, {true}, MetricKind::kLogitDiff).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST_F(EdgePatcherTest, AcdcPrunesFromTheLogitsBackAndReportsWhatItKept) {
  AcdcOptions options;
  std::vector<AcdcProgress> progress;
  options.on_iteration = [&](const AcdcProgress& p) { progress.push_back(p); };
  // Threshold 0: an edge goes only when the distance does not grow, so the circuit's KL to the
  // full model stays 0 (up to rounding), and a fresh evaluation of what was kept agrees.
  const AcdcResult exact = Acdc(*model_, ds_, *graph_, options).value();
  EXPECT_LT(exact.distance, 1e-9);
  EXPECT_EQ(exact.evaluations, 1 + static_cast<int64_t>(graph_->edges().size()));
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.front().receiver, "logits");
  EXPECT_EQ(progress.back().edges_left, exact.edges_kept);
  EXPECT_EQ(progress.back().iteration, progress.back().iterations);
  const Faithfulness f =
      CircuitFaithfulness(*model_, ds_, *graph_, exact.kept, MetricKind::kLogitDiff).value();
  EXPECT_NEAR(f.normalized(), 1.0, 1e-4);

  // A threshold no edge reaches: every edge goes, and the distance is the corrupted run's.
  options.threshold = 1e9;
  options.on_iteration = nullptr;
  const AcdcResult none = Acdc(*model_, ds_, *graph_, options).value();
  EXPECT_EQ(none.edges_kept, 0);
  std::vector<bool> nothing(graph_->edges().size(), false);
  EXPECT_NEAR(CircuitFaithfulness(*model_, ds_, *graph_, nothing, MetricKind::kLogitDiff)
                  .value()
                  .normalized(),
              0.0, 1e-6);

  // In between (a tenth of the corrupted run's distance), the kept circuit's distance is what a
  // fresh evaluation of it gives.
  ASSERT_GT(none.distance, 0);
  options.threshold = none.distance / 10;
  const AcdcResult some = Acdc(*model_, ds_, *graph_, options).value();
  EXPECT_GT(some.edges_kept, 0);
  EXPECT_LT(some.edges_kept, static_cast<int64_t>(graph_->edges().size()));
  std::vector<bool> corrupted(some.kept.size());
  for (size_t e = 0; e < some.kept.size(); ++e) corrupted[e] = !some.kept[e];
  PromptBatch batch = MakePromptBatch(ds_, 0, 3, true, kVocab, kVocab - 1).value();
  ForwardOptions opts;
  opts.logit_positions = torch::full({3}, batch.pos - 1, torch::kInt64);
  batch.targets.clean_log_probs =
      torch::log_softmax(model_->Run(batch.clean, opts).value().logits.select(1, -1), -1);
  const torch::Tensor kl = ComputeMetric(
      MetricKind::kKl,
      patcher_.Run(batch.clean, opts, corrupted_senders_, corrupted).value().logits, batch.targets);
  EXPECT_NEAR(some.distance, kl.mean().item<double>(), 1e-6);

  options.threshold = -1;
  EXPECT_EQ(Acdc(*model_, ds_, *graph_, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.threshold = std::nan("");
  EXPECT_EQ(Acdc(*model_, ds_, *graph_, options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(EdgeAttributionTest, BadInputIsRefusedBeforeAnyWork) {
  const Dataset ds = Data(2, 1);
  auto model = SplitModel(false, /*split=*/false);
  const CircuitGraph graph = CircuitGraphOf(model->cfg());
  EdgeAttributionOptions bad;
  bad.ig_steps = -1;
  EXPECT_EQ(EdgeAttribution(*model, ds, graph, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad = {};
  bad.prompt_begin = 2;
  EXPECT_EQ(EdgeAttribution(*model, ds, graph, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EdgeAttribution(*model, ds, CircuitGraph::Build({3, 3, false}), {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  Dataset no_corrupted = ds;
  no_corrupted.prompts[1].corrupted_tokens.clear();
  EXPECT_EQ(EdgeAttribution(*model, no_corrupted, graph, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lensgrid
