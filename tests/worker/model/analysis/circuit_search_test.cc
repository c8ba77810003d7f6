// The circuit methods as searches (worker/model/analysis/circuit_search.h) against independent
// computations: path-patch against the IOI paper's naive path patching (freeze every head and
// MLP at its clean value except the sender, cache the receivers' inputs, run again with only
// those patched), eap against EdgeAttribution, circuit-faithfulness against
// CircuitFaithfulness; shards merge to the whole; bad parameters are refused before any run.
#include "worker/model/analysis/circuit_search.h"

#include <torch/torch.h>

#include <random>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/worker/model/test_util.h"
#include "worker/model/analysis/circuit.h"
#include "worker/model/analysis/edge_patching.h"
#include "worker/model/analysis/prompt_batch.h"
#include "worker/model/processing.h"
#include "worker/model/weights.h"

namespace lensgrid {
namespace {

constexpr int64_t kLayers = 3, kHeads = 2, kVocab = 40;

// Split q/k/v and MLP inputs: the naive implementation patches them as hook points.
std::shared_ptr<HookedTransformer> Model(bool attn_only) {
  HookedTransformerConfig cfg =
      ::lensgrid::testing::TestConfig(kLayers, kHeads, 24, 48, 16, kVocab);
  cfg.attn_only = attn_only;
  cfg.use_split_qkv_input = true;
  cfg.use_hook_mlp_in = true;
  return ::lensgrid::testing::CircuitTestModel(cfg, 11, 10);
}

Dataset Data(int n, uint64_t seed) {
  std::mt19937 rng(seed);
  Dataset ds{"test", {}};
  for (int i = 0; i < n; ++i) {
    std::vector<int64_t> t = {kVocab - 1}, c = {kVocab - 1};
    const int len = 5 + i % 2;  // unequal lengths: left padding
    for (int j = 1; j < len; ++j) {
      t.push_back(rng() % (kVocab - 1));
      c.push_back(rng() % (kVocab - 1));
    }
    ds.prompts.push_back(::lensgrid::testing::TestPrompt(t, rng() % 20, 20 + rng() % 19, c));
  }
  return ds;
}

std::string Hook(int64_t layer, const char* name) {
  return absl::StrCat("blocks.", layer, ".", name);
}

// The hook a receiving input is read at, and the head it is for (-1: none).
std::pair<std::string, int64_t> ReceiverHook(const std::string& receiver) {
  if (receiver == "logits") return {Hook(kLayers - 1, "hook_resid_post"), -1};
  if (receiver.rfind("MLP", 0) == 0)
    return {Hook(std::stoi(receiver.substr(3)), "hook_mlp_in"), -1};
  // "L1H0.k"
  const int64_t layer = receiver[1] - '0', head = receiver[3] - '0';
  const char c = receiver.back();
  return {Hook(layer, c == 'q'   ? "hook_q_input"
                      : c == 'k' ? "hook_k_input"
                                 : "hook_v_input"),
          head};
}

// The IOI paper's path patching, by running the model three times: (1) clean and corrupted
// runs cached; (2) a clean run with the sender head's z from the corrupted run and every other
// head's z and every MLP's output frozen at the clean run's, caching the receivers' inputs;
// (3) a clean run with only the receivers' inputs patched from (2). Returns the metric of (3)
// minus the clean metric, per prompt.
torch::Tensor NaivePathPatch(const HookedTransformer& m, const PromptBatch& batch,
                             const ForwardOptions& opts, int64_t s_layer, int64_t s_head,
                             const std::vector<std::string>& receivers, MetricKind metric) {
  ActivationCache clean, corrupted;
  CacheOptions all;
  const RunOutput clean_run = m.RunWithCache(batch.clean, opts, all, &clean).value();
  m.RunWithCache(batch.corrupted, opts, all, &corrupted).value();
  std::vector<NamedHook> freeze;
  for (int64_t l = 0; l < kLayers; ++l) {
    const std::string z = Hook(l, "attn.hook_z");
    torch::Tensor frozen = clean.Get(z).value().clone();
    if (l == s_layer) frozen.select(2, s_head).copy_(corrupted.Get(z).value().select(2, s_head));
    freeze.push_back(
        {z, [frozen](const at::Tensor&, const HookPointImpl&) -> std::optional<at::Tensor> {
           return frozen;
         }});
    if (!m.cfg().attn_only) {
      const torch::Tensor mlp = clean.Get(Hook(l, "hook_mlp_out")).value();
      freeze.push_back({Hook(l, "hook_mlp_out"),
                        [mlp](const at::Tensor&,
                              const HookPointImpl&) -> std::optional<at::Tensor> { return mlp; }});
    }
  }
  ActivationCache frozen_cache;
  CacheOptions receiver_hooks;
  for (const std::string& r : receivers) receiver_hooks.names.push_back(ReceiverHook(r).first);
  m.RunWithCache(batch.clean, opts, receiver_hooks, &frozen_cache, freeze).value();
  std::vector<NamedHook> patch;
  for (const std::string& r : receivers) {
    const auto [hook, head] = ReceiverHook(r);
    const torch::Tensor value = frozen_cache.Get(hook).value();
    patch.push_back({hook,
                     [value, head = head](const at::Tensor& act,
                                          const HookPointImpl&) -> std::optional<at::Tensor> {
                       if (head < 0) return value;
                       at::Tensor out = act.clone();
                       out.select(2, head).copy_(value.select(2, head));
                       return out;
                     }});
  }
  const RunOutput patched = m.Run(batch.clean, opts, patch).value();
  return ComputeMetric(metric, patched.logits, batch.targets) -
         ComputeMetric(metric, clean_run.logits, batch.targets);
}

TEST(CircuitSearchTest, PathPatchEqualsNaivePathPatching) {
  for (bool attn_only : {false, true}) {
    auto model = Model(attn_only);
    const Dataset ds = Data(4, 3);
    const std::vector<std::vector<std::string>> receiver_sets = {
        {}, {"L2H1.k"}, {"L1H0.q", "L2H1.v"}, {"logits", "L2H0.k"}};
    for (const auto& receivers : receiver_sets) {
      if (!attn_only && receivers.empty()) continue;  // checked below with MLP2
      SCOPED_TRACE(absl::StrCat(attn_only ? "attn-only " : "", receivers.size(), " receivers"));
      SearchSpec spec{Method::kPathPatch, MetricKind::kLogitDiff};
      spec.circuit.receivers = receivers;
      auto r = RunSearch(*model, ds, spec);
      ASSERT_TRUE(r.ok()) << r.status();
      const torch::Tensor got = r->outputs.front().per_prompt;  // [n, layer * head]
      PromptBatch batch = MakePromptBatch(ds, 0, 4, true, kVocab, kVocab - 1).value();
      ForwardOptions opts;
      const std::vector<std::string> naive_receivers =
          receivers.empty() ? std::vector<std::string>{"logits"} : receivers;
      for (int64_t c = 0; c < kLayers * kHeads; ++c) {
        const torch::Tensor want = NaivePathPatch(*model, batch, opts, c / kHeads, c % kHeads,
                                                  naive_receivers, MetricKind::kLogitDiff);
        for (int64_t p = 0; p < 4; ++p) {
          EXPECT_NEAR(got[p][c].item<double>(), want[p].item<double>(), 1e-4)
              << "sender L" << c / kHeads << "H" << c % kHeads << " prompt " << p;
        }
      }
      // Not all zero: the test compares something.
      EXPECT_GT(got.abs().max().item<double>(), 2e-4);
    }
  }
  // An MLP receiver: the heads of its own layer reach it too.
  auto model = Model(false);
  const Dataset ds = Data(3, 4);
  SearchSpec spec{Method::kPathPatch, MetricKind::kLogitDiff};
  spec.circuit.receivers = {"MLP1"};
  auto r = RunSearch(*model, ds, spec);
  ASSERT_TRUE(r.ok()) << r.status();
  PromptBatch batch = MakePromptBatch(ds, 0, 3, true, kVocab, kVocab - 1).value();
  for (int64_t c = 0; c < kLayers * kHeads; ++c) {
    const torch::Tensor want =
        NaivePathPatch(*model, batch, {}, c / kHeads, c % kHeads, {"MLP1"}, MetricKind::kLogitDiff);
    for (int64_t p = 0; p < 3; ++p) {
      EXPECT_NEAR(r->outputs.front().per_prompt[p][c].item<double>(), want[p].item<double>(), 1e-4);
    }
  }
}

TEST(CircuitSearchTest, EapIsEdgeAttributionAndShardsMergeExactly) {
  auto model = Model(false);
  const Dataset ds = Data(5, 8);
  const CircuitGraph graph = CircuitGraphOf(model->cfg());
  for (Method m : {Method::kEap, Method::kEapIg}) {
    SearchSpec spec{m, MetricKind::kLogitDiff};
    if (m == Method::kEapIg) spec.circuit.ig_steps = 3;
    auto whole = RunSearch(*model, ds, spec);
    ASSERT_TRUE(whole.ok()) << whole.status();
    EdgeAttributionOptions o;
    o.ig_steps = m == Method::kEapIg ? 3 : 0;
    auto want = EdgeAttribution(*model, ds, graph, o);
    ASSERT_TRUE(want.ok());
    EXPECT_TRUE(torch::allclose(whole->outputs.front().per_prompt, want->per_prompt));
    EXPECT_TRUE(torch::allclose(whole->baseline, want->clean_metric));
    EXPECT_TRUE(torch::allclose(whole->reference, want->corrupted_metric));
    std::vector<SearchResult> shards;
    for (auto [b, e] : {std::pair<int64_t, int64_t>{0, 2}, {2, 5}}) {
      SearchOptions so;
      so.prompt_begin = b;
      so.prompt_end = e;
      shards.push_back(RunSearch(*model, ds, spec, so).value());
    }
    auto merged = MergeSearchShards(shards, 5, model->cfg(), ds.max_length());
    ASSERT_TRUE(merged.ok()) << merged.status();
    EXPECT_TRUE(torch::allclose(merged->outputs.front().per_prompt,
                                whole->outputs.front().per_prompt, 1e-6, 1e-7));
  }
}

TEST(CircuitSearchTest, FaithfulnessIsCircuitFaithfulness) {
  auto model = Model(false);
  const Dataset ds = Data(4, 9);
  const CircuitGraph graph = CircuitGraphOf(model->cfg());
  std::vector<bool> kept(graph.edges().size(), false);
  for (size_t e = 0; e < kept.size(); e += 3) kept[e] = true;
  SearchSpec spec{Method::kCircuitFaithfulness, MetricKind::kLogitDiff};
  spec.circuit.kept_edges = PackEdges(kept);
  auto r = RunSearch(*model, ds, spec);
  ASSERT_TRUE(r.ok()) << r.status();
  auto want = CircuitFaithfulness(*model, ds, graph, kept, MetricKind::kLogitDiff);
  ASSERT_TRUE(want.ok());
  const torch::Tensor mean = r->outputs.front().mean;
  EXPECT_NEAR(mean[kFaithfulnessCircuit].item<double>(), want->circuit, 1e-5);
  EXPECT_NEAR(mean[kFaithfulnessFull].item<double>(), want->full, 1e-5);
  EXPECT_NEAR(mean[kFaithfulnessCorrupted].item<double>(), want->corrupted, 1e-5);
  EXPECT_GT(std::abs(want->circuit - want->full), 1e-4);  // the circuit changes something
}

TEST(CircuitSearchTest, BadParametersAreRefusedBeforeAnyRun) {
  auto model = Model(true);
  const Dataset ds = Data(2, 1);
  auto expect = [&](SearchSpec spec, absl::StatusCode code, const std::string& words) {
    auto r = RunSearch(*model, ds, spec);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), code) << r.status();
    EXPECT_NE(r.status().message().find(words), std::string::npos) << r.status();
  };
  SearchSpec unknown{Method::kPathPatch};
  unknown.circuit.receivers = {"L7H0.k"};
  expect(unknown, absl::StatusCode::kInvalidArgument, "circuit.receivers[0]");
  SearchSpec mlp{Method::kPathPatch};
  mlp.circuit.receivers = {"MLP0"};  // attention-only: no MLPs
  expect(mlp, absl::StatusCode::kInvalidArgument, "circuit.receivers[0]");
  SearchSpec steps{Method::kEap};
  steps.circuit.ig_steps = 4;
  expect(steps, absl::StatusCode::kInvalidArgument, "ig_steps is for eap-ig");
  SearchSpec negative{Method::kEapIg};
  negative.circuit.ig_steps = -1;
  expect(negative, absl::StatusCode::kInvalidArgument, "ig_steps");
  SearchSpec no_circuit{Method::kCircuitFaithfulness};
  expect(no_circuit, absl::StatusCode::kInvalidArgument, "kept_edges");
  SearchSpec stray{Method::kCircuitFaithfulness};
  const int64_t n = static_cast<int64_t>(CircuitGraphOf(model->cfg()).edges().size());
  stray.circuit.kept_edges = std::string((n + 7) / 8, '\xff');
  ASSERT_NE(n % 8, 0) << "the model's edges fill whole bytes: no bit past the last edge to set";
  expect(stray, absl::StatusCode::kInvalidArgument, "past the last edge");
}

}  // namespace
}  // namespace lensgrid
