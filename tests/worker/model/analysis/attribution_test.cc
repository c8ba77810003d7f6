// Attribution patching (attribute-*) and the gradients under it, on small
// random models in float64: RunWithGradients equals central finite
// differences, every attribute-* method equals the same computation written
// here with LibTorch (one prompt at a time, no padding, no library batching),
// identical clean and corrupted prompts score 0, and where clean and corrupted
// differ little the estimate converges to the exact patch-* delta at second
// order. On the embedded model, its head ranking is compared with exact
// patching's on the induction dataset.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <numeric>
#include <random>

#include "gtest/gtest.h"
#include "tests/worker/model/test_util.h"
#include "worker/model/activation_edit.h"
#include "worker/model/analysis/search.h"
#include "worker/model/gradients.h"

namespace lensgrid {
namespace {

using ::lensgrid::testing::AllClose;

constexpr int64_t kLayers = 2, kHeads = 3, kVocab = 30;

void ToDouble(LayerNormWeights* ln) {
  if (ln->w.defined()) ln->w = ln->w.to(torch::kFloat64);
  if (ln->b.defined()) ln->b = ln->b.to(torch::kFloat64);
}

// Every tensor of `w` in float64.
void ToDouble(GPT2Weights* w) {
  for (at::Tensor* t : {&w->W_E, &w->W_pos, &w->W_U, &w->b_U}) *t = t->to(torch::kFloat64);
  ToDouble(&w->ln_final);
  for (BlockWeights& b : w->blocks) {
    ToDouble(&b.ln1);
    ToDouble(&b.ln2);
    for (at::Tensor* t : {&b.W_Q, &b.W_K, &b.W_V, &b.b_Q, &b.b_K, &b.b_V, &b.W_O, &b.b_O, &b.W_in,
                          &b.b_in, &b.W_out, &b.b_out}) {
      if (t->defined()) *t = t->to(torch::kFloat64);
    }
  }
}

// Weights scaled so that attention and the MLPs matter (as search_test's).
GPT2Weights Weights(const HookedTransformerConfig& cfg, uint64_t seed) {
  torch::manual_seed(static_cast<uint64_t>(seed));
  GPT2Weights w = RandomWeights(cfg, seed);
  for (auto& b : w.blocks) {
    b.W_Q = b.W_Q * 20;
    b.W_K = b.W_K * 20;
    b.W_O = b.W_O * 10;
    if (b.W_out.defined()) b.W_out = b.W_out * 10;
    b.b_V = 0.1 * torch::randn_like(b.b_V);
    b.ln1.w = 1 + 0.2 * torch::randn_like(b.ln1.w);
  }
  w.W_E = w.W_E * 20;
  w.ln_final.w = 1 + 0.2 * torch::randn_like(w.ln_final.w);
  w.W_U = w.W_E.t().clone();
  return w;
}

HookedTransformerConfig Config(bool attn_only = false) {
  HookedTransformerConfig cfg =
      ::lensgrid::testing::TestConfig(kLayers, kHeads, 24, 48, 16, kVocab);
  cfg.attn_only = attn_only;
  return cfg;
}

std::shared_ptr<HookedTransformer> DoubleModel(GPT2Weights w, const HookedTransformerConfig& cfg) {
  ProcessWeights(ProcessingOptions{}, cfg, &w);
  ToDouble(&w);
  return HookedTransformer::FromWeights(cfg, w).value();
}

std::shared_ptr<HookedTransformer> DoubleModel(bool attn_only = false) {
  HookedTransformerConfig cfg = Config(attn_only);
  return DoubleModel(Weights(cfg, 7), cfg);
}

// Prompts of unequal lengths (left padding), corrupted versions of their own
// length, one with an answer set.
Dataset MakeData(int n = 4, uint64_t seed = 2) {
  std::mt19937_64 rng(seed);
  Dataset ds{"test", {}};
  const int64_t bos = kVocab - 1, ids = kVocab - 1;
  for (int i = 0; i < n; ++i) {
    Prompt p;
    const int len = 5 + static_cast<int>(rng() % 4);
    p.tokens = {bos};
    p.corrupted_tokens = {bos};
    for (int t = 1; t < len; ++t) {
      p.tokens.push_back(static_cast<int64_t>(rng() % ids));
      p.corrupted_tokens.push_back(t < 2 ? p.tokens.back() : static_cast<int64_t>(rng() % ids));
    }
    p.answers = {static_cast<int64_t>(rng() % ids)};
    p.wrongs = {(p.answers[0] + 1 + static_cast<int64_t>(rng() % (ids - 2))) % ids};
    if (i == 1) p.answers.push_back((p.answers[0] + 2) % ids);
    p.origin = absl::StrCat("test #", i);
    ds.prompts.push_back(p);
  }
  return ds;
}

torch::Tensor Tokens(const std::vector<int64_t>& t) {
  return torch::tensor(t, torch::kInt64).unsqueeze(0);
}

// The metric of one unpadded prompt's final logits [d_vocab], by hand.
torch::Tensor HandMetric(MetricKind metric, const torch::Tensor& last, const Prompt& p) {
  auto mean_of = [&](const torch::Tensor& v, const std::vector<int64_t>& ids) {
    torch::Tensor s = torch::zeros({}, v.options());
    for (int64_t id : ids) s = s + v[id];
    return s / static_cast<double>(ids.size());
  };
  switch (metric) {
    case MetricKind::kLogitDiff:
      return mean_of(last, p.answers) - mean_of(last, p.wrongs);
    case MetricKind::kProb:
      return mean_of(torch::softmax(last, -1), p.answers);
    case MetricKind::kLogProb:
      return mean_of(torch::log_softmax(last, -1), p.answers);
    default:
      ADD_FAILURE() << "no hand-written " << MetricName(metric);
      return torch::zeros({});
  }
}

// Per-hook-type region sums, as the exact methods patch them: the scores of
// one layer of one (unpadded) prompt from the product (clean - corrupted) x
// grad [1, len, ...], placed in the grid's row-major layout for a prompt
// left-padded to n_pos.
torch::Tensor LayerScores(Method m, const torch::Tensor& product, int64_t n_pos) {
  const int64_t len = product.size(1), pad = n_pos - len;
  switch (m) {
    case Method::kAttributeHeads:
      return product.sum(std::vector<int64_t>{0, 1, 3});  // [head]
    case Method::kAttributeHeadsByPos: {
      torch::Tensor out = torch::zeros({n_pos, product.size(2)}, product.options());
      out.slice(0, pad, n_pos) = product.sum(std::vector<int64_t>{0, 3});
      return out.reshape({-1});
    }
    default: {
      torch::Tensor out = torch::zeros({n_pos}, product.options());
      out.slice(0, pad, n_pos) = product.sum(std::vector<int64_t>{0, 2});
      return out;
    }
  }
}

const char* Suffix(Method m) {
  switch (m) {
    case Method::kAttributeHeads:
    case Method::kAttributeHeadsByPos:
      return "attn.hook_z";
    case Method::kAttributeResid:
      return "hook_resid_pre";
    case Method::kAttributeAttnOut:
      return "hook_attn_out";
    default:
      return "hook_mlp_out";
  }
}

// attribute-* for one prompt, written directly: the clean run's activation,
// the corrupted run with the hook's output made a leaf, autograd, product.
torch::Tensor DirectAttribution(const HookedTransformer& model, const Prompt& p, Method m,
                                MetricKind metric, int64_t n_pos) {
  std::vector<torch::Tensor> layers;
  for (int l = 0; l < model.cfg().n_layers; ++l) {
    const std::string hook = absl::StrCat("blocks.", l, ".", Suffix(m));
    ForwardInput clean_in, corrupted_in;
    clean_in.tokens = Tokens(p.tokens);
    corrupted_in.tokens = Tokens(p.corrupted_tokens);
    CacheOptions co;
    co.names = {hook};
    ActivationCache cache;
    model.RunWithCache(clean_in, {}, co, &cache).value();
    const torch::Tensor clean = cache.Get(hook).value();

    torch::AutoGradMode grad(true);
    torch::Tensor leaf;
    ForwardOptions fo;
    fo.enable_grad = true;
    RunOutput out = model
                        .Run(corrupted_in, fo,
                             {{hook,
                               [&leaf](const torch::Tensor& act, const HookPointImpl&) {
                                 leaf = act.detach().requires_grad_(true);
                                 return std::optional<torch::Tensor>(leaf);
                               }}})
                        .value();
    torch::Tensor objective = HandMetric(metric, out.logits[0][-1], p);
    torch::Tensor g = torch::autograd::grad({objective}, {leaf})[0];
    layers.push_back(LayerScores(m, (clean - leaf.detach()) * g, n_pos));
  }
  return torch::cat(layers);
}

// ---------------------------------------------------------------------------
// RunWithGradients against central finite differences.

TEST(GradientsTest, MatchCentralFiniteDifferences) {
  auto model = DoubleModel();
  ForwardInput in;
  in.tokens = torch::tensor({{29, 3, 17, 8, 3, 11}, {29, 5, 5, 21, 2, 14}}, torch::kInt64);
  // A nonlinear objective over both rows and two positions.
  auto objective = [](const torch::Tensor& logits) {
    torch::Tensor lp = torch::log_softmax(logits, -1);
    return lp.index({0, -1, 4}) + 0.5 * lp.index({1, -1, 9}) - 0.3 * lp.index({1, 2, 7}) +
           0.1 * logits.index({0, 3, 12});
  };
  const std::vector<std::string> hooks = {"blocks.0.attn.hook_z", "blocks.1.hook_resid_pre",
                                          "blocks.1.hook_mlp_out", "blocks.0.attn.hook_pattern"};
  GradientRequest request;
  request.hooks = hooks;
  request.objective = [&](const RunOutput& out) -> absl::StatusOr<at::Tensor> {
    return objective(out.logits);
  };
  ActivationCache grads, acts;
  auto run = RunWithGradients(*model, in, {}, request, &grads, &acts);
  ASSERT_TRUE(run.ok()) << run.status();

  auto perturbed = [&](const std::string& hook, const torch::Tensor& delta) {
    NamedHook h{hook, [delta](const torch::Tensor& act, const HookPointImpl&) {
                  return std::optional<torch::Tensor>(act + delta);
                }};
    return objective(model->Run(in, {}, {h}).value().logits).item<double>();
  };
  torch::manual_seed(11);
  const double eps = 1e-5;
  for (const std::string& hook : hooks) {
    SCOPED_TRACE(hook);
    const torch::Tensor g = grads.Get(hook).value();
    ASSERT_EQ(g.sizes(), acts.Get(hook).value().sizes());
    ASSERT_EQ(g.scalar_type(), torch::kFloat64);
    ASSERT_GT(g.abs().max().item<double>(), 1e-6) << "the objective depends on every hook";
    // Along random directions, and along the three largest single elements.
    std::vector<torch::Tensor> directions;
    for (int k = 0; k < 3; ++k) directions.push_back(torch::randn_like(g));
    torch::Tensor order = g.abs().reshape({-1}).argsort(0, /*descending=*/true);
    for (int k = 0; k < 3; ++k) {
      torch::Tensor e = torch::zeros({g.numel()}, g.options());
      e[order[k].item<int64_t>()] = 1.0;
      directions.push_back(e.view(g.sizes()));
    }
    for (const torch::Tensor& v : directions) {
      const double analytic = (g * v).sum().item<double>();
      const double numeric = (perturbed(hook, eps * v) - perturbed(hook, -eps * v)) / (2 * eps);
      EXPECT_LE(std::abs(analytic - numeric), 1e-4 * std::abs(numeric))
          << "analytic " << analytic << " vs finite differences " << numeric;
    }
  }
}

// A mean ablation (MEAN with no value: the batch mean of the region) between
// a requested hook and the objective: the gradient flows through the mean,
// as through the same edit written out of place. LibTorch's mean keeps its
// input for the backward, and the edit overwrites it in place: that once
// failed the backward ("modified by an inplace operation"; found by
// worker_request_mutation_test).
TEST(GradientsTest, FlowThroughAMeanAblation) {
  auto model = DoubleModel();
  ForwardInput in;
  in.tokens = torch::tensor({{29, 3, 17, 8, 3, 11}, {29, 5, 5, 21, 2, 14}}, torch::kInt64);
  GradientRequest request;
  request.hooks = {"blocks.0.hook_resid_pre"};
  request.objective = [](const RunOutput& out) -> absl::StatusOr<at::Tensor> {
    return torch::log_softmax(out.logits, -1).index({0, -1, 4});
  };
  for (const std::string& edited : {"blocks.0.attn.hook_z", "blocks.1.hook_resid_pre"}) {
    SCOPED_TRACE(edited);
    ActivationEdit mean;
    mean.op = EditOp::kMean;
    ActivationCache grads, expected;
    auto run = RunWithGradients(*model, in, {}, request, &grads, nullptr,
                                {{edited, EditHook({mean}, {})}});
    ASSERT_TRUE(run.ok()) << run.status();
    NamedHook out_of_place{edited, [](const torch::Tensor& act, const HookPointImpl&) {
                             return std::optional<torch::Tensor>(act.mean(0, true).expand_as(act));
                           }};
    ASSERT_TRUE(RunWithGradients(*model, in, {}, request, &expected, nullptr, {out_of_place}).ok());
    const torch::Tensor g = grads.Get("blocks.0.hook_resid_pre").value();
    EXPECT_GT(g.abs().max().item<double>(), 1e-6);
    EXPECT_TRUE(torch::allclose(g, expected.Get("blocks.0.hook_resid_pre").value(), 1e-12, 1e-12));
  }
}

TEST(GradientsTest, WorkUnderTheCallersNoGradGuard) {
  // A search runs inside torch::NoGradGuard: the gradients must not silently be zeros.
  auto model = DoubleModel();
  ForwardInput in;
  in.tokens = torch::tensor({{29, 3, 17, 8}}, torch::kInt64);
  GradientRequest request;
  request.hooks = {"blocks.1.hook_resid_pre"};
  request.objective = [](const RunOutput& out) -> absl::StatusOr<at::Tensor> {
    return out.logits.index({0, -1, 5});
  };
  ActivationCache with, without;
  ASSERT_TRUE(RunWithGradients(*model, in, {}, request, &with).ok());
  {
    torch::NoGradGuard no_grad;
    ASSERT_TRUE(RunWithGradients(*model, in, {}, request, &without).ok());
  }
  EXPECT_GT(with.Get("blocks.1.hook_resid_pre").value().abs().max().item<double>(), 0);
  EXPECT_TRUE(AllClose(without.Get("blocks.1.hook_resid_pre").value(),
                       with.Get("blocks.1.hook_resid_pre").value(), 0, "under NoGradGuard"));
}

// ---------------------------------------------------------------------------
// attribute-* against the direct computation.

struct Case {
  Method method;
  MetricKind metric;
};

class AttributionEqualsDirectTest : public ::testing::TestWithParam<Case> {};

TEST_P(AttributionEqualsDirectTest, PerPromptAndComponent) {
  auto model = DoubleModel();
  const Dataset ds = MakeData();
  const int64_t n_pos = ds.max_length();
  SearchSpec spec{GetParam().method, GetParam().metric};
  SearchOptions options;
  options.max_batch_tokens = 2 * n_pos;  // two prompt batches
  auto r = RunSearch(*model, ds, spec, options);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->outputs.size(), 1u);
  const torch::Tensor got = r->outputs[0].per_prompt;
  ASSERT_EQ(got.size(0), static_cast<int64_t>(ds.prompts.size()));
  EXPECT_EQ(r->counts.forwards, 4);  // a clean and a corrupted forward per batch of two prompts
  EXPECT_EQ(r->counts.backwards, 2);
  for (size_t i = 0; i < ds.prompts.size(); ++i) {
    SCOPED_TRACE(ds.prompts[i].origin);
    const torch::Tensor want =
        DirectAttribution(*model, ds.prompts[i], spec.method, spec.metric, n_pos);
    // Results are float32 (as every search's): 1e-6 relative to the largest
    // score (float32 rounds it to 6e-8).
    const double largest = want.abs().max().item<double>();
    EXPECT_TRUE(AllClose(got[i], want, 1e-6 * largest, MethodName(spec.method)));
    // Probabilities over 30 tokens move little; logits move a lot.
    EXPECT_GT(largest, spec.metric == MetricKind::kProb ? 1e-6 : 1e-3)
        << "no effect: the test would see no bug";
    // Baseline = the corrupted run's metric, reference = the clean run's.
    ForwardInput clean_in, corrupted_in;
    clean_in.tokens = Tokens(ds.prompts[i].tokens);
    corrupted_in.tokens = Tokens(ds.prompts[i].corrupted_tokens);
    const auto metric_of = [&](const ForwardInput& in) {
      return HandMetric(spec.metric, model->Run(in, {}).value().logits[0][-1], ds.prompts[i])
          .item<double>();
    };
    EXPECT_NEAR(r->baseline[i].item<double>(), metric_of(corrupted_in), 1e-5);
    EXPECT_NEAR(r->reference[i].item<double>(), metric_of(clean_in), 1e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(Methods, AttributionEqualsDirectTest,
                         ::testing::Values(Case{Method::kAttributeHeads, MetricKind::kLogitDiff},
                                           Case{Method::kAttributeHeads, MetricKind::kProb},
                                           Case{Method::kAttributeHeadsByPos,
                                                MetricKind::kLogitDiff},
                                           Case{Method::kAttributeResid, MetricKind::kLogitDiff},
                                           Case{Method::kAttributeResid, MetricKind::kLogProb},
                                           Case{Method::kAttributeAttnOut, MetricKind::kLogitDiff},
                                           Case{Method::kAttributeMlpOut, MetricKind::kLogitDiff},
                                           Case{Method::kAttributeMlpOut, MetricKind::kProb}),
                         [](const auto& info) {
                           std::string n =
                               MethodName(info.param.method) + "_" + MetricName(info.param.metric);
                           for (char& c : n)
                             c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return n;
                         });

const std::vector<Method>& AttributeMethods() {
  static const auto* m = new std::vector<Method>{
      Method::kAttributeHeads, Method::kAttributeHeadsByPos, Method::kAttributeResid,
      Method::kAttributeAttnOut, Method::kAttributeMlpOut};
  return *m;
}

TEST(AttributionTest, IdenticalCleanAndCorruptedScoreZero) {
  auto model = DoubleModel();
  Dataset ds = MakeData();
  for (Prompt& p : ds.prompts) p.corrupted_tokens = p.tokens;
  for (Method m : AttributeMethods()) {
    SCOPED_TRACE(MethodName(m));
    auto r = RunSearch(*model, ds, {m, MetricKind::kLogitDiff});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->outputs[0].per_prompt.abs().max().item<double>(), 0.0);
    EXPECT_TRUE(AllClose(r->baseline, r->reference, 0, "baseline vs reference"));
  }
}

TEST(AttributionTest, ByPositionSumsToTheWholeHeadAndIsZeroBeforeTheFirstChange) {
  auto model = DoubleModel();
  const Dataset ds = MakeData();
  const int64_t n_pos = ds.max_length();
  auto heads = RunSearch(*model, ds, {Method::kAttributeHeads, MetricKind::kLogitDiff}).value();
  auto by_pos =
      RunSearch(*model, ds, {Method::kAttributeHeadsByPos, MetricKind::kLogitDiff}).value();
  // First order is linear: the positions of a head add up to the head.
  const torch::Tensor summed = by_pos.outputs[0].per_prompt.view({-1, kLayers, n_pos, kHeads});
  EXPECT_TRUE(AllClose(summed.sum(2).reshape({-1, kLayers * kHeads}), heads.outputs[0].per_prompt,
                       1e-5, "sum over positions"));
  // Causal attention: before a prompt's first changed token, clean = corrupted.
  auto resid = RunSearch(*model, ds, {Method::kAttributeResid, MetricKind::kLogitDiff}).value();
  const torch::Tensor r = resid.outputs[0].per_prompt.view({-1, kLayers, n_pos});
  for (size_t i = 0; i < ds.prompts.size(); ++i) {
    const Prompt& p = ds.prompts[i];
    const int64_t pad = n_pos - static_cast<int64_t>(p.tokens.size());
    int64_t first = 0;
    while (first < static_cast<int64_t>(p.tokens.size()) &&
           p.tokens[first] == p.corrupted_tokens[first]) {
      ++first;
    }
    ASSERT_GE(first, 2);  // MakeData keeps BOS and the first token
    EXPECT_EQ(r[i].slice(1, 0, pad + first).abs().max().item<double>(), 0.0) << p.origin;
    EXPECT_EQ(summed[i].slice(1, 0, pad + first).abs().max().item<double>(), 0.0) << p.origin;
  }
}

// Token 1 of every prompt is A in the clean prompt and B in the corrupted one,
// with W_E[B] = W_E[A] + gap x u: every activation moves by O(gap), so the
// exact delta is O(gap) and attribution patching, its first-order Taylor
// term, is off by O(gap^2). Halving the gap must about quarter the error.
TEST(AttributionTest, ConvergesToExactPatchingAtSecondOrder) {
  HookedTransformerConfig cfg = Config();
  const int64_t a = 3, b = 4;
  auto error_at = [&](double gap, Method m) {
    GPT2Weights w = Weights(cfg, 7);
    torch::manual_seed(5);
    torch::Tensor u = torch::randn({cfg.d_model});
    w.W_E[b] = w.W_E[a] + gap * u * w.W_E[a].norm() / u.norm();
    auto model = DoubleModel(w, cfg);
    Dataset ds = MakeData();
    for (Prompt& p : ds.prompts) {
      p.tokens[1] = a;
      p.corrupted_tokens = p.tokens;
      p.corrupted_tokens[1] = b;
    }
    auto exact = RunSearch(*model, ds, {ExactMethod(m), MetricKind::kLogitDiff}).value();
    auto approx = RunSearch(*model, ds, {m, MetricKind::kLogitDiff}).value();
    const torch::Tensor e = exact.outputs[0].per_prompt.to(torch::kFloat64);
    const double size = e.abs().max().item<double>();
    const double err =
        (approx.outputs[0].per_prompt.to(torch::kFloat64) - e).abs().max().item<double>();
    return std::make_pair(size, err);
  };
  for (Method m : AttributeMethods()) {
    SCOPED_TRACE(MethodName(m));
    // Measured: errors fall 4.2-4.8x from gap 0.1 to 0.05 (resid 0.0027 -> 0.00067 of a
    // delta of 0.012; mlp-out 1.3e-5 -> 2.8e-6 of 0.0011), far above float32's 1e-7.
    auto [size1, err1] = error_at(0.1, m);
    auto [size2, err2] = error_at(0.05, m);
    EXPECT_GT(size1, 5e-4) << "patching moved nothing: the test would see no bug";
    EXPECT_NEAR(size1 / size2, 2.0, 0.2) << "the exact delta is first order in the gap";
    EXPECT_LT(err1, 0.3 * size1) << "first order explains most of the delta";
    EXPECT_GT(err1 / err2, 3.0) << "the error is second order: " << err1 << " then " << err2;
  }
}

TEST(AttributionTest, ShardsMergeAndRefuseComponentRanges) {
  auto model = DoubleModel();
  const Dataset ds = MakeData(5);
  const int64_t n_pos = ds.max_length();
  SearchSpec spec{Method::kAttributeHeadsByPos, MetricKind::kLogitDiff};
  auto whole = RunSearch(*model, ds, spec).value();
  std::vector<SearchResult> parts;
  for (int64_t p : {0, 2, 3}) {
    SearchOptions o;
    o.prompt_begin = p;
    o.prompt_end = p == 0 ? 2 : p == 2 ? 3 : 5;
    parts.push_back(RunSearch(*model, ds, spec, o).value());
  }
  auto merged = MergeSearchShards(parts, 5, model->cfg(), n_pos);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_TRUE(AllClose(merged->outputs[0].mean, whole.outputs[0].mean, 1e-6, "mean"));
  EXPECT_TRUE(AllClose(merged->reference, whole.reference, 1e-6, "reference"));
  EXPECT_EQ(merged->counts.backwards, 3);

  SearchOptions cut;
  cut.component_end = 3;
  auto refused = RunSearch(*model, ds, spec, cut);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("shards by prompts only"), std::string::npos);
}

TEST(AttributionTest, BadInputIsAClearError) {
  auto attn_only = DoubleModel(/*attn_only=*/true);
  auto r = RunSearch(*attn_only, MakeData(), {Method::kAttributeMlpOut, MetricKind::kLogitDiff});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("attribute-mlp-out: this model has no MLPs"),
            std::string::npos)
      << r.status();
  Dataset no_corrupted = MakeData();
  no_corrupted.prompts[2].corrupted_tokens.clear();
  auto model = DoubleModel();
  r = RunSearch(*model, no_corrupted, {Method::kAttributeHeads, MetricKind::kLogitDiff});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("test #2"), std::string::npos) << r.status();

  SearchOptions cancelled;
  cancelled.is_cancelled = [] { return true; };
  r = RunSearch(*model, MakeData(), {Method::kAttributeResid, MetricKind::kLogitDiff}, cancelled);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
}

// ---------------------------------------------------------------------------
// The embedded model: attribution patching's head ranking vs exact patching's.

// Spearman's rank correlation (average ranks for ties).
double Spearman(const torch::Tensor& x, const torch::Tensor& y) {
  auto ranks = [](const torch::Tensor& t) {
    std::vector<double> v(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
    std::vector<size_t> idx(v.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::sort(idx.begin(), idx.end(), [&](size_t i, size_t j) { return v[i] < v[j]; });
    std::vector<double> r(v.size());
    for (size_t i = 0; i < idx.size();) {
      size_t j = i;
      while (j + 1 < idx.size() && v[idx[j + 1]] == v[idx[i]]) ++j;
      for (size_t k = i; k <= j; ++k) r[idx[k]] = (i + j) / 2.0;
      i = j + 1;
    }
    return torch::tensor(r, torch::kFloat64);
  };
  torch::Tensor rx = ranks(x.reshape({-1}).to(torch::kFloat64).contiguous());
  torch::Tensor ry = ranks(y.reshape({-1}).to(torch::kFloat64).contiguous());
  rx = rx - rx.mean();
  ry = ry - ry.mean();
  return ((rx * ry).sum() / (rx.norm() * ry.norm())).item<double>();
}

TEST(AttributionTest, SpearmanHelperOnKnownValues) {
  auto t = [](std::vector<double> v) { return torch::tensor(v, torch::kFloat64); };
  EXPECT_NEAR(Spearman(t({1, 2, 3, 4}), t({10, 20, 30, 400})), 1.0, 1e-12);
  EXPECT_NEAR(Spearman(t({1, 2, 3, 4}), t({4, 3, 2, 1})), -1.0, 1e-12);
  // scipy.stats.spearmanr([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) = 0.8207826816681233
  EXPECT_NEAR(Spearman(t({1, 2, 3, 4, 5}), t({5, 6, 7, 8, 7})), 0.8207826816681233, 1e-12);
}

TEST(AttributionTest, RanksHeadsLikeExactPatchingOnTheEmbeddedModel) {
  auto model =
      HookedTransformer::FromPretrained(::lensgrid::testing::SourceDir() + "/models/lensgrid-tiny");
  ASSERT_TRUE(model.ok()) << model.status();
  auto ds = MakeDataset({"induction", /*n_prompts=*/32, /*seed=*/1, /*seq_len=*/20},
                        (*model)->cfg(), nullptr);
  ASSERT_TRUE(ds.ok()) << ds.status();
  // The gentler corruption this was measured with: only the repeated half differs (the
  // built-in's corrupted prompt is another whole sequence, which circuit discovery needs; a
  // first-order estimate is further off for it: Spearman 0.50 here).
  for (Prompt& p : ds->prompts) {
    std::copy(p.tokens.begin(), p.tokens.begin() + 21, p.corrupted_tokens.begin());
  }
  auto exact = RunSearch(**model, *ds, {Method::kPatchHeads, MetricKind::kLogitDiff});
  auto approx = RunSearch(**model, *ds, {Method::kAttributeHeads, MetricKind::kLogitDiff});
  ASSERT_TRUE(exact.ok()) << exact.status();
  ASSERT_TRUE(approx.ok()) << approx.status();
  const double rho = Spearman(approx->outputs[0].mean, exact->outputs[0].mean);
  std::cout << "patch-heads mean delta:\n"
            << exact->outputs[0].mean << "\nattribute-heads mean delta:\n"
            << approx->outputs[0].mean << "\nSpearman " << rho << "\n";
  // Measured: 0.786 (exact L0H0..L1H3 = 2.79 -0.02 -0.07 -0.21 / 0.05 5.68 -0.19 0.61;
  // attribution 0.50 -0.31 0.30 -0.25 / 0.03 4.50 -0.22 0.64), not >= 0.9, for two reasons.
  // Only three of the eight heads matter (L1H1 and L1H3, the induction heads, and L0H0): the
  // other five sit within 0.21 of zero, where attribution's error is as large as their deltas,
  // so their order is noise (over seeds 1-3, 32 or 128 prompts, seq_len 10 or 20 and the
  // logit-diff, log-prob and loss metrics, the same Spearman ranges 0.43-0.95). And L0H0's
  // effect is far from linear in its output: attribution sees 0.50 of its 2.79 (from layer 0
  // to the logits, the nonlinear paths are layer 1's attention softmax and the LayerNorms).
  // The bound guards the value measured here (deterministic: fixed weights, fixed seed).
  EXPECT_GE(rho, 0.75);
  // What is robust: the three heads that matter are the same three in both.
  auto top3 = [](const torch::Tensor& mean) {
    torch::Tensor order = mean.reshape({-1}).abs().argsort(0, /*descending=*/true);
    std::vector<int64_t> top = {order[0].item<int64_t>(), order[1].item<int64_t>(),
                                order[2].item<int64_t>()};
    std::sort(top.begin(), top.end());
    return top;
  };
  EXPECT_EQ(top3(approx->outputs[0].mean), top3(exact->outputs[0].mean));
  // And the induction head L1H1 (flat index 5) leads both.
  EXPECT_EQ(approx->outputs[0].mean.reshape({-1}).abs().argmax().item<int64_t>(), 5);
  EXPECT_EQ(exact->outputs[0].mean.reshape({-1}).abs().argmax().item<int64_t>(), 5);
}

}  // namespace
}  // namespace lensgrid
