// The LibTorch-free pieces of `lensgrid search --coordinator`: the job spec it submits (no
// model files: a model id and a DatasetRequest), the search context read back from the job's
// status, and the report's attention patterns from a worker's RunWithCache reply.
#include <cstring>
#include <string>
#include <vector>

#include "client/search_context.h"
#include "client/search_job.h"
#include "client/worker_views.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lensgrid {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::string kSha(64, 'a');

// A status as the coordinator reports a prepared induction job.
v1::JobStatus PreparedStatus() {
  v1::JobStatus s;
  s.set_job_id("j-7");
  s.set_state(v1::JOB_SUCCEEDED);
  s.set_method("ablate-heads");
  s.set_model_id("lensgrid-tiny");
  s.set_prepared(true);
  s.set_n_prompts(12);
  s.set_n_pos(33);
  v1::JobSpec* spec = s.mutable_spec();
  spec->set_model_id("lensgrid-tiny");
  spec->set_weights_sha256(kSha);
  spec->set_method(v1::METHOD_ABLATE_HEADS);
  spec->set_metric(v1::METRIC_LOSS);
  spec->set_ablation(v1::ABLATION_MEAN);
  spec->set_n_layers(2);
  spec->set_n_heads(4);
  spec->set_attn_only(true);
  spec->mutable_dataset()->set_name("induction");
  spec->mutable_dataset()->set_n_prompts(12);
  spec->mutable_dataset()->set_seed(5);
  spec->mutable_dataset()->set_seq_len(16);
  return s;
}

TEST(ContextFromJobStatusTest, ReadsEverythingFromThePreparedStatus) {
  ASSERT_TRUE(StatusDescribesJob(PreparedStatus()));
  absl::StatusOr<SearchContext> c = ContextFromJobStatus(PreparedStatus());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->method, "ablate-heads");
  EXPECT_EQ(c->metric, "loss");
  EXPECT_EQ(c->ablation, "mean");
  EXPECT_FALSE(c->normalize);
  EXPECT_EQ(c->model_id, "lensgrid-tiny");
  EXPECT_EQ(c->model_dir, "");
  EXPECT_EQ(c->weights_sha256, kSha);
  EXPECT_FALSE(c->processed.has_value());  // an older coordinator: no spec.model
  EXPECT_EQ(c->n_layers, 2);
  EXPECT_EQ(c->n_heads, 4);
  EXPECT_TRUE(c->attn_only);
  v1::JobStatus with_model = PreparedStatus();
  with_model.mutable_spec()->mutable_model()->set_processed(false);
  EXPECT_EQ(ContextFromJobStatus(with_model)->processed, std::optional<bool>(false));
  EXPECT_EQ(c->dataset, "induction");
  EXPECT_EQ(c->n_prompts, 12);
  EXPECT_EQ(c->positions, 33);
  EXPECT_EQ(c->seed, 5u);
  EXPECT_EQ(c->seq_len, 16);
  EXPECT_EQ(c->run, nlohmann::ordered_json({{"where", "coordinator"}, {"job_id", "j-7"}}));
}

TEST(ContextFromJobStatusTest, DefaultsAsTheCoordinatorReadsThem) {
  v1::JobStatus s = PreparedStatus();
  s.mutable_spec()->set_method(v1::SEARCH_METHOD_UNSPECIFIED);  // the status's name then
  s.mutable_spec()->set_metric(v1::SEARCH_METRIC_UNSPECIFIED);
  s.mutable_spec()->set_ablation(v1::ABLATION_UNSPECIFIED);
  s.mutable_spec()->mutable_dataset()->set_seq_len(0);
  s.mutable_spec()->clear_model_id();
  absl::StatusOr<SearchContext> c = ContextFromJobStatus(s);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->method, "ablate-heads");
  EXPECT_EQ(c->metric, "logit-diff");
  EXPECT_EQ(c->ablation, "zero");
  EXPECT_EQ(c->seq_len, 16);
  EXPECT_EQ(c->model_id, "lensgrid-tiny");  // JobStatus.model_id
}

TEST(ContextFromJobStatusTest, JsonlAndInlineDatasets) {
  v1::JobStatus s = PreparedStatus();
  s.mutable_spec()->mutable_dataset()->set_name("prompts.jsonl");
  s.mutable_spec()->set_method(v1::METHOD_PATCH_RESID);
  absl::StatusOr<SearchContext> c = ContextFromJobStatus(s);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->dataset, "prompts.jsonl");
  EXPECT_EQ(c->method, "patch-resid");

  s.mutable_spec()->clear_dataset();
  c = ContextFromJobStatus(s);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->dataset, "inline");
  EXPECT_EQ(c->n_prompts, 12);
}

TEST(ContextFromJobStatusTest, AnUnpreparedJobIsRefused) {
  v1::JobStatus s = PreparedStatus();
  s.set_prepared(false);
  s.mutable_spec()->set_n_layers(0);
  EXPECT_FALSE(StatusDescribesJob(s));
  absl::StatusOr<SearchContext> c = ContextFromJobStatus(s);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(c.status().message(), HasSubstr("j-7 has not been prepared"));
  EXPECT_THAT(c.status().message(), HasSubstr("lensgrid-tiny"));
  EXPECT_FALSE(StatusDescribesJob(v1::JobStatus()));
}

TEST(ContextFromJobStatusTest, AnUnknownEnumValueIsAnError) {
  v1::JobStatus s = PreparedStatus();
  s.mutable_spec()->set_metric(static_cast<v1::SearchMetric>(99));
  EXPECT_EQ(ContextFromJobStatus(s).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SearchContextJsonTest, RoundTripsThroughJson) {
  SearchContext c = *ContextFromJobStatus(PreparedStatus());
  c.normalize = true;
  nlohmann::ordered_json j = ContextToJson(c);
  EXPECT_EQ(j["model"]["id"], "lensgrid-tiny");
  EXPECT_TRUE(j["model"]["processed"].is_null());
  EXPECT_EQ(j["model"]["attn_only"], true);
  absl::StatusOr<SearchContext> back = ContextFromJson(j.dump());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(ContextToJson(*back), j);
  EXPECT_FALSE(back->processed.has_value());

  c.processed = false;
  c.model_id.clear();
  j = ContextToJson(c);
  EXPECT_FALSE(j["model"].contains("id"));
  back = ContextFromJson(j.dump());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->processed, std::optional<bool>(false));
}

TEST(SearchContextJsonTest, ReadsTheClientJsonOfOlderJobs) {
  // As `lensgrid search` wrote JobSpec.client_json before the status described the job.
  const std::string old = R"({"method": "ablate-heads", "metric": "logit-diff",
      "ablation": "zero", "normalize": false,
      "model": {"dir": "/m", "weights_sha256": "ab", "processed": true, "n_layers": 2,
                "n_heads": 3},
      "dataset": {"name": "ioi", "n_prompts": 6, "seed": 1, "seq_len": 16, "positions": 17},
      "run": {"where": "coordinator"}})";
  absl::StatusOr<SearchContext> c = ContextFromJson(old);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_dir, "/m");
  EXPECT_EQ(c->model_id, "");
  EXPECT_EQ(c->processed, std::optional<bool>(true));
  EXPECT_FALSE(c->attn_only);
  EXPECT_EQ(c->positions, 17);
  EXPECT_THAT(ContextFromJson("{}").status().message(), HasSubstr("\"method\""));
  EXPECT_THAT(ContextFromJson("").status().message(), HasSubstr("no lensgrid search"));
}

SearchJobRequest InductionRequest() {
  SearchJobRequest r;
  r.model_id = "lensgrid-tiny";
  r.method = "ablate-heads";
  r.metric = "loss";
  r.ablation = "zero";
  r.dataset = "induction";
  r.n_prompts = 12;
  r.seed = 3;
  r.seq_len = 10;
  r.prompts_per_shard = 4;
  return r;
}

TEST(MakeSearchJobSpecTest, ABuiltinDatasetIsRequestedNotBuilt) {
  absl::StatusOr<v1::JobSpec> s = MakeSearchJobSpec(InductionRequest());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->model_id(), "lensgrid-tiny");
  EXPECT_EQ(s->weights_sha256(), "");
  EXPECT_EQ(s->method(), v1::METHOD_ABLATE_HEADS);
  EXPECT_EQ(s->metric(), v1::METRIC_LOSS);
  EXPECT_EQ(s->ablation(), v1::ABLATION_ZERO);
  EXPECT_EQ(s->prompts_size(), 0);
  EXPECT_EQ(s->n_layers(), 0);
  EXPECT_EQ(s->n_heads(), 0);
  // client_json (deprecated) is not sent: the job's status describes the job.
  EXPECT_TRUE(s->GetReflection()
                  ->GetString(*s, s->GetDescriptor()->FindFieldByName("client_json"))
                  .empty());
  ASSERT_TRUE(s->has_dataset());
  EXPECT_EQ(s->dataset().name(), "induction");
  EXPECT_EQ(s->dataset().n_prompts(), 12);
  EXPECT_EQ(s->dataset().seed(), 3u);
  EXPECT_EQ(s->dataset().seq_len(), 10);
  EXPECT_TRUE(s->dataset().jsonl().empty());
  EXPECT_EQ(s->prompts_per_shard(), 4);
  EXPECT_EQ(s->components_per_shard(), 0);
  EXPECT_EQ(s->label(), "induction ablate-heads (12 prompts)");
}

TEST(MakeSearchJobSpecTest, AJsonlDatasetTravelsAsItsBytes) {
  SearchJobRequest r = InductionRequest();
  r.dataset = "data.jsonl";
  r.jsonl = "{\"tokens\": [1, 2], \"answer\": 3, \"wrong\": 4}\n";
  r.weights_sha256 = std::string(64, 'F');
  absl::StatusOr<v1::JobSpec> s = MakeSearchJobSpec(r);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->dataset().name(), "data.jsonl");
  EXPECT_EQ(s->dataset().jsonl(), r.jsonl);
  EXPECT_EQ(s->weights_sha256(), std::string(64, 'f'));
  EXPECT_EQ(s->label(), "data.jsonl ablate-heads");
}

TEST(MakeSearchJobSpecTest, BadFlagsAreNamed) {
  auto error = [](void (*edit)(SearchJobRequest*)) {
    SearchJobRequest r = InductionRequest();
    edit(&r);
    absl::Status s = MakeSearchJobSpec(r).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    return std::string(s.message());
  };
  EXPECT_THAT(error([](SearchJobRequest* r) { r->model_id.clear(); }), HasSubstr("--model"));
  EXPECT_THAT(error([](SearchJobRequest* r) { r->weights_sha256 = "abc"; }),
              HasSubstr("--weights-sha256 must be 64 hex digits"));
  EXPECT_THAT(error([](SearchJobRequest* r) { r->weights_sha256 = std::string(64, 'g'); }),
              HasSubstr("64 hex digits"));
  EXPECT_THAT(error([](SearchJobRequest* r) { r->method = "ablate-everything"; }),
              HasSubstr("unknown method"));
  EXPECT_THAT(error([](SearchJobRequest* r) { r->metric = "accuracy"; }),
              HasSubstr("unknown metric"));
  EXPECT_THAT(error([](SearchJobRequest* r) { r->n_prompts = 0; }), HasSubstr("--n-prompts"));
  EXPECT_THAT(error([](SearchJobRequest* r) { r->dataset.clear(); }), HasSubstr("--dataset"));
}

v1::WorkerInfo Worker(const std::string& name, const std::string& model, const std::string& sha,
                      bool alive, const std::string& address, int leases = 0) {
  v1::WorkerInfo w;
  w.set_name(name);
  w.set_model_id(model);
  w.set_weights_sha256(sha);
  w.set_alive(alive);
  w.set_address(address);
  w.set_leases(leases);
  return w;
}

std::vector<std::string> Names(const std::vector<v1::WorkerInfo>& workers) {
  std::vector<std::string> names;
  for (const v1::WorkerInfo& w : workers) names.push_back(w.name());
  return names;
}

TEST(PickViewWorkersTest, AliveWithAnAddressServingTheModelAndWeights) {
  const std::string other(64, 'b');
  std::vector<v1::WorkerInfo> workers = {Worker("lost", "m", kSha, false, "h:1"),
                                         Worker("no-address", "m", kSha, true, ""),
                                         Worker("other-model", "x", kSha, true, "h:2"),
                                         Worker("other-weights", "m", other, true, "h:3"),
                                         Worker("busy", "m", kSha, true, "h:4", 2),
                                         Worker("idle", "m", kSha, true, "h:5", 0)};
  EXPECT_THAT(Names(PickViewWorkers(workers, "m", kSha)), ElementsAre("idle", "busy"));
  EXPECT_THAT(Names(PickViewWorkers(workers, "m", "")),
              ElementsAre("other-weights", "idle", "busy"));
  EXPECT_TRUE(PickViewWorkers(workers, "nope", "").empty());
}

TEST(PatternRequestTest, TheFirstPromptsTokensAndOneHookPerLayer) {
  v1::InlinePrompt prompt;
  for (int64_t id : std::vector<int64_t>{50256, 7, 300, int64_t{1} << 40}) prompt.add_tokens(id);
  v1::RunWithCacheRequest r = PatternRequest(prompt, {{1, 1}, {0, 1}, {1, 3}}, kSha);
  const v1::Tensor& t = r.input().tokens();
  EXPECT_EQ(t.dtype(), v1::I64);
  EXPECT_THAT(t.shape(), ElementsAre(1, 4));
  ASSERT_EQ(t.data().size(), 32u);
  std::vector<int64_t> ids(4);
  std::memcpy(ids.data(), t.data().data(), 32);  // little-endian, as the machines here
  EXPECT_THAT(ids, ElementsAre(50256, 7, 300, int64_t{1} << 40));
  EXPECT_THAT(r.cache().names(),
              ElementsAre("blocks.1.attn.hook_pattern", "blocks.0.attn.hook_pattern"));
  EXPECT_TRUE(r.cache().remove_batch_dim());
  EXPECT_EQ(r.cache().dtype(), v1::F32);
  EXPECT_EQ(r.options().return_type(), v1::RETURN_NONE);
  EXPECT_EQ(r.expected_weights_sha256(), kSha);

  v1::InlinePrompt long_prompt;
  for (size_t i = 0; i < kMaxAttentionTokens + 40; ++i) long_prompt.add_tokens(5);
  EXPECT_THAT(PatternRequest(long_prompt, {{0, 0}}, "").input().tokens().shape(),
              ElementsAre(1, static_cast<int64_t>(kMaxAttentionTokens)));
}

// A pattern tensor [heads, n, n] (optionally with a batch dim of 1) whose weight at
// (head, q, k) is head + q / 10 + k / 100, as little-endian F32.
WireTensor Pattern(int layer, int heads, int n, bool batch_dim = false) {
  WireTensor t;
  t.name = "blocks." + std::to_string(layer) + ".attn.hook_pattern";
  t.dtype = *FromProtoDType(v1::F32, "dtype");
  if (batch_dim) t.shape.push_back(1);
  t.shape.insert(t.shape.end(), {heads, n, n});
  for (int h = 0; h < heads; ++h) {
    for (int q = 0; q < n; ++q) {
      for (int k = 0; k < n; ++k) {
        const float f = static_cast<float>(h + q / 10.0 + k / 100.0);
        uint32_t u;
        std::memcpy(&u, &f, 4);
        for (int b = 0; b < 4; ++b) t.data.push_back(static_cast<char>((u >> (8 * b)) & 0xff));
      }
    }
  }
  return t;
}

TEST(AttentionViewsFromTensorsTest, OneViewPerHeadWithTheTokensAsLabels) {
  const std::vector<int64_t> ids = {50256, 11, 12};
  absl::StatusOr<std::vector<AttentionView>> views =
      AttentionViewsFromTensors({Pattern(0, 4, 3), Pattern(1, 4, 3, /*batch_dim=*/true)},
                                {{1, 2}, {0, 1}}, ids, {"<|endoftext|>", " a", " b"});
  ASSERT_TRUE(views.ok()) << views.status();
  ASSERT_EQ(views->size(), 2u);
  const AttentionView& v = (*views)[0];
  EXPECT_EQ(v.hook, "blocks.1.attn.hook_pattern");
  EXPECT_EQ(v.layer, 1);
  EXPECT_EQ(v.head, 2);
  EXPECT_THAT(v.tokens, ElementsAre("<|endoftext|>", " a", " b"));
  ASSERT_EQ(v.pattern.size(), 9u);
  EXPECT_FLOAT_EQ(v.pattern[0], 2.0f);
  EXPECT_FLOAT_EQ(v.pattern[1 * 3 + 2], 2.12f);  // (q=1, k=2)
  EXPECT_FLOAT_EQ((*views)[1].pattern[2 * 3 + 0], 1.2f);
  EXPECT_EQ((*views)[1].hook, "blocks.0.attn.hook_pattern");

  // Labels that do not match the tokens are replaced by the ids.
  views = AttentionViewsFromTensors({Pattern(0, 4, 3)}, {{0, 0}}, ids, {"x"});
  ASSERT_TRUE(views.ok()) << views.status();
  EXPECT_THAT((*views)[0].tokens, ElementsAre("#50256", "#11", "#12"));
}

TEST(AttentionViewsFromTensorsTest, ALongPromptIsCutLikeTheRequest) {
  const int n = static_cast<int>(kMaxAttentionTokens);
  std::vector<int64_t> ids(n + 10, 7);
  std::vector<std::string> labels(n + 10, "t");
  absl::StatusOr<std::vector<AttentionView>> views =
      AttentionViewsFromTensors({Pattern(0, 1, n)}, {{0, 0}}, ids, labels);
  ASSERT_TRUE(views.ok()) << views.status();
  EXPECT_EQ((*views)[0].tokens.size(), static_cast<size_t>(n));
  EXPECT_EQ((*views)[0].pattern.size(), static_cast<size_t>(n) * n);
}

TEST(AttentionViewsFromTensorsTest, MalformedRepliesAreNamed) {
  const std::vector<int64_t> ids = {1, 2, 3};
  auto error = [&](std::vector<WireTensor> tensors, HeadList heads) {
    absl::Status s = AttentionViewsFromTensors(tensors, heads, ids, {}).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
    return std::string(s.message());
  };
  EXPECT_THAT(error({Pattern(0, 4, 3)}, {{1, 0}}),
              HasSubstr("no tensor \"blocks.1.attn.hook_pattern\""));
  WireTensor f16 = Pattern(0, 4, 3);
  f16.dtype = *FromProtoDType(v1::F16, "dtype");
  EXPECT_THAT(error({f16}, {{0, 0}}), HasSubstr("is F16, expected F32"));
  EXPECT_THAT(error({Pattern(0, 4, 2)}, {{0, 0}}), HasSubstr("expected [n_heads, 3, 3]"));
  EXPECT_THAT(error({Pattern(0, 4, 3)}, {{0, 4}}), HasSubstr("head 4 is not one"));
  WireTensor short_of_bytes = Pattern(0, 4, 3);
  short_of_bytes.data.resize(10);
  EXPECT_THAT(error({short_of_bytes}, {{0, 0}}), HasSubstr("has 10 bytes, expected 144"));
}

}  // namespace
}  // namespace lensgrid
