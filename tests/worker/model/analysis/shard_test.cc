#include "worker/model/analysis/shard.h"

#include <cstring>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/model/test_util.h"
#include "worker/model/analysis/circuit.h"

namespace lensgrid {
namespace {

using ::testing::HasSubstr;

std::shared_ptr<HookedTransformer> TinyModel() {
  HookedTransformerConfig cfg = ::lensgrid::testing::TestConfig(2, 2, 16, 32, 16, 20);
  return HookedTransformer::FromWeights(cfg, RandomWeights(cfg, 1)).value();
}

constexpr auto P = ::lensgrid::testing::TestPrompt;

Dataset ThreePrompts() {
  Dataset ds;
  ds.name = "three";
  ds.prompts = {P({19, 1, 2, 3}, 4, 5, {19, 6, 7, 8}), P({19, 9, 10}, 11, 12, {19, 13, 14}),
                P({19, 2, 4, 6, 8}, 1, 3, {19, 1, 1, 1, 1})};
  return ds;
}

// The job's prompts [begin, end) as a shard of the whole dataset.
ShardTask Task(const Dataset& ds, SearchSpec spec, int64_t begin, int64_t end) {
  ShardTask t;
  t.spec = spec;
  t.n_prompts = static_cast<int64_t>(ds.prompts.size());
  t.n_pos = ds.max_length();
  t.prompt_begin = begin;
  t.prompt_end = end;
  t.prompts.assign(ds.prompts.begin() + begin, ds.prompts.begin() + end);
  if (NeedsMeanPrompts(spec)) t.mean_prompts = ds.prompts;
  return t;
}

std::map<std::string, torch::Tensor> RunShard(const HookedTransformer& model, ShardTask task) {
  auto shard = PrepareSearchShard(model.cfg(), std::move(task));
  EXPECT_TRUE(shard.ok()) << shard.status();
  if (!shard.ok()) return {};
  auto tensors = RunPreparedShard(model, *shard);
  EXPECT_TRUE(tensors.ok()) << tensors.status();
  if (!tensors.ok()) return {};
  return {tensors->begin(), tensors->end()};
}

TEST(ShardTest, RunsTheRequestedRangesWithOnlyItsOwnPrompts) {
  auto model = TinyModel();
  const Dataset ds = ThreePrompts();
  const SearchSpec spec{Method::kPatchHeads, MetricKind::kLogitDiff, AblationKind::kZero};
  ShardTask task = Task(ds, spec, 1, 3);
  task.component_begin = 1;
  task.component_end = 4;
  auto by_name = RunShard(*model, task);
  EXPECT_EQ(by_name.at("baseline").sizes(), at::IntArrayRef({2}));
  EXPECT_EQ(by_name.at("reference").sizes(), at::IntArrayRef({2}));
  EXPECT_EQ(by_name.at("delta").sizes(), at::IntArrayRef({2, 3}));
  // The same numbers as the whole search.
  auto whole = RunSearch(*model, ds, spec).value();
  EXPECT_TRUE(::lensgrid::testing::AllClose(
      by_name.at("delta"), whole.outputs[0].per_prompt.slice(0, 1, 3).slice(1, 1, 4), 1e-6,
      "shard delta"));
}

// Mean ablation's mean is over the whole job, not the shard's prompts: the
// shard carries them all in mean_prompts and matches the whole search.
TEST(ShardTest, MeanAblationUsesTheJobsMean) {
  auto model = TinyModel();
  const Dataset ds = ThreePrompts();
  const SearchSpec spec{Method::kAblateHeads, MetricKind::kLogitDiff, AblationKind::kMean};
  auto by_name = RunShard(*model, Task(ds, spec, 2, 3));
  auto whole = RunSearch(*model, ds, spec).value();
  EXPECT_TRUE(::lensgrid::testing::AllClose(
      by_name.at("delta"), whole.outputs[0].per_prompt.slice(0, 2, 3), 1e-6, "mean delta"));
}

TEST(ShardTest, BadTasksAreClearErrors) {
  auto model = TinyModel();
  const Dataset ds = ThreePrompts();
  const SearchSpec spec{Method::kAblateHeads, MetricKind::kLogitDiff, AblationKind::kZero};
  auto err = [&](std::function<void(ShardTask*)> edit, const ShardLimits& limits = {}) {
    ShardTask t = Task(ds, spec, 0, 3);
    edit(&t);
    return PrepareSearchShard(model->cfg(), std::move(t), limits).status();
  };
  EXPECT_THAT(err([](ShardTask* t) { t->prompt_end = 9; }).message(),
              HasSubstr("prompt range [0, 9) is not within [0, 3)"));
  EXPECT_THAT(err([](ShardTask* t) { t->prompts.pop_back(); }).message(),
              HasSubstr("carries 2 prompts for its range of 3"));
  EXPECT_THAT(err([](ShardTask* t) { t->prompts[1].answers.clear(); }).message(),
              HasSubstr("prompt #1: needs answers"));
  EXPECT_THAT(err([](ShardTask* t) { t->prompts[0].tokens[1] = 999; }).message(),
              HasSubstr("prompt #0: tokens has 999, not a token id in [0, 20)"));
  EXPECT_THAT(err([](ShardTask* t) { t->n_pos = 4; }).message(),
              HasSubstr("longer than the shard's n_pos 4"));
  EXPECT_THAT(err([](ShardTask* t) { t->n_pos = 100; }).message(),
              HasSubstr("(the model's n_ctx)"));
  EXPECT_THAT(err([](ShardTask* t) { t->component_end = 99; }).message(),
              HasSubstr("component range [0, 99) is not within [0, 4)"));
  EXPECT_THAT(err([](ShardTask* t) { t->spec.ablation = AblationKind::kMean; }).message(),
              HasSubstr("mean ablation needs every prompt"));
  EXPECT_THAT(err([&](ShardTask* t) { t->mean_prompts = ds.prompts; }).message(),
              HasSubstr("only for mean ablation"));
  ShardLimits small;
  small.max_dataset_prompts = 2;
  EXPECT_EQ(err([](ShardTask*) {}, small).code(), absl::StatusCode::kResourceExhausted);
  small = {};
  small.max_prompt_tokens = 14;  // 3 prompts x 5 positions
  EXPECT_THAT(err([](ShardTask*) {}, small).message(), HasSubstr("--prompts-per-shard"));
  small = {};
  small.max_result_bytes = 16;
  EXPECT_THAT(err([](ShardTask*) {}, small).message(), HasSubstr("--max-response-bytes"));
}

// Every component shard of one prompt range, one at a time, on `cache` (null:
// none). Returns the shards' tensors by name, in order.
std::vector<std::map<std::string, torch::Tensor>> RunComponentShards(const HookedTransformer& model,
                                                                     const Dataset& ds,
                                                                     const SearchSpec& spec,
                                                                     int64_t begin, int64_t end,
                                                                     BaseRunCache* cache) {
  const int64_t n_components =
      c10::multiply_integers(SearchOutputs(spec, model.cfg(), ds.max_length()).front().shape);
  std::vector<std::map<std::string, torch::Tensor>> out;
  for (int64_t c = 0; c < n_components; ++c) {
    ShardTask task = Task(ds, spec, begin, end);
    task.component_begin = c;
    task.component_end = c + 1;
    auto shard = PrepareSearchShard(model.cfg(), std::move(task));
    EXPECT_TRUE(shard.ok()) << shard.status();
    if (!shard.ok()) return out;
    auto tensors = RunPreparedShard(model, *shard, nullptr, cache, "test model");
    EXPECT_TRUE(tensors.ok()) << tensors.status();
    if (!tensors.ok()) return out;
    out.emplace_back(tensors->begin(), tensors->end());
  }
  return out;
}

void ExpectSameBits(const std::vector<std::map<std::string, torch::Tensor>>& a,
                    const std::vector<std::map<std::string, torch::Tensor>>& b,
                    const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].size(), b[i].size()) << what;
    for (const auto& [name, t] : a[i]) {
      const torch::Tensor& u = b[i].at(name);
      ASSERT_EQ(t.sizes(), u.sizes()) << what << " shard " << i << " " << name;
      ASSERT_EQ(t.scalar_type(), u.scalar_type()) << what << " shard " << i << " " << name;
      EXPECT_EQ(std::memcmp(t.contiguous().data_ptr(), u.contiguous().data_ptr(), t.nbytes()), 0)
          << what << " shard " << i << " " << name << " differs";
    }
  }
}

// The component shards of a prompt range reuse its base run: one miss, then
// hits, and the very same bits as without the cache, for every method of the
// intervention engine and the ablations and metrics that change the base run.
TEST(ShardBaseRunCacheTest, ComponentShardsReuseTheBaseRunBitForBit) {
  auto model = TinyModel();
  const Dataset ds = ThreePrompts();
  const std::vector<SearchSpec> specs = {
      {Method::kAblateHeads, MetricKind::kLogitDiff, AblationKind::kZero},
      {Method::kAblateHeads, MetricKind::kKl, AblationKind::kMean},
      {Method::kAblateLayers, MetricKind::kLoss, AblationKind::kResample},
      {Method::kPatchHeads, MetricKind::kLogitDiff, AblationKind::kZero},
      {Method::kPatchResid, MetricKind::kProb, AblationKind::kZero},
      {Method::kPatchPattern, MetricKind::kKl, AblationKind::kZero},
  };
  for (const SearchSpec& spec : specs) {
    const std::string what =
        MethodName(spec.method) + " " + MetricName(spec.metric) + " " + AblationName(spec.ablation);
    // Mean ablation keeps its dataset means as an entry of their own.
    const int64_t mean = spec.ablation == AblationKind::kMean ? 1 : 0;
    BaseRunCache cache(int64_t{64} << 20);
    auto without = RunComponentShards(*model, ds, spec, 1, 3, nullptr);
    auto with = RunComponentShards(*model, ds, spec, 1, 3, &cache);
    ExpectSameBits(without, with, what);
    const BaseRunCache::Stats stats = cache.stats();
    EXPECT_EQ(stats.misses, 1 + mean) << what;
    EXPECT_EQ(stats.hits, static_cast<int64_t>(with.size()) - 1) << what;
    EXPECT_EQ(stats.entries, 1 + mean) << what;
    EXPECT_GT(stats.bytes, 0) << what;
    // Another prompt range is another base run, over the same means.
    auto other = RunComponentShards(*model, ds, spec, 0, 1, &cache);
    ExpectSameBits(RunComponentShards(*model, ds, spec, 0, 1, nullptr), other, what);
    EXPECT_EQ(cache.stats().misses, 2 + mean) << what;
    EXPECT_EQ(cache.stats().hits, stats.hits + static_cast<int64_t>(other.size()) - 1 + mean)
        << what;
    EXPECT_EQ(cache.stats().entries, 2 + mean) << what;
  }
}

// Mean ablation's mean is over every prompt of the job, whichever range a
// shard runs: a worker computes it once for all of them, and the results are
// the bits it gives without the cache. It is the model's, the hooks' and the
// mean prompts' alone: another model, other hooks or another prompt of the
// mean compute it again.
TEST(ShardBaseRunCacheTest, PromptRangesShareTheirJobsMean) {
  auto model = TinyModel();
  const Dataset ds = ThreePrompts();
  const SearchSpec heads{Method::kAblateHeads, MetricKind::kLogitDiff, AblationKind::kMean};
  BaseRunCache cache(int64_t{64} << 20);
  int64_t hits = 0, misses = 0;
  auto expect = [&](const SearchSpec& spec, int64_t begin, int64_t end, int64_t new_misses,
                    int64_t new_hits, const std::string& what) {
    ShardTask task = Task(ds, spec, begin, end);
    task.component_begin = 0;
    task.component_end = 1;
    ShardTask again = task;
    auto shard = PrepareSearchShard(model->cfg(), std::move(task));
    auto plain = PrepareSearchShard(model->cfg(), std::move(again));
    ASSERT_TRUE(shard.ok() && plain.ok()) << shard.status() << plain.status();
    auto with = RunPreparedShard(*model, *shard, nullptr, &cache, "model a");
    auto without = RunPreparedShard(*model, *plain, nullptr, nullptr, "model a");
    ASSERT_TRUE(with.ok() && without.ok()) << with.status() << without.status();
    ExpectSameBits({{with->begin(), with->end()}}, {{without->begin(), without->end()}}, what);
    EXPECT_EQ(cache.stats().misses, misses += new_misses) << what;
    EXPECT_EQ(cache.stats().hits, hits += new_hits) << what;
  };
  expect(heads, 0, 1, 2, 0, "first range: its base run and the mean");
  expect(heads, 1, 2, 1, 1, "second range: its base run, the same mean");
  expect(heads, 2, 3, 1, 1, "third range: its base run, the same mean");
  SearchSpec other_metric = heads;
  other_metric.metric = MetricKind::kKl;
  expect(other_metric, 0, 1, 1, 1, "another metric: another base run, the same mean");
  expect({Method::kAblateLayers, MetricKind::kLogitDiff, AblationKind::kMean}, 0, 1, 2, 0,
         "other hooks: another mean");
}

// Path-patch and acdc-step shards reuse their prompt range's clean and
// corrupted runs (the corruption batch) the same way: one miss, then hits,
// the same bits. Successive ACDC iterations (another receiver, other kept
// edges) run over the same batch, so they hit too.
TEST(ShardBaseRunCacheTest, CircuitShardsReuseTheirCorruptionBatchBitForBit) {
  auto model = TinyModel();
  const Dataset ds = ThreePrompts();
  const CircuitGraph graph = CircuitGraphOf(model->cfg());
  SearchSpec path_patch{Method::kPathPatch, MetricKind::kLogitDiff};
  SearchSpec acdc_step{Method::kAcdcStep, MetricKind::kKl};
  acdc_step.circuit.receivers = {"logits"};
  acdc_step.circuit.kept_edges = PackEdges(std::vector<bool>(graph.edges().size(), true));
  for (const SearchSpec& spec : {path_patch, acdc_step}) {
    const std::string what = MethodName(spec.method);
    BaseRunCache cache(int64_t{64} << 20);
    auto without = RunComponentShards(*model, ds, spec, 1, 3, nullptr);
    auto with = RunComponentShards(*model, ds, spec, 1, 3, &cache);
    ASSERT_GT(with.size(), 1u) << what;
    ExpectSameBits(without, with, what);
    EXPECT_EQ(cache.stats().misses, 1) << what;
    EXPECT_EQ(cache.stats().hits, static_cast<int64_t>(with.size()) - 1) << what;
    EXPECT_EQ(cache.stats().entries, 1) << what;
    EXPECT_GT(cache.stats().bytes, 0) << what;
    auto other = RunComponentShards(*model, ds, spec, 0, 1, &cache);
    ExpectSameBits(RunComponentShards(*model, ds, spec, 0, 1, nullptr), other, what);
    EXPECT_EQ(cache.stats().misses, 2) << what;
  }
  // The next ACDC iteration: another receiver and fewer kept edges, the same batch.
  BaseRunCache cache(int64_t{64} << 20);
  (void)RunComponentShards(*model, ds, acdc_step, 1, 3, &cache);
  SearchSpec next = acdc_step;
  next.circuit.receivers = {"L1H1.q"};
  std::vector<bool> kept(graph.edges().size(), true);
  kept[0] = false;
  next.circuit.kept_edges = PackEdges(kept);
  const int64_t hits = cache.stats().hits;
  auto again = RunComponentShards(*model, ds, next, 1, 3, &cache);
  ExpectSameBits(RunComponentShards(*model, ds, next, 1, 3, nullptr), again, "next iteration");
  EXPECT_EQ(cache.stats().misses, 1);
  EXPECT_EQ(cache.stats().hits, hits + static_cast<int64_t>(again.size()));
  // Another metric is another batch (its clean metric differs).
  SearchSpec other_metric = acdc_step;
  other_metric.metric = MetricKind::kLogitDiff;
  (void)RunComponentShards(*model, ds, other_metric, 1, 3, &cache);
  EXPECT_EQ(cache.stats().misses, 2);
}

// Anything a base run depends on is in its key: a change of it is a miss.
TEST(ShardBaseRunCacheTest, WhatChangesTheBaseRunChangesTheKey) {
  auto model = TinyModel();
  const Dataset ds = ThreePrompts();
  const SearchSpec spec{Method::kAblateHeads, MetricKind::kLogitDiff, AblationKind::kMean};
  BaseRunCache cache(int64_t{64} << 20);
  auto run = [&](const SearchSpec& s, std::function<void(ShardTask*)> edit,
                 const std::string& scope) {
    ShardTask task = Task(ds, s, 0, 2);
    task.component_begin = 0;
    task.component_end = 1;
    edit(&task);
    auto shard = PrepareSearchShard(model->cfg(), std::move(task));
    ASSERT_TRUE(shard.ok()) << shard.status();
    ASSERT_TRUE(RunPreparedShard(*model, *shard, nullptr, &cache, scope).ok());
  };
  auto same = [](ShardTask*) {};
  run(spec, same, "a");
  EXPECT_EQ(cache.stats().misses, 2);  // the base run, and the mean (its own entry)
  run(spec, same, "a");
  EXPECT_EQ(cache.stats().hits, 1);
  int64_t misses = 2, hits = 1;
  // A base run's miss; with mean ablation it then looks up the mean, which
  // hits unless `mean_misses` (the mean's model or prompts changed).
  auto expect_miss = [&](const SearchSpec& s, std::function<void(ShardTask*)> edit,
                         const std::string& scope, const char* what, bool mean_misses = false) {
    run(s, edit, scope);
    const bool mean = s.ablation == AblationKind::kMean;
    misses += 1 + (mean && mean_misses);
    hits += mean && !mean_misses;
    EXPECT_EQ(cache.stats().misses, misses) << what;
    EXPECT_EQ(cache.stats().hits, hits) << what;
  };
  expect_miss(spec, same, "b", "another model (scope)", /*mean_misses=*/true);
  expect_miss({Method::kAblateHeads, MetricKind::kProb, AblationKind::kMean}, same, "a", "metric");
  expect_miss({Method::kAblateHeads, MetricKind::kLogitDiff, AblationKind::kZero}, same, "a",
              "ablation");
  expect_miss({Method::kPatchHeads, MetricKind::kLogitDiff, AblationKind::kZero}, same, "a",
              "method");
  expect_miss(
      spec, [](ShardTask* t) { t->prompts[1].answers = {7}; }, "a", "an answer");
  expect_miss(
      spec, [](ShardTask* t) { t->prompts[1].wrongs = {7}; }, "a", "a wrong");
  expect_miss(
      spec, [](ShardTask* t) { t->prompts[0].tokens[2] = 7; }, "a", "a token");
  expect_miss(
      spec, [](ShardTask* t) { t->prompts[0].corrupted_tokens[2] = 11; }, "a", "a corrupted token");
  expect_miss(
      spec, [](ShardTask* t) { t->prompts[0].loss_start = 2; }, "a", "loss_start");
  expect_miss(
      spec, [](ShardTask* t) { t->n_pos = 6; }, "a", "the padding", /*mean_misses=*/true);
  expect_miss(
      spec, [](ShardTask* t) { t->mean_prompts[2].tokens[1] = 7; }, "a", "a prompt of the mean",
      /*mean_misses=*/true);
  // What does not change it: the components, a prompt's origin.
  run(
      spec, [](ShardTask* t) { t->component_begin = 2, t->component_end = 4; }, "a");
  run(
      spec, [](ShardTask* t) { t->prompts[0].origin = "elsewhere"; }, "a");
  EXPECT_EQ(cache.stats().hits, hits + 2);
  // No scope, or no budget: no reuse.
  run(spec, same, "");
  EXPECT_EQ(cache.stats().hits + cache.stats().misses, hits + 2 + misses);
}

// A budget smaller than two base runs keeps the latest only; the results stay
// the same bits.
TEST(ShardBaseRunCacheTest, EvictionKeepsTheBudget) {
  auto model = TinyModel();
  const Dataset ds = ThreePrompts();
  const SearchSpec spec{Method::kPatchHeads, MetricKind::kKl, AblationKind::kZero};
  BaseRunCache probe(int64_t{64} << 20);
  RunComponentShards(*model, ds, spec, 0, 2, &probe);
  const int64_t one = probe.stats().bytes;
  ASSERT_GT(one, 0);
  BaseRunCache cache(one + one / 2);
  for (int round = 0; round < 2; ++round) {
    for (int64_t begin : {0, 1}) {
      auto with = RunComponentShards(*model, ds, spec, begin, begin + 2, &cache);
      ExpectSameBits(RunComponentShards(*model, ds, spec, begin, begin + 2, nullptr), with,
                     "range " + std::to_string(begin));
      EXPECT_LE(cache.stats().bytes, cache.budget_bytes());
      EXPECT_EQ(cache.stats().entries, 1);
    }
  }
  EXPECT_EQ(cache.stats().misses, 4);  // each range evicted the other
  EXPECT_EQ(cache.stats().evictions, 3);
  BaseRunCache none(0);
  RunComponentShards(*model, ds, spec, 0, 2, &none);
  EXPECT_EQ(none.stats().entries, 0);
  EXPECT_EQ(none.stats().hits, 0);
}

}  // namespace
}  // namespace lensgrid
