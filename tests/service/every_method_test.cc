// Every method, metric and ablation of the one table (common/search_methods.h)
// walked through the coordinator's planner, the worker's ShardSpec conversion
// and the library's shard runner, then the merger: the merged result equals
// the in-process search within 1e-5, and every reader agrees on the grids. A
// method added to the table and not handled somewhere fails here.
#include <map>

#include "common/circuit_graph.h"
#include "common/search_proto.h"
#include "gtest/gtest.h"
#include "service/merger.h"
#include "service/planner.h"
#include "tests/worker/model/test_util.h"
#include "worker/core/shard_spec.h"
#include "worker/model/analysis/search.h"

namespace lensgrid {
namespace {

using service::Array;
using service::JobPlan;
using service::ShardRange;
using service::ShardResult;

constexpr auto P = ::lensgrid::testing::TestPrompt;

Dataset Prompts() {
  Dataset ds;
  ds.name = "five";
  ds.prompts = {P({19, 1, 2, 3}, 4, 5, {19, 6, 7, 8}), P({19, 9, 10}, 11, 12, {19, 13, 14}),
                P({19, 2, 4, 6, 8}, 1, 3, {19, 1, 1, 1, 1}), P({19, 3, 3}, 2, 7, {19, 5, 5}),
                P({19, 7, 8, 9}, 10, 2, {19, 1, 2, 3})};
  ds.prompts[3].loss_start = 2;
  return ds;
}

v1::JobSpec Job(const Dataset& ds, const HookedTransformerConfig& cfg, const SearchSpec& spec) {
  v1::JobSpec s;
  s.set_model_id("m");
  s.set_weights_sha256("sha");
  s.set_method(ToProto(spec.method));
  s.set_metric(ToProto(spec.metric));
  s.set_ablation(ToProto(spec.ablation));
  if (IsCircuit(spec.method)) *s.mutable_circuit() = ToProto(spec.circuit);
  s.set_n_layers(cfg.n_layers);
  s.set_n_heads(cfg.n_heads);
  s.set_attn_only(cfg.attn_only);
  s.set_prompts_per_shard(2);
  s.set_components_per_shard(3);
  for (const Prompt& p : ds.prompts) {
    v1::InlinePrompt* q = s.add_prompts();
    q->mutable_tokens()->Add(p.tokens.begin(), p.tokens.end());
    q->mutable_corrupted_tokens()->Add(p.corrupted_tokens.begin(), p.corrupted_tokens.end());
    q->mutable_answers()->Add(p.answers.begin(), p.answers.end());
    q->mutable_wrongs()->Add(p.wrongs.begin(), p.wrongs.end());
    q->set_loss_start(p.loss_start);
  }
  return s;
}

Array ToArray(const std::string& name, const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kFloat32).contiguous().cpu();
  Array a{name, std::vector<int64_t>(c.sizes().begin(), c.sizes().end()), {}};
  a.values.assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  return a;
}

const Array& Find(const std::vector<Array>& arrays, const std::string& name) {
  for (const Array& a : arrays) {
    if (a.name == name) return a;
  }
  ADD_FAILURE() << "no " << name;
  static const Array none;
  return none;
}

void ExpectNear(const Array& got, const torch::Tensor& want, const std::string& what) {
  torch::Tensor w = want.to(torch::kFloat32).contiguous().reshape({-1});
  ASSERT_EQ(static_cast<int64_t>(got.values.size()), w.numel()) << what;
  for (int64_t i = 0; i < w.numel(); ++i)
    ASSERT_NEAR(got.values[i], w[i].item<float>(), 1e-5) << what << " [" << i << "]";
}

// Plans, runs every shard as a worker would, merges, compares with in-process.
void Walk(const HookedTransformer& model, const Dataset& ds, const SearchSpec& spec) {
  const HookedTransformerConfig& cfg = model.cfg();
  auto plan = service::PlanJob(Job(ds, cfg, spec));
  ASSERT_TRUE(plan.ok()) << plan.status();
  // The planner's grids are the library's.
  const std::vector<SearchOutput> lib = SearchOutputs(spec, cfg, ds.max_length());
  ASSERT_EQ(plan->grids.size(), lib.size());
  for (size_t i = 0; i < lib.size(); ++i) {
    EXPECT_EQ(plan->grids[i].name, lib[i].name);
    EXPECT_EQ(plan->grids[i].axes, lib[i].axes);
    EXPECT_EQ(plan->grids[i].shape, lib[i].shape);
  }
  EXPECT_GT(plan->shards.size(), 1u);

  std::vector<ShardResult> parts;
  for (const ShardRange& r : plan->shards) {
    const v1::ShardSpec wire = service::MakeShardSpec(*plan, r);
    auto task = ShardTaskFromProto(wire);
    ASSERT_TRUE(task.ok()) << task.status();
    auto prepared = PrepareSearchShard(cfg, std::move(*task));
    ASSERT_TRUE(prepared.ok()) << prepared.status();
    auto tensors = RunPreparedShard(model, *prepared);
    ASSERT_TRUE(tensors.ok()) << tensors.status();
    ShardResult part{r, {}};
    for (const auto& [name, t] : *tensors) part.tensors.push_back(ToArray(name, t));
    ASSERT_TRUE(service::CheckShardResult(*plan, r, part.tensors).ok())
        << service::CheckShardResult(*plan, r, part.tensors);
    parts.push_back(std::move(part));
  }
  auto merged = service::MergeShards(*plan, parts);
  ASSERT_TRUE(merged.ok()) << merged.status();

  auto whole = RunSearch(model, ds, spec);
  ASSERT_TRUE(whole.ok()) << whole.status();
  ExpectNear(Find(*merged, "baseline"), whole->baseline, "baseline");
  if (NeedsCorrupted(spec.method)) ExpectNear(Find(*merged, "reference"), whole->reference, "ref");
  for (const SearchOutput& o : whole->outputs) {
    ExpectNear(Find(*merged, o.name + ".per_prompt"), o.per_prompt, o.name + ".per_prompt");
    ExpectNear(Find(*merged, o.name), o.mean, o.name);
  }
}

TEST(EveryMethodTest, PlannerLibraryAndMergerAgreeForEveryMethod) {
  for (bool attn_only : {false, true}) {
    HookedTransformerConfig cfg = ::lensgrid::testing::TestConfig(2, 2, 16, 32, 16, 20);
    cfg.attn_only = attn_only;
    auto model = HookedTransformer::FromWeights(cfg, RandomWeights(cfg, 3)).value();
    const Dataset ds = Prompts();
    for (const MethodInfo& m : AllMethods()) {
      if (attn_only && (m.method == Method::kPatchMlpOut || m.method == Method::kAttributeMlpOut))
        continue;  // no MLPs to patch
      std::vector<AblationKind> ablations = {AblationKind::kZero};
      if (IsAblation(m.method))
        ablations = {AblationKind::kZero, AblationKind::kMean, AblationKind::kResample};
      // Circuit methods' parameters, so that each does something to check.
      CircuitParams circuit;
      if (m.method == Method::kEapIg) circuit.ig_steps = 2;
      if (m.method == Method::kPathPatch) circuit.receivers = {"L1H0.k", "logits"};
      if (m.method == Method::kAcdc) continue;  // driven by its client over acdc-step
      if (m.method == Method::kAcdcStep) circuit.receivers = {"L1H1.q"};
      if (m.method == Method::kCircuitFaithfulness || m.method == Method::kAcdcStep) {
        std::vector<bool> kept(CircuitGraph::Build({2, 2, attn_only}).edges().size(), false);
        for (size_t e = 0; e < kept.size(); e += 2) kept[e] = true;
        circuit.kept_edges = PackEdges(kept);
      }
      for (AblationKind a : ablations) {
        SCOPED_TRACE(absl::StrCat(m.name, " ", AblationName(a), attn_only ? " attn-only" : ""));
        Walk(*model, ds, {m.method, MetricKind::kLogitDiff, a, circuit});
      }
    }
  }
}

TEST(EveryMethodTest, EveryMetricThroughTheSamePath) {
  HookedTransformerConfig cfg = ::lensgrid::testing::TestConfig(2, 2, 16, 32, 16, 20);
  auto model = HookedTransformer::FromWeights(cfg, RandomWeights(cfg, 4)).value();
  for (const MetricInfo& m : AllMetrics()) {
    for (Method method : {Method::kAblateHeads, Method::kPatchResid, Method::kAttributeResid}) {
      SCOPED_TRACE(absl::StrCat(m.name, " ", MethodName(method)));
      Walk(*model, Prompts(), {method, m.metric, AblationKind::kZero});
    }
  }
}

}  // namespace
}  // namespace lensgrid
