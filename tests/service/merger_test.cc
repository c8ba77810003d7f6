// Merger: table-driven, no network.
#include "service/merger.h"

#include <cmath>

#include "common/search_proto.h"
#include "gtest/gtest.h"

namespace lensgrid::service {
namespace {

JobPlan Plan(const std::string& method, int n_prompts, int prompts_per, int components_per) {
  v1::JobSpec s;
  s.set_model_id("m");
  s.set_weights_sha256("abc");
  s.set_method(ToProto(ParseMethod(method).value()));
  s.set_n_layers(2);
  s.set_n_heads(3);
  s.set_prompts_per_shard(prompts_per);
  s.set_components_per_shard(components_per);
  for (int i = 0; i < n_prompts; ++i) {
    v1::InlinePrompt* p = s.add_prompts();
    for (int t = 0; t < 4; ++t) p->add_tokens(t);
  }
  return PlanJob(s).value();
}

// The value a worker would report for (prompt, component) of a grid.
float Value(int grid, int64_t p, int64_t c) { return 100.0f * grid + 10.0f * p + c; }

ShardResult Shard(const JobPlan& plan, const ShardRange& r) {
  ShardResult s{r, {}};
  auto per_prompt = [&](const std::string& name, float offset) {
    Array a{name, {r.num_prompts()}, {}};
    for (int64_t p = r.prompt_begin; p < r.prompt_end; ++p) a.values.push_back(offset + p);
    s.tensors.push_back(a);
  };
  per_prompt("baseline", 0.5f);
  if (plan.patching) per_prompt("reference", 0.25f);
  for (size_t g = 0; g < plan.grids.size(); ++g) {
    const bool all = ShardsByPromptsOnly(plan.method);
    const int64_t c0 = all ? 0 : r.component_begin;
    const int64_t c1 = all ? plan.grids[g].NumComponents() : r.component_end;
    Array a{plan.grids[g].name, {r.num_prompts(), c1 - c0}, {}};
    for (int64_t p = r.prompt_begin; p < r.prompt_end; ++p)
      for (int64_t c = c0; c < c1; ++c) a.values.push_back(Value(g, p, c));
    s.tensors.push_back(a);
  }
  return s;
}

const Array& Find(const std::vector<Array>& arrays, const std::string& name) {
  for (const Array& a : arrays) {
    if (a.name == name) return a;
  }
  ADD_FAILURE() << "no " << name;
  static Array none;
  return none;
}

TEST(MergerTest, PlacesValuesByRangesAndAveragesOverPrompts) {
  struct Case {
    std::string method;
    int n_prompts, prompts_per, components_per;
  };
  const std::vector<Case> cases = {{"ablate-heads", 5, 2, 4}, {"ablate-heads", 1, 1, 1},
                                   {"patch-resid", 4, 3, 5},  {"patch-heads-by-pos", 3, 1, 7},
                                   {"detect-heads", 7, 3, 0}, {"dla", 2, 1, 0},
                                   {"ablate-layers", 3, 3, 3}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.method);
    JobPlan plan = Plan(c.method, c.n_prompts, c.prompts_per, c.components_per);
    std::vector<ShardResult> shards;
    for (auto it = plan.shards.rbegin(); it != plan.shards.rend(); ++it) {  // any order
      ShardResult s = Shard(plan, *it);
      ASSERT_TRUE(CheckShardResult(plan, s.range, s.tensors).ok());
      shards.push_back(std::move(s));
    }
    auto merged = MergeShards(plan, shards);
    ASSERT_TRUE(merged.ok()) << merged.status();
    const Array& baseline = Find(*merged, "baseline");
    for (int p = 0; p < c.n_prompts; ++p) EXPECT_EQ(baseline.values[p], 0.5f + p);
    if (plan.patching)
      EXPECT_EQ(Find(*merged, "reference").values[1 % c.n_prompts], 0.25f + 1 % c.n_prompts);
    for (size_t g = 0; g < plan.grids.size(); ++g) {
      const Array& pp = Find(*merged, plan.grids[g].name + ".per_prompt");
      const Array& mean = Find(*merged, plan.grids[g].name);
      const int64_t n_c = plan.grids[g].NumComponents();
      EXPECT_EQ(pp.shape, (std::vector<int64_t>{c.n_prompts, n_c}));
      EXPECT_EQ(mean.shape, plan.grids[g].shape);
      for (int64_t comp = 0; comp < n_c; ++comp) {
        double sum = 0;
        for (int p = 0; p < c.n_prompts; ++p) {
          EXPECT_EQ(pp.values[p * n_c + comp], Value(g, p, comp));
          sum += Value(g, p, comp);
        }
        EXPECT_NEAR(mean.values[comp], sum / c.n_prompts, 1e-4);
      }
    }
  }
}

TEST(MergerTest, MissingOrDuplicateCoverageIsAnError) {
  JobPlan plan = Plan("ablate-heads", 4, 2, 3);
  std::vector<ShardResult> shards;
  for (const ShardRange& r : plan.shards) shards.push_back(Shard(plan, r));
  auto missing = shards;
  missing.pop_back();
  EXPECT_EQ(MergeShards(plan, missing).status().code(), absl::StatusCode::kInvalidArgument);
  auto twice = shards;
  twice.push_back(shards.back());
  auto merged = MergeShards(plan, twice);
  ASSERT_FALSE(merged.ok());
  EXPECT_NE(merged.status().message().find("2 times"), std::string::npos) << merged.status();
}

TEST(MergerTest, CheckShardResultRejectsMalformedResults) {
  JobPlan plan = Plan("patch-heads", 4, 2, 3);
  const ShardRange r = plan.shards.front();
  struct Case {
    std::function<void(std::vector<Array>*)> edit;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {[](std::vector<Array>* t) { t->pop_back(); }, "missing"},
      {[](std::vector<Array>* t) { t->push_back(t->back()); }, "twice"},
      {[](std::vector<Array>* t) {
         t->back().shape = {2, 2};
       },
       "shape"},
      {[](std::vector<Array>* t) { t->back().values.pop_back(); }, "values"},
      {[](std::vector<Array>* t) { t->back().name = "logits"; }, "unexpected"},
  };
  for (const Case& c : cases) {
    std::vector<Array> tensors = Shard(plan, r).tensors;
    c.edit(&tensors);
    absl::Status s = CheckShardResult(plan, r, tensors);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.needle;
    EXPECT_NE(s.message().find(c.needle), std::string::npos) << s;
  }
}

}  // namespace
}  // namespace lensgrid::service
