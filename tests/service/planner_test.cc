// Planner: table-driven, no network.
#include "service/planner.h"

#include <functional>
#include <set>

#include "common/error_details.h"
#include "common/search_proto.h"
#include "gtest/gtest.h"

// Reads the deprecated name fields on purpose: what older clients send.
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

namespace lensgrid::service {
namespace {

v1::JobSpec Spec(const std::string& method, int n_prompts, int len) {
  v1::JobSpec s;
  s.set_model_id("m");
  s.set_weights_sha256("abc");
  s.set_method(ToProto(ParseMethod(method).value()));
  s.set_n_layers(2);
  s.set_n_heads(4);
  for (int i = 0; i < n_prompts; ++i) {
    v1::InlinePrompt* p = s.add_prompts();
    for (int t = 0; t < len + (i % 2); ++t) p->add_tokens(t + i);
    p->add_answers(1);
    p->add_wrongs(2);
  }
  return s;
}

// Every (prompt, component) exactly once.
void ExpectExactCover(const JobPlan& plan) {
  std::vector<int> cov(plan.n_prompts * plan.n_components, 0);
  for (const ShardRange& r : plan.shards) {
    for (int64_t p = r.prompt_begin; p < r.prompt_end; ++p)
      for (int64_t c = r.component_begin; c < r.component_end; ++c)
        ++cov[p * plan.n_components + c];
  }
  for (int v : cov) ASSERT_EQ(v, 1);
}

TEST(PlannerTest, CoversEveryCellOnceForEachShardSize) {
  struct Case {
    std::string method;
    int n_prompts, len, prompts_per, components_per;
    size_t want_shards;
  };
  const std::vector<Case> cases = {
      {"ablate-heads", 10, 5, 3, 3, 4 * 3},     // 8 components / 3 -> 3, 10 / 3 -> 4
      {"ablate-heads", 1, 5, 0, 1, 8},          // one per head
      {"ablate-layers", 7, 5, 7, 0, 1},         // cost model: all 4 components fit
      {"patch-resid", 4, 6, 2, 5, 2 * 3},       // [2, 7] = 14 components / 5 -> 3
      {"patch-heads-by-pos", 3, 3, 1, 100, 3},  // components capped at 2*4*4 = 32
      {"detect-heads", 9, 4, 4, 1, 3},          // prompts only, components ignored
      {"dla", 5, 4, 0, 0, 1},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.method);
    v1::JobSpec spec = Spec(c.method, c.n_prompts, c.len);
    spec.set_prompts_per_shard(c.prompts_per);
    spec.set_components_per_shard(c.components_per);
    auto plan = PlanJob(spec);
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->shards.size(), c.want_shards);
    ExpectExactCover(*plan);
  }
}

TEST(PlannerTest, CostModelSizesShards) {
  v1::JobSpec spec = Spec("ablate-heads", 64, 100);
  PlannerOptions opts;
  opts.batch_tokens = 1600;  // 16 prompts of ~101 tokens
  opts.shard_cost = 16 * 101 * 2;
  auto plan = PlanJob(spec, opts);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->shards.front().num_prompts(), 15);
  EXPECT_EQ(plan->shards.front().num_components(), 2);
  ExpectExactCover(*plan);
}

TEST(PlannerTest, RejectsBadSpecs) {
  struct Case {
    std::function<void(v1::JobSpec*)> edit;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {[](v1::JobSpec* s) {
         s->clear_method();
         s->set_method_name("ablate-everything");
       },
       "unknown method"},
      {[](v1::JobSpec* s) { s->clear_method(); }, "method is unspecified"},
      {[](v1::JobSpec* s) { s->set_method(static_cast<v1::SearchMethod>(99)); },
       "method 99 is not one"},
      {[](v1::JobSpec* s) { s->set_metric_name("accuracy"); }, "unknown metric"},
      {[](v1::JobSpec* s) { s->set_ablation_name("noise"); }, "unknown ablation"},
      {[](v1::JobSpec* s) { s->clear_prompts(); }, "no prompts"},
      {[](v1::JobSpec* s) { s->set_n_heads(0); }, "n_heads must be set"},
      {[](v1::JobSpec* s) { s->set_n_heads(-1); }, "n_heads is -1"},
      {[](v1::JobSpec* s) { s->clear_weights_sha256(); }, "weights_sha256"},
      {[](v1::JobSpec* s) { s->mutable_prompts(0)->add_corrupted_tokens(1); }, "corrupted_tokens"},
      {[](v1::JobSpec* s) { s->set_prompts_per_shard(-1); }, "negative"},
  };
  for (const Case& c : cases) {
    v1::JobSpec spec = Spec("ablate-heads", 3, 4);
    c.edit(&spec);
    auto plan = PlanJob(spec);
    ASSERT_FALSE(plan.ok()) << c.needle;
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(plan.status().message().find(c.needle), std::string::npos) << plan.status();
  }
}

// The probe's crashes and stalls: dimensions whose products overflow, shard
// counts that would take gigabytes, specs no worker can receive. Each is
// refused before anything is allocated, with the value and the limit named.
TEST(PlannerTest, RefusesOverflowingAndOversizedJobs) {
  struct Case {
    std::string name;
    std::function<void(v1::JobSpec*)> edit;
    absl::StatusCode code;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {"2^62 layers", [](v1::JobSpec* s) { s->set_n_layers(int64_t{1} << 62); },
       absl::StatusCode::kInvalidArgument, "n_layers is 4611686018427387904"},
      {"2^32 x 2^31",
       [](v1::JobSpec* s) {
         s->set_n_layers(int64_t{1} << 32);
         s->set_n_heads(int64_t{1} << 31);
       },
       absl::StatusCode::kInvalidArgument, "n_layers"},
      {"negative heads", [](v1::JobSpec* s) { s->set_n_heads(-4); },
       absl::StatusCode::kInvalidArgument, "n_heads is -4"},
      {"10^6 x 10^6 heads, one per shard",
       [](v1::JobSpec* s) {
         s->set_n_layers(1000000);
         s->set_n_heads(1000000);
         s->set_components_per_shard(1);
       },
       absl::StatusCode::kInvalidArgument, "n_layers is 1000000"},
      {"2048 x 2048 heads, one per shard",
       [](v1::JobSpec* s) {
         s->set_n_layers(2048);
         s->set_n_heads(2048);
         s->set_components_per_shard(1);
       },
       absl::StatusCode::kResourceExhausted, "over the limit of 100000"},
      {"client_json of 1 MiB",
       [](v1::JobSpec* s) { s->set_client_json(std::string(1 << 20, 'x')); },
       absl::StatusCode::kResourceExhausted, "client_json is 1048576 bytes"},
      {"label of 1 MB", [](v1::JobSpec* s) { s->set_label(std::string(1000000, 'x')); },
       absl::StatusCode::kResourceExhausted, "label is 1000000 bytes"},
      {"model id of 1 MB (echoed cut)",
       [](v1::JobSpec* s) { s->set_model_id(std::string(1000000, 'm')); },
       absl::StatusCode::kInvalidArgument, "(1000000 bytes)"},
      {"unknown 1 MB method (echoed cut)",
       [](v1::JobSpec* s) {
         s->clear_method();
         s->set_method_name(std::string(200, 'z'));
       },
       absl::StatusCode::kInvalidArgument, "(200 bytes)"},
      {"max_attempts 2^31-1", [](v1::JobSpec* s) { s->set_max_attempts(2147483647); },
       absl::StatusCode::kInvalidArgument, "max_attempts"},
      {"negative token", [](v1::JobSpec* s) { s->mutable_prompts(1)->set_tokens(0, -5); },
       absl::StatusCode::kInvalidArgument, "negative token id -5"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    v1::JobSpec spec = Spec("ablate-heads", 3, 4);
    c.edit(&spec);
    auto plan = PlanJob(spec);
    ASSERT_FALSE(plan.ok());
    EXPECT_EQ(plan.status().code(), c.code) << plan.status();
    EXPECT_NE(plan.status().message().find(c.needle), std::string::npos) << plan.status();
    EXPECT_LT(plan.status().message().size(), 600u) << "echoes its input";
  }
}

TEST(PlannerTest, RefusesASpecThatNoLeaseCanCarry) {
  v1::JobSpec spec = Spec("ablate-heads", 1, 1);
  spec.mutable_prompts(0)->mutable_tokens()->Resize(400000, 50000);
  PlannerOptions opts;
  opts.max_shard_spec_bytes = 1 << 20;  // 400k x 3-byte varints is ~1.2 MB
  opts.max_prompt_tokens = 1 << 20;
  auto plan = PlanJob(spec, opts);
  ASSERT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted) << plan.status();
  EXPECT_NE(plan.status().message().find("over the 1048576-byte limit"), std::string::npos)
      << plan.status();
  opts.max_shard_spec_bytes = 4 << 20;
  plan = PlanJob(spec, opts);
  ASSERT_TRUE(plan.ok()) << plan.status();
  // The estimate bounds the size: every lease's spec fits the limit.
  const int64_t bytes = MakeShardSpec(*plan, plan->shards[0]).ByteSizeLong();
  EXPECT_LE(bytes, plan->max_spec_bytes);
  EXPECT_LE(plan->max_spec_bytes, opts.max_shard_spec_bytes);
}

// A shard carries its own prompts: a job far over the lease limit runs in
// shards under it, unless the method needs every prompt in every lease.
TEST(PlannerTest, ShardsCarryOnlyTheirOwnPromptsExceptForMeanAblation) {
  v1::JobSpec spec = Spec("ablate-heads", 100, 1);
  for (v1::InlinePrompt& p : *spec.mutable_prompts())
    p.mutable_tokens()->Resize(4000, 50000);  // ~12 KB each, 1.2 MB in all
  spec.set_prompts_per_shard(10);
  PlannerOptions opts;
  opts.max_shard_spec_bytes = 200 << 10;
  opts.max_prompt_tokens = 1 << 20;
  auto plan = PlanJob(spec, opts);
  ASSERT_TRUE(plan.ok()) << plan.status();
  int64_t largest = 0;
  for (const ShardRange& r : plan->shards) {
    v1::ShardSpec s = MakeShardSpec(*plan, r);
    EXPECT_EQ(s.prompts_size(), r.num_prompts());
    EXPECT_EQ(s.mean_prompts_size(), 0);
    largest = std::max<int64_t>(largest, s.ByteSizeLong());
  }
  EXPECT_LE(largest, plan->max_spec_bytes);
  EXPECT_LT(plan->max_spec_bytes, opts.max_shard_spec_bytes);
  spec.set_ablation(v1::ABLATION_MEAN);
  plan = PlanJob(spec, opts);
  ASSERT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(plan.status().message().find("mean ablation carries every prompt"), std::string::npos)
      << plan.status();
}

TEST(PlannerTest, PlannerChosenShardSizesGrowToTheShardLimit) {
  v1::JobSpec spec = Spec("patch-heads-by-pos", 50, 40);
  spec.set_n_layers(48);
  spec.set_n_heads(25);  // 48 x 41 x 25 = 49200 components
  PlannerOptions opts;
  opts.shard_cost = 1;  // the cost model alone would make 1 per shard
  opts.batch_tokens = 1;
  opts.max_shards = 1000;
  auto plan = PlanJob(spec, opts);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_LE(plan->shards.size(), 1000u);
  EXPECT_GE(plan->shards.size(), 500u);
  ExpectExactCover(*plan);
  // Sizes the client chose are not changed: refused instead.
  spec.set_components_per_shard(1);
  EXPECT_EQ(PlanJob(spec, opts).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(PlannerTest, RefusesAResultOverItsByteLimit) {
  v1::JobSpec spec = Spec("patch-resid", 1000, 1000);
  spec.set_n_layers(100);
  PlannerOptions opts;
  opts.max_result_bytes = 100 << 20;  // 1000 prompts x 100 x 1001 x 4 = 400 MB
  auto plan = PlanJob(spec, opts);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(plan.status().message().find("result would be"), std::string::npos) << plan.status();
}

// Beside the message, what a program reads: the field that was wrong, the
// limit that was passed.
TEST(PlannerTest, ErrorsNameTheFieldOrTheLimitForPrograms) {
  v1::JobSpec spec = Spec("ablate-heads", 3, 4);
  spec.set_n_heads(-4);
  ErrorDetails bad = GetErrorDetails(PlanJob(spec).status());
  ASSERT_EQ(bad.field_violations.size(), 1u);
  EXPECT_EQ(bad.field_violations[0].field, "spec.n_heads");
  EXPECT_NE(bad.field_violations[0].description.find("n_heads is -4"), std::string::npos);

  spec = Spec("ablate-heads", 3, 4);
  spec.set_n_layers(2048);
  spec.set_n_heads(2048);
  spec.set_components_per_shard(1);
  absl::Status over = PlanJob(spec).status();
  ASSERT_EQ(over.code(), absl::StatusCode::kResourceExhausted);
  ErrorDetails limit = GetErrorDetails(over);
  ASSERT_TRUE(limit.info.has_value());
  EXPECT_EQ(limit.info->reason, "LIMIT_EXCEEDED");
  EXPECT_EQ(limit.info->metadata.at("limit"), "--max-shards");
  ASSERT_EQ(limit.quota_violations.size(), 1u);
  EXPECT_EQ(limit.quota_violations[0].subject, "--max-shards");
}

TEST(PlannerTest, SpecWithoutPromptsKeepsEveryOtherField) {
  v1::JobSpec spec = Spec("patch-resid", 3, 4);
  spec.set_metric(v1::METRIC_KL);
  spec.set_ablation(v1::ABLATION_MEAN);
  spec.set_attn_only(true);
  spec.set_prompts_per_shard(2);
  spec.set_components_per_shard(5);
  spec.set_max_attempts(7);
  spec.set_label("label");
  spec.set_client_json("{}");
  v1::JobSpec meta = SpecWithoutPrompts(spec);
  EXPECT_EQ(meta.prompts_size(), 0);
  *meta.mutable_prompts() = spec.prompts();
  EXPECT_EQ(meta.SerializeAsString(), spec.SerializeAsString());
}

TEST(PlannerTest, ShardSpecCarriesItsRangeTyped) {
  v1::JobSpec spec = Spec("patch-resid", 3, 3);
  for (int64_t t : {7, 8, 9, 10}) spec.mutable_prompts(1)->add_corrupted_tokens(t);
  spec.mutable_prompts(1)->set_loss_start(2);
  spec.set_metric(v1::METRIC_PROB);
  auto plan = PlanJob(spec);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->n_pos, 4);
  v1::ShardSpec s = MakeShardSpec(*plan, {1, 2, 3, 5});
  EXPECT_EQ(s.method(), v1::METHOD_PATCH_RESID);
  EXPECT_EQ(s.metric(), v1::METRIC_PROB);
  EXPECT_EQ(s.ablation(), v1::ABLATION_ZERO);
  EXPECT_EQ(s.n_prompts(), 3);
  EXPECT_EQ(s.n_pos(), 4);
  EXPECT_EQ(s.prompt_begin(), 1);
  EXPECT_EQ(s.prompt_end(), 2);
  EXPECT_EQ(s.component_begin(), 3);
  EXPECT_EQ(s.component_end(), 5);
  ASSERT_EQ(s.prompts_size(), 1);  // its own prompt only
  EXPECT_EQ(s.prompts(0).SerializeAsString(), spec.prompts(1).SerializeAsString());
  EXPECT_EQ(s.mean_prompts_size(), 0);
}

TEST(PlannerTest, TheDeprecatedNamesAreStillAccepted) {
  v1::JobSpec spec = Spec("patch-resid", 2, 3);
  spec.clear_method();
  spec.set_method_name("ablate-layers");
  spec.set_metric_name("kl");
  spec.set_ablation_name("mean");
  auto plan = PlanJob(spec);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->method, Method::kAblateLayers);
  EXPECT_EQ(plan->metric, MetricKind::kKl);
  EXPECT_EQ(plan->ablation, AblationKind::kMean);
  v1::ShardSpec s = MakeShardSpec(*plan, plan->shards.front());
  EXPECT_EQ(s.mean_prompts_size(), 2);  // the mean is over every prompt
  spec.set_method(v1::METHOD_DLA);      // the enum wins
  EXPECT_EQ(PlanJob(spec)->method, Method::kDla);
}

}  // namespace
}  // namespace lensgrid::service
