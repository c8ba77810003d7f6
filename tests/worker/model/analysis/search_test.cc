// Circuit searches on a random model: every fast path equals the naive loop,
// shards merge into the whole, and results match hand-written computations.
#include "worker/model/analysis/search.h"

#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/model/test_util.h"

namespace lensgrid {
namespace {

using ::lensgrid::testing::AllClose;
using ::testing::HasSubstr;

HookedTransformerConfig Config(bool attn_only = false) {
  HookedTransformerConfig cfg = ::lensgrid::testing::TestConfig(3, 4, 32, 64, 24, 40);
  cfg.attn_only = attn_only;
  return cfg;
}

std::shared_ptr<HookedTransformer> Model(bool attn_only = false, bool process = true) {
  HookedTransformerConfig cfg = Config(attn_only);
  torch::manual_seed(3);
  GPT2Weights w = RandomWeights(cfg, 5);
  for (auto& b : w.blocks) {  // make attention and the MLPs matter
    b.W_Q = b.W_Q * 25;
    b.W_K = b.W_K * 25;
    b.W_O = b.W_O * 15;
    if (b.W_out.defined()) b.W_out = b.W_out * 15;
    b.b_V = 0.1 * torch::randn_like(b.b_V);
    b.ln1.w = 1 + 0.2 * torch::randn_like(b.ln1.w);
  }
  w.W_E = w.W_E * 30;
  w.ln_final.w = 1 + 0.2 * torch::randn_like(w.ln_final.w);
  w.W_U = w.W_E.t().clone();
  if (process) ProcessWeights(ProcessingOptions{}, cfg, &w);
  return HookedTransformer::FromWeights(cfg, w).value();
}

// Prompts of unequal lengths (left padding is exercised), each with a
// corrupted version of its own length; some with answer sets.
Dataset MakeData(int n = 6, uint64_t seed = 1) {
  std::mt19937_64 rng(seed);
  Dataset ds{"test", {}};
  for (int i = 0; i < n; ++i) {
    Prompt p;
    int len = 6 + static_cast<int>(rng() % 5);
    p.tokens = {39};
    p.corrupted_tokens = {39};
    for (int t = 1; t < len; ++t) {
      p.tokens.push_back(static_cast<int64_t>(rng() % 39));
      p.corrupted_tokens.push_back(static_cast<int64_t>(rng() % 39));
    }
    p.answers = {static_cast<int64_t>(rng() % 39)};
    p.wrongs = {(p.answers[0] + 1 + static_cast<int64_t>(rng() % 37)) % 39};
    if (i % 3 == 2) p.answers.push_back((p.answers[0] + 2) % 39);
    p.loss_start = 2;
    p.origin = absl::StrCat("test #", i);
    ds.prompts.push_back(p);
  }
  return ds;
}

struct Case {
  std::string method, metric, ablation;
};

class FastEqualsNaiveTest : public ::testing::TestWithParam<Case> {};

TEST_P(FastEqualsNaiveTest, OnAllComponents) {
  auto model = Model();
  Dataset ds = MakeData();
  SearchSpec spec{ParseMethod(GetParam().method).value(), ParseMetric(GetParam().metric).value(),
                  ParseAblation(GetParam().ablation).value()};
  SearchOptions fast, naive;
  naive.naive = true;
  fast.max_batch_tokens = 100;  // several packed forwards per layer
  auto a = RunSearch(*model, ds, spec, fast);
  auto b = RunSearch(*model, ds, spec, naive);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(a->outputs.size(), b->outputs.size());
  for (size_t k = 0; k < a->outputs.size(); ++k) {
    EXPECT_TRUE(
        AllClose(a->outputs[k].per_prompt, b->outputs[k].per_prompt, 1e-4, a->outputs[k].name));
    // Probabilities over a 40-token vocabulary move little; logits move a lot.
    const double floor =
        spec.metric == MetricKind::kProb || spec.metric == MetricKind::kProbDiff ? 1e-7 : 1e-3;
    EXPECT_GT(a->outputs[k].per_prompt.abs().max().item<double>(), floor)
        << "search found no effect at all: the test would not see a bug";
  }
  EXPECT_TRUE(AllClose(a->baseline, b->baseline, 1e-6, "baseline"));
}

INSTANTIATE_TEST_SUITE_P(
    Methods, FastEqualsNaiveTest,
    ::testing::Values(
        Case{"ablate-heads", "logit-diff", "zero"}, Case{"ablate-heads", "logit-diff", "mean"},
        Case{"ablate-heads", "prob", "resample"}, Case{"ablate-heads", "loss", "mean"},
        Case{"ablate-heads", "kl", "zero"}, Case{"ablate-layers", "logit-diff", "mean"},
        Case{"ablate-layers", "prob-diff", "resample"}, Case{"patch-resid", "logit-diff", "zero"},
        Case{"patch-attn-out", "loss", "zero"}, Case{"patch-mlp-out", "kl", "zero"},
        Case{"patch-heads", "logit-diff", "zero"}, Case{"patch-heads-by-pos", "prob", "zero"},
        Case{"patch-pattern", "logit-diff", "zero"}),
    [](const auto& info) {
      std::string n = info.param.method + "_" + info.param.metric + "_" + info.param.ablation;
      for (char& c : n) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
      return n;
    });

TEST(SearchTest, ZeroAblationMatchesAHandWrittenHook) {
  auto model = Model();
  Dataset ds = MakeData();
  SearchSpec spec{Method::kAblateHeads, MetricKind::kLogitDiff, AblationKind::kZero};
  auto r = RunSearch(*model, ds, spec).value();
  // Independently: prompt 0 alone (no padding), head (1, 2) zeroed, logit diff by hand.
  const Prompt& p = ds.prompts[0];
  ForwardInput in;
  in.tokens = torch::tensor(p.tokens, torch::kInt64).unsqueeze(0);
  auto logit_diff = [&](const torch::Tensor& logits) {
    auto last = logits[0][-1];
    return (last[p.answers[0]] - last[p.wrongs[0]]).item<double>();
  };
  double clean = logit_diff(model->Run(in, {}).value().logits);
  double ablated = logit_diff(model
                                  ->Run(in, {},
                                        {{"blocks.1.attn.hook_z",
                                          [](const torch::Tensor& z, const HookPointImpl&) {
                                            auto out = z.clone();
                                            out.select(2, 2).zero_();
                                            return std::optional<torch::Tensor>(out);
                                          }}})
                                  .value()
                                  .logits);
  EXPECT_NEAR(r.baseline[0].item<double>(), clean, 1e-4);
  EXPECT_NEAR(r.outputs[0].per_prompt[0][1 * 4 + 2].item<double>(), ablated - clean, 1e-4);
  EXPECT_EQ(r.outputs[0].mean.sizes(), at::IntArrayRef({3, 4}));
  EXPECT_NEAR(r.outputs[0].mean[1][2].item<double>(),
              r.outputs[0].per_prompt.select(1, 6).mean().item<double>(), 1e-6);
}

TEST(SearchTest, PatchingRunsCleanIntoCorrupted) {
  auto model = Model();
  Dataset ds = MakeData();
  SearchSpec spec{Method::kPatchResid, MetricKind::kLogitDiff, AblationKind::kZero};
  auto r = RunSearch(*model, ds, spec).value();
  // Patching the whole residual stream at layer 0 at every real position
  // restores the clean run; at the last position of layer 0 it is the clean
  // run's information at that position only.
  EXPECT_FALSE(torch::allclose(r.baseline, r.reference));
  const int64_t pos = ds.max_length();
  // Patching resid_pre at the final position of the last layer... is not the
  // whole story, but at layer 0 position 0 (BOS for the longest prompt) changes nothing.
  torch::Tensor delta = r.outputs[0].per_prompt.view({-1, 3, pos});
  for (int64_t i = 0; i < delta.size(0); ++i) {
    int64_t len = ds.prompts[i].tokens.size();
    // BOS is the same token in clean and corrupted: patching it is a no-op.
    EXPECT_NEAR(delta[i][0][pos - len].item<double>(), 0.0, 1e-5);
    // Padding positions: no-ops too.
    if (pos > len) {
      EXPECT_NEAR(delta[i][1][0].item<double>(), 0.0, 1e-5);
    }
  }
}

TEST(SearchTest, ShardsMergeIntoTheWhole) {
  auto model = Model();
  Dataset ds = MakeData(7);
  for (Method m :
       {Method::kAblateHeads, Method::kPatchHeadsByPos, Method::kDetectHeads, Method::kDla}) {
    SearchSpec spec{m, MetricKind::kLogitDiff, AblationKind::kMean};
    auto whole = RunSearch(*model, ds, spec).value();
    std::vector<SearchResult> shards;
    int64_t n_comp = whole.outputs[0].per_prompt.size(1);
    bool by_components = m == Method::kAblateHeads || m == Method::kPatchHeadsByPos;
    for (auto [pb, pe] : {std::pair<int64_t, int64_t>{0, 3}, {3, 7}}) {
      std::vector<std::pair<int64_t, int64_t>> comps = {{0, n_comp}};
      if (by_components) comps = {{0, 5}, {5, n_comp}};
      for (auto [cb, ce] : comps) {
        SearchOptions o;
        o.prompt_begin = pb;
        o.prompt_end = pe;
        o.component_begin = cb;
        o.component_end = ce;
        auto s = RunSearch(*model, ds, spec, o);
        ASSERT_TRUE(s.ok()) << s.status();
        shards.push_back(*s);
      }
    }
    auto merged = MergeSearchShards(shards, 7, model->cfg(), ds.max_length());
    ASSERT_TRUE(merged.ok()) << merged.status();
    for (size_t k = 0; k < whole.outputs.size(); ++k) {
      EXPECT_TRUE(AllClose(merged->outputs[k].mean, whole.outputs[k].mean, 1e-5,
                           MethodName(m) + " " + whole.outputs[k].name));
    }
    shards.pop_back();
    EXPECT_THAT(MergeSearchShards(shards, 7, model->cfg(), ds.max_length()).status().message(),
                HasSubstr("exactly once"));
  }
}

TEST(SearchTest, DetectorsFollowTransformerLensDefinition) {
  auto model = Model();
  Dataset ds = MakeData(4);
  // Repeat a span so duplicate and induction patterns are non-empty.
  for (auto& p : ds.prompts) {
    std::vector<int64_t> rep(p.tokens.begin() + 1, p.tokens.end());
    p.tokens.insert(p.tokens.end(), rep.begin(), rep.end());
  }
  auto r = RunSearch(*model, ds, {Method::kDetectHeads, MetricKind::kLogitDiff}).value();
  // By hand, prompt by prompt without padding, with explicit loops.
  for (size_t i = 0; i < ds.prompts.size(); ++i) {
    const auto& toks = ds.prompts[i].tokens;
    const int64_t len = toks.size();
    ForwardInput in;
    in.tokens = torch::tensor(toks, torch::kInt64).unsqueeze(0);
    ActivationCache cache;
    CacheOptions opts;
    opts.regexes = {"hook_pattern"};
    ASSERT_TRUE(model->RunWithCache(in, {}, opts, &cache).ok());
    for (int64_t l = 0; l < 3; ++l) {
      auto pat = cache.Get("pattern", l).value()[0];
      for (int64_t h = 0; h < 4; ++h) {
        double prev = 0, dup = 0, ind = 0;
        for (int64_t q = 0; q < len; ++q) {
          for (int64_t k = 0; k <= q; ++k) {
            double a = pat[h][q][k].item<double>();
            if (k == q - 1) prev += a;
            if (k < q && toks[k] == toks[q]) dup += a;
            if (k >= 1 && k - 1 < q && toks[k - 1] == toks[q]) ind += a;
          }
        }
        int64_t c = l * 4 + h;
        EXPECT_NEAR(r.outputs[0].per_prompt[i][c].item<double>(), prev / len, 1e-4);
        EXPECT_NEAR(r.outputs[1].per_prompt[i][c].item<double>(), dup / len, 1e-4);
        EXPECT_NEAR(r.outputs[2].per_prompt[i][c].item<double>(), ind / len, 1e-4);
      }
    }
  }
}

TEST(SearchTest, DirectLogitAttributionAddsUp) {
  // Attention-only models too: they have no hook_mlp_out to cache.
  for (auto [attn_only, process] : {std::pair{false, true}, {false, false}, {true, true}}) {
    auto model = Model(attn_only, process);
    Dataset ds = MakeData(5);
    for (auto& p : ds.prompts) p.answers.resize(1);
    auto r = RunSearch(*model, ds, {Method::kDla, MetricKind::kLogitDiff}).value();
    // Embeddings + every layer's output = the final residual; its direct
    // effect through ln_final is the logit difference up to the unembedding bias.
    for (size_t i = 0; i < ds.prompts.size(); ++i) {
      const Prompt& p = ds.prompts[i];
      ForwardInput in;
      in.tokens = torch::tensor(p.tokens, torch::kInt64).unsqueeze(0);
      ActivationCache cache;
      CacheOptions opts;
      opts.names = {"hook_embed", "hook_pos_embed", "ln_final.hook_scale"};
      auto out = model->RunWithCache(in, {}, opts, &cache).value();
      GPT2Weights w = model->ExportWeights();
      torch::Tensor dir = w.W_U.select(1, p.answers[0]) - w.W_U.select(1, p.wrongs[0]);
      if (!w.ln_final.folded()) dir = dir * w.ln_final.w;
      torch::Tensor embed =
          (cache.Get("hook_embed").value() + cache.Get("hook_pos_embed").value())[0][-1];
      double scale = cache.Get("ln_final.hook_scale").value()[0][-1][0].item<double>();
      double embed_part = ((embed - embed.mean()) / scale * dir).sum().item<double>();
      double logit_diff =
          (out.logits[0][-1][p.answers[0]] - out.logits[0][-1][p.wrongs[0]]).item<double>();
      double bias = (w.b_U[p.answers[0]] - w.b_U[p.wrongs[0]]).item<double>();
      if (!w.ln_final.folded())
        bias += ((w.ln_final.b) * (w.W_U.select(1, p.answers[0]) - w.W_U.select(1, p.wrongs[0])))
                    .sum()
                    .item<double>();
      double layers = r.outputs[1].per_prompt[i].sum().item<double>();
      EXPECT_NEAR(embed_part + layers + bias, logit_diff, 1e-3)
          << "processed=" << process << " attn_only=" << attn_only;
      EXPECT_NEAR(r.baseline[i].item<double>(), logit_diff, 1e-4);
      // Heads of a layer add up to the layer, less the output bias b_O.
      for (int l = 0; l < 3; ++l) {
        torch::Tensor b_O = w.blocks[l].b_O;
        double bias_part = ((b_O - b_O.mean()) / scale * dir).sum().item<double>();
        double heads = r.outputs[0].per_prompt[i].slice(0, l * 4, l * 4 + 4).sum().item<double>();
        EXPECT_NEAR(heads + bias_part, r.outputs[1].per_prompt[i][l].item<double>(), 1e-3);
      }
    }
  }
}

TEST(SearchTest, BadInputIsAClearError) {
  auto model = Model();
  Dataset ds = MakeData();
  ds.prompts[2].corrupted_tokens.pop_back();
  auto r = RunSearch(*model, ds, {Method::kPatchHeads, MetricKind::kLogitDiff});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("test #2: this method needs a corrupted prompt"));
  // Zero ablation does not need corrupted prompts.
  EXPECT_TRUE(RunSearch(*model, ds, {Method::kAblateHeads, MetricKind::kLogitDiff}).ok());
  EXPECT_THAT(ParseMethod("ablate-everything").status().message(), HasSubstr("unknown method"));
  EXPECT_THAT(ParseMetric("accuracy").status().message(), HasSubstr("unknown metric"));
  EXPECT_THAT(RunSearch(*Model(true), MakeData(), {Method::kPatchMlpOut, MetricKind::kLogitDiff})
                  .status()
                  .message(),
              HasSubstr("no MLPs"));
  SearchOptions bad_range;
  bad_range.component_end = 99;
  EXPECT_THAT(
      RunSearch(*model, MakeData(), {Method::kAblateHeads, MetricKind::kLogitDiff}, bad_range)
          .status()
          .message(),
      HasSubstr("component range"));
  EXPECT_THAT(RunSearch(*model, MakeData(), {Method::kDla, MetricKind::kProb}).status().message(),
              HasSubstr("use --metric logit-diff"));
}

TEST(SearchTest, RanksAndNamesComponents) {
  SearchOutput o;
  o.axes = {"layer", "head"};
  o.shape = {2, 3};
  o.mean = torch::tensor({0.1, -2.0, 0.3, 0.0, 1.5, -0.2}).view({2, 3});
  auto top = RankComponents(o, 2);
  ASSERT_EQ(top.size(), 2u);
  EXPECT_EQ(ComponentName(o, top[0].first), "L0H1");
  EXPECT_DOUBLE_EQ(top[0].second, -2.0);
  EXPECT_EQ(ComponentName(o, top[1].first), "L1H1");
  o.axes = {"layer", "pos"};
  EXPECT_EQ(ComponentName(o, 5), "L1 pos 2");
}

}  // namespace
}  // namespace lensgrid
