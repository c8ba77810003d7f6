#include "worker/model/analysis/shard.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/model/test_util.h"

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

}  // namespace
}  // namespace lensgrid
