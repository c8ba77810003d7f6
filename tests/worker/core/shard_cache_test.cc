// A worker's reuse of base runs across the component shards of a prompt range
// (WorkerOptions::shard_cache_bytes), through WorkerCore::RunShard as the
// coordinator link calls it: a search the planner cut into component shards
// returns the same bytes with the cache as without, and runs one base run per
// prompt range instead of one per shard.
#include <cstring>
#include <map>
#include <set>

#include "gtest/gtest.h"
#include "service/planner.h"
#include "tests/worker/model/test_util.h"
#include "worker/core/worker_core.h"

namespace lensgrid {
namespace {

std::unique_ptr<WorkerCore> Load(int64_t shard_cache_bytes) {
  WorkerOptions o;
  o.model_dir = ::lensgrid::testing::SourceDir() + "/models/lensgrid-tiny";
  o.shard_cache_bytes = shard_cache_bytes;
  auto core = WorkerCore::Load(o);
  EXPECT_TRUE(core.ok()) << core.status();
  return core.ok() ? std::move(*core) : nullptr;
}

// lensgrid-tiny: 2 layers x 4 heads, vocabulary 307.
v1::JobSpec Job(v1::SearchMethod method, v1::Ablation ablation, v1::SearchMetric metric) {
  v1::JobSpec s;
  s.set_model_id("tiny");
  s.set_weights_sha256("pinned");
  s.set_method(method);
  s.set_ablation(ablation);
  s.set_metric(metric);
  s.set_n_layers(2);
  s.set_n_heads(4);
  s.set_prompts_per_shard(2);
  s.set_components_per_shard(1);
  for (int i = 0; i < 6; ++i) {
    v1::InlinePrompt* p = s.add_prompts();
    for (int t = 0; t < 5 + i % 3; ++t) {
      p->add_tokens((17 * i + 5 * t + 1) % 300);
      p->add_corrupted_tokens((13 * i + 7 * t + 2) % 300);
    }
    p->add_answers(40 + i);
    p->add_wrongs(90 + i);
  }
  return s;
}

// name -> bytes of each tensor of a shard's reply.
std::map<std::string, std::string> RunOn(const WorkerCore& core, const v1::ShardSpec& shard) {
  v1::RunShardRequest request;
  request.set_weights_sha256(core.Info().weights_sha256());
  *request.mutable_shard() = shard;
  auto result = core.RunShard(request, [] { return false; });
  EXPECT_TRUE(result.ok()) << result.status();
  std::map<std::string, std::string> out;
  if (!result.ok()) return out;
  for (const TensorBytes& t : result->tensors) {
    out[t.name].assign(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
  }
  return out;
}

TEST(ShardCacheTest, ComponentShardsOfASearchReuseTheirRangesBaseRunBitForBit) {
  std::unique_ptr<WorkerCore> cached = Load(int64_t{256} << 20);
  std::unique_ptr<WorkerCore> uncached = Load(0);
  ASSERT_NE(cached, nullptr);
  ASSERT_NE(uncached, nullptr);
  struct Case {
    v1::SearchMethod method;
    v1::Ablation ablation;
    v1::SearchMetric metric;
  };
  int64_t hits = 0, misses = 0;
  for (const Case& c : {Case{v1::METHOD_ABLATE_HEADS, v1::ABLATION_MEAN, v1::METRIC_LOGIT_DIFF},
                        Case{v1::METHOD_ABLATE_HEADS, v1::ABLATION_RESAMPLE, v1::METRIC_KL},
                        Case{v1::METHOD_PATCH_HEADS, v1::ABLATION_ZERO, v1::METRIC_PROB},
                        Case{v1::METHOD_PATCH_RESID, v1::ABLATION_ZERO, v1::METRIC_LOSS}}) {
    auto plan = service::PlanJob(Job(c.method, c.ablation, c.metric));
    ASSERT_TRUE(plan.ok()) << plan.status();
    const std::string what = MethodName(plan->method);
    std::set<int64_t> ranges;
    for (const service::ShardRange& r : plan->shards) {
      const v1::ShardSpec shard = service::MakeShardSpec(*plan, r);
      const auto with = RunOn(*cached, shard);
      const auto without = RunOn(*uncached, shard);
      ASSERT_FALSE(with.empty()) << what;
      EXPECT_EQ(with, without) << what << " shard [" << r.prompt_begin << ", " << r.prompt_end
                               << ") x [" << r.component_begin << ", " << r.component_end << ")";
      ranges.insert(r.prompt_begin);
    }
    ASSERT_EQ(ranges.size(), 3u) << what;
    ASSERT_GT(plan->shards.size(), 2 * ranges.size()) << what;
    // One base run per prompt range, reused by the range's other shards; mean
    // ablation's mean is the job's, computed once and reused by the other ranges.
    const int64_t n_ranges = static_cast<int64_t>(ranges.size());
    const bool mean = c.ablation == v1::ABLATION_MEAN;
    misses += n_ranges + (mean ? 1 : 0);
    hits += static_cast<int64_t>(plan->shards.size()) - n_ranges + (mean ? n_ranges - 1 : 0);
    const BaseRunCache::Stats stats = cached->ShardCacheStats();
    EXPECT_EQ(stats.misses, misses) << what;
    EXPECT_EQ(stats.hits, hits) << what;
    EXPECT_LE(stats.bytes, stats.budget_bytes);
  }
  const BaseRunCache::Stats none = uncached->ShardCacheStats();
  EXPECT_EQ(none.hits, 0);
  EXPECT_EQ(none.entries, 0);
}

}  // namespace
}  // namespace lensgrid
