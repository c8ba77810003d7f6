// Behaviour of the hooked model on in-memory random weights: hook names and
// shapes, hooks, caching options, padding, start/stop layers, gradients,
// processing invariance and bad input.
#include "worker/model/hooked_transformer.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/model/test_util.h"
#include "worker/model/token_batch.h"

namespace lensgrid {
namespace {

using ::lensgrid::testing::AllClose;
using ::testing::Contains;
using ::testing::HasSubstr;

HookedTransformerConfig SmallConfig() {
  return ::lensgrid::testing::TestConfig(2, 4, 32, 128, 16, 50);
}

// Random weights with non-trivial LayerNorms and biases, so that processing
// has something to fold.
GPT2Weights SmallWeights(const HookedTransformerConfig& cfg, uint64_t seed = 7) {
  torch::manual_seed(seed);
  GPT2Weights w = RandomWeights(cfg, seed);
  auto jitter = [](LayerNormWeights* ln) {
    ln->w = 1 + 0.2 * torch::randn_like(ln->w);
    ln->b = 0.1 * torch::randn_like(ln->b);
  };
  for (auto& b : w.blocks) {
    jitter(&b.ln1);
    jitter(&b.ln2);
    b.W_Q = b.W_Q * 10;  // peaky attention
    b.W_K = b.W_K * 10;
    b.b_V = 0.1 * torch::randn_like(b.b_V);
    b.b_Q = 0.1 * torch::randn_like(b.b_Q);
    b.b_in = 0.1 * torch::randn_like(b.b_in);
    b.b_out = 0.05 * torch::randn_like(b.b_out);
    b.W_O = b.W_O * 10;
  }
  w.W_E = w.W_E * 20;
  jitter(&w.ln_final);
  return w;
}

std::shared_ptr<HookedTransformer> MakeModel(HookedTransformerConfig cfg, bool process,
                                             uint64_t seed = 7) {
  GPT2Weights w = SmallWeights(cfg, seed);
  if (process) ProcessWeights(ProcessingOptions{}, cfg, &w);
  return HookedTransformer::FromWeights(cfg, w).value();
}

torch::Tensor Tokens(std::vector<std::vector<int64_t>> rows) {
  torch::Tensor t = torch::empty(
      {static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size())}, torch::kInt64);
  for (size_t i = 0; i < rows.size(); ++i) {
    for (size_t j = 0; j < rows[i].size(); ++j) t[i][j] = rows[i][j];
  }
  return t;
}

ForwardInput In(torch::Tensor tokens) {
  ForwardInput in;
  in.tokens = tokens;
  return in;
}

TEST(HookedTransformerTest, HasEveryTransformerLensHookWithItsShape) {
  HookedTransformerConfig cfg = SmallConfig();
  cfg.use_attn_result = cfg.use_split_qkv_input = cfg.use_attn_in = cfg.use_hook_mlp_in = true;
  auto model = MakeModel(cfg, true);
  const auto& names = model->hook_names();
  for (const char* n :
       {"hook_embed", "hook_pos_embed", "ln_final.hook_scale", "ln_final.hook_normalized"}) {
    EXPECT_THAT(names, Contains(n));
  }
  for (const char* suffix :
       {"hook_resid_pre", "ln1.hook_scale",   "ln1.hook_normalized",   "attn.hook_q",
        "attn.hook_k",    "attn.hook_v",      "attn.hook_attn_scores", "attn.hook_pattern",
        "attn.hook_z",    "attn.hook_result", "hook_attn_in",          "hook_q_input",
        "hook_k_input",   "hook_v_input",     "hook_attn_out",         "hook_resid_mid",
        "hook_mlp_in",    "ln2.hook_scale",   "ln2.hook_normalized",   "mlp.hook_pre",
        "mlp.hook_post",  "hook_mlp_out",     "hook_resid_post"}) {
    EXPECT_THAT(names, Contains(std::string("blocks.1.") + suffix));
  }
  EXPECT_EQ(names.size(), 4u + 2 * 23u);
  EXPECT_EQ(names.front(), "hook_embed");
  EXPECT_EQ(names.back(), "ln_final.hook_normalized");

  ActivationCache cache;
  ASSERT_TRUE(
      model->RunWithCache(In(Tokens({{1, 2, 3, 4, 5}, {6, 7, 8, 9, 10}})), {}, {}, &cache).ok());
  EXPECT_EQ(cache.size(), names.size());
  using V = std::vector<int64_t>;
  std::map<std::string, V> expected = {
      {"hook_embed", {2, 5, 32}},
      {"hook_pos_embed", {2, 5, 32}},
      {"blocks.0.hook_resid_pre", {2, 5, 32}},
      {"blocks.0.ln1.hook_scale", {2, 5, 4, 1}},  // per head with split qkv input
      {"blocks.0.attn.hook_q", {2, 5, 4, 8}},
      {"blocks.0.attn.hook_z", {2, 5, 4, 8}},
      {"blocks.0.attn.hook_attn_scores", {2, 4, 5, 5}},
      {"blocks.0.attn.hook_pattern", {2, 4, 5, 5}},
      {"blocks.0.attn.hook_result", {2, 5, 4, 32}},
      {"blocks.0.hook_attn_in", {2, 5, 4, 32}},
      {"blocks.0.hook_q_input", {2, 5, 4, 32}},
      {"blocks.0.hook_mlp_in", {2, 5, 32}},
      {"blocks.0.ln2.hook_scale", {2, 5, 1}},
      {"blocks.0.mlp.hook_pre", {2, 5, 128}},
      {"blocks.1.hook_resid_post", {2, 5, 32}},
      {"ln_final.hook_normalized", {2, 5, 32}},
  };
  for (const auto& [name, shape] : expected) {
    EXPECT_EQ(cache.Get(name).value().sizes(), at::IntArrayRef(shape)) << name;
  }
}

TEST(HookedTransformerTest, OptionalHooksDoNotChangeResults) {
  HookedTransformerConfig plain = SmallConfig();
  HookedTransformerConfig all = plain;
  all.use_attn_result = all.use_split_qkv_input = all.use_attn_in = all.use_hook_mlp_in = true;
  auto tokens = Tokens({{3, 1, 4, 1, 5, 9, 2, 6}});
  auto a = MakeModel(plain, true)->Run(In(tokens), {}).value();
  auto b = MakeModel(all, true)->Run(In(tokens), {}).value();
  EXPECT_TRUE(AllClose(a.logits, b.logits, 1e-4, "logits"));
}

TEST(HookedTransformerTest, IdentityHooksLeaveLogitsBitEqual) {
  auto model = MakeModel(SmallConfig(), true);
  auto tokens = Tokens({{3, 1, 4, 1, 5, 9, 2, 6}});
  auto plain = model->Run(In(tokens), {}).value();
  std::vector<NamedHook> hooks;
  int calls = 0;
  for (const auto& name : model->hook_names()) {
    hooks.push_back({name, [&calls](const torch::Tensor& x, const HookPointImpl&) {
                       ++calls;
                       return std::optional<torch::Tensor>(x.clone());
                     }});
  }
  auto hooked = model->Run(In(tokens), {}, hooks).value();
  EXPECT_TRUE(torch::equal(plain.logits, hooked.logits));
  EXPECT_EQ(calls, static_cast<int>(model->hook_names().size()));
  // Hooks are per run: the next run is plain again.
  EXPECT_TRUE(torch::equal(model->Run(In(tokens), {}).value().logits, plain.logits));
}

TEST(HookedTransformerTest, ReplacingHookChangesDownstreamOnly) {
  auto model = MakeModel(SmallConfig(), true);
  auto tokens = Tokens({{3, 1, 4, 1, 5, 9, 2, 6}});
  ActivationCache clean, ablated;
  CacheOptions opts;
  opts.names = {"blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"};
  ASSERT_TRUE(model->RunWithCache(In(tokens), {}, opts, &clean).ok());
  // Zero-ablate head 2 of layer 0 at every position, as TransformerLens users do.
  auto zero_head = [](const torch::Tensor& z, const HookPointImpl&) {
    torch::Tensor out = z.clone();
    out.select(2, 2).zero_();
    return std::optional<torch::Tensor>(out);
  };
  ASSERT_TRUE(model->RunWithCache(In(tokens), {}, opts, &ablated, {{"z0", zero_head}}).ok());
  EXPECT_TRUE(torch::equal(clean.Get("resid_pre", 0).value(), ablated.Get("resid_pre", 0).value()));
  EXPECT_FALSE(
      torch::allclose(clean.Get("resid_pre", 1).value(), ablated.Get("resid_pre", 1).value()));
}

TEST(HookedTransformerTest, HookReturningWrongShapeIsInvalidArgument) {
  auto model = MakeModel(SmallConfig(), true);
  auto out =
      model->Run(In(Tokens({{1, 2, 3}})), {},
                 {{"blocks.0.attn.hook_pattern", [](const torch::Tensor& x, const HookPointImpl&) {
                     return std::optional<torch::Tensor>(x.sum(-1));
                   }}});
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out.status().message(), HasSubstr("hook on blocks.0.attn.hook_pattern returned"));
}

TEST(HookedTransformerTest, CacheFiltersPositionsAndBatchDim) {
  auto model = MakeModel(SmallConfig(), true);
  auto tokens = Tokens({{3, 1, 4, 1, 5, 9, 2, 6}});
  ActivationCache full, sliced;
  CacheOptions all_opts;
  all_opts.regexes = {"^blocks\\.1\\."};
  ASSERT_TRUE(model->RunWithCache(In(tokens), {}, all_opts, &full).ok());
  for (const auto& n : full.names()) EXPECT_EQ(n.rfind("blocks.1.", 0), 0u) << n;

  CacheOptions opts;
  opts.names = {"blocks.1.hook_resid_post", "pattern1"};
  opts.predicate = [](const std::string& n) { return n == "hook_embed"; };
  opts.positions = PositionSlice{-3, std::nullopt};
  opts.remove_batch_dim = true;
  ASSERT_TRUE(model->RunWithCache(In(tokens), {}, opts, &sliced).ok());
  EXPECT_EQ(sliced.names(), (std::vector<std::string>{"hook_embed", "blocks.1.attn.hook_pattern",
                                                      "blocks.1.hook_resid_post"}));
  torch::Tensor resid = sliced.Get("blocks.1.hook_resid_post").value();
  EXPECT_EQ(resid.sizes(), at::IntArrayRef({3, 32}));
  EXPECT_TRUE(torch::equal(resid, full.Get("resid_post", 1).value()[0].slice(0, 5, 8)));
  torch::Tensor pattern = sliced.Get("pattern", 1).value();
  EXPECT_EQ(pattern.sizes(), at::IntArrayRef({4, 3, 8}));  // [head, query_pos, key_pos]
}

TEST(HookedTransformerTest, LeftAndRightPaddingMatchUnpaddedRuns) {
  auto model = MakeModel(SmallConfig(), true);
  std::vector<int64_t> a = {3, 1, 4, 1, 5, 9, 2, 6}, b = {2, 7, 1, 8};
  auto solo_a = model->Run(In(Tokens({a})), {}).value().logits[0];
  auto solo_b = model->Run(In(Tokens({b})), {}).value().logits[0];
  const int64_t pad = 0;
  // Right padding.
  ForwardInput right;
  right.tokens = Tokens({a, {2, 7, 1, 8, pad, pad, pad, pad}});
  right.attention_mask = Tokens({{1, 1, 1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 0, 0, 0, 0}});
  auto r = model->Run(right, {}).value().logits;
  EXPECT_TRUE(AllClose(r[0], solo_a, 1e-4, "right row 0"));
  EXPECT_TRUE(AllClose(r[1].slice(0, 0, 4), solo_b, 1e-4, "right row 1"));
  // Left padding.
  ForwardInput left;
  left.tokens = Tokens({a, {pad, pad, pad, pad, 2, 7, 1, 8}});
  left.attention_mask = Tokens({{1, 1, 1, 1, 1, 1, 1, 1}, {0, 0, 0, 0, 1, 1, 1, 1}});
  auto l = model->Run(left, {}).value().logits;
  EXPECT_TRUE(AllClose(l[1].slice(0, 4, 8), solo_b, 1e-4, "left row 1"));
  EXPECT_TRUE(AllClose(l[1].slice(0, 4, 8), r[1].slice(0, 0, 4), 1e-4, "left vs right"));
  EXPECT_FALSE(torch::isnan(l).any().item<bool>());

  // Loss ignores pads: the padded batch's loss of row 1 equals its solo loss.
  ForwardOptions per_token;
  per_token.return_type = ForwardReturn::kLoss;
  per_token.per_token_loss = true;
  auto solo_loss = model->Run(In(Tokens({b})), per_token).value().loss[0];
  auto left_loss = model->Run(left, per_token).value().loss[1];
  EXPECT_TRUE(AllClose(left_loss.slice(0, 4, 7), solo_loss, 1e-4, "left loss"));
  EXPECT_EQ(left_loss.slice(0, 0, 4).abs().sum().item<float>(), 0.0f);
  ForwardOptions mean_loss;
  mean_loss.return_type = ForwardReturn::kLoss;
  ForwardInput only_b = left;
  only_b.tokens = left.tokens.slice(0, 1, 2);
  only_b.attention_mask = left.attention_mask.slice(0, 1, 2);
  EXPECT_TRUE(AllClose(model->Run(only_b, mean_loss).value().loss,
                       model->Run(In(Tokens({b})), mean_loss).value().loss, 1e-5, "mean loss"));
}

TEST(HookedTransformerTest, TokenBatchPadsAndPrependsBos) {
  BatchOptions opts;
  opts.prepend_bos = true;
  opts.bos_token_id = 49;
  opts.pad_token_id = 0;
  opts.padding = Padding::kLeft;
  ForwardInput left = MakeTokenBatch({{3, 1, 4}, {2}}, opts);
  EXPECT_TRUE(torch::equal(left.tokens, Tokens({{49, 3, 1, 4}, {0, 0, 49, 2}})));
  EXPECT_TRUE(torch::equal(left.attention_mask, Tokens({{1, 1, 1, 1}, {0, 0, 1, 1}})));
  opts.padding = Padding::kRight;
  ForwardInput right = MakeTokenBatch({{3, 1, 4}, {2}}, opts);
  EXPECT_TRUE(torch::equal(right.tokens, Tokens({{49, 3, 1, 4}, {49, 2, 0, 0}})));
  auto model = MakeModel(SmallConfig(), true);
  auto l = model->Run(left, {}).value().logits;
  auto r = model->Run(right, {}).value().logits;
  EXPECT_TRUE(AllClose(l[1].slice(0, 2, 4), r[1].slice(0, 0, 2), 1e-4, "left vs right"));
  // Equal lengths: no mask needed.
  EXPECT_FALSE(MakeTokenBatch({{1, 2}, {3, 4}}, BatchOptions{}).attention_mask.defined());
}

TEST(HookedTransformerTest, StopAndStartAtLayer) {
  auto model = MakeModel(SmallConfig(), true);
  auto tokens = Tokens({{3, 1, 4, 1, 5, 9, 2, 6}});
  ActivationCache cache;
  CacheOptions opts;
  opts.names = {"blocks.1.hook_resid_pre"};
  auto full = model->RunWithCache(In(tokens), {}, opts, &cache).value();
  ForwardOptions stop;
  stop.stop_at_layer = 1;
  auto stopped = model->Run(In(tokens), stop).value();
  EXPECT_FALSE(stopped.logits.defined());
  EXPECT_TRUE(torch::equal(stopped.residual, cache.Get("resid_pre", 1).value()));
  ForwardOptions stop_neg;
  stop_neg.stop_at_layer = -1;
  EXPECT_TRUE(torch::equal(model->Run(In(tokens), stop_neg).value().residual, stopped.residual));

  ForwardOptions start;
  start.start_at_layer = 1;
  ForwardInput mid;
  mid.residual = stopped.residual;
  auto resumed = model->Run(mid, start).value();
  EXPECT_TRUE(AllClose(resumed.logits, full.logits, 1e-6, "resumed logits"));
}

TEST(HookedTransformerTest, ProcessedAndUnprocessedLogProbsAgree) {
  auto tokens = Tokens({{3, 1, 4, 1, 5, 9, 2, 6}, {2, 7, 1, 8, 2, 8, 1, 8}});
  auto raw = MakeModel(SmallConfig(), false)->Run(In(tokens), {}).value().logits;
  auto processed = MakeModel(SmallConfig(), true)->Run(In(tokens), {}).value().logits;
  EXPECT_FALSE(torch::allclose(raw, processed));
  EXPECT_TRUE(
      AllClose(torch::log_softmax(raw, -1), torch::log_softmax(processed, -1), 1e-4, "log probs"));
  for (auto opts :
       {ProcessingOptions{true, false, false, false}, ProcessingOptions{true, true, false, false},
        ProcessingOptions{false, false, true, false},
        ProcessingOptions{false, false, false, true}}) {
    HookedTransformerConfig cfg = SmallConfig();
    GPT2Weights w = SmallWeights(cfg);
    ProcessWeights(opts, cfg, &w);
    auto logits =
        HookedTransformer::FromWeights(cfg, w).value()->Run(In(tokens), {}).value().logits;
    EXPECT_TRUE(AllClose(torch::log_softmax(raw, -1), torch::log_softmax(logits, -1), 1e-4,
                         "one processing step"));
  }
}

TEST(HookedTransformerTest, GradientsFlowThroughHooks) {
  auto model = MakeModel(SmallConfig(), true);
  auto tokens = Tokens({{3, 1, 4, 1, 5, 9, 2, 6}});
  ForwardOptions opts;
  opts.enable_grad = true;
  CacheOptions cache_opts;
  cache_opts.names = {"blocks.1.hook_resid_mid"};
  cache_opts.detach = false;
  ActivationCache cache;
  auto out = model->RunWithCache(In(tokens), opts, cache_opts, &cache).value();
  torch::Tensor act = cache.Get("blocks.1.hook_resid_mid").value();
  torch::Tensor metric = out.logits[0][-1][7] - out.logits[0][-1][3];
  torch::Tensor grad = torch::autograd::grad({metric}, {act})[0];
  ASSERT_EQ(grad.sizes(), act.sizes());
  EXPECT_EQ(grad.slice(1, 0, 7).abs().sum().item<float>(), 0.0f);  // causal

  // Finite difference through a hook that nudges one element.
  const double eps = 1e-2;
  auto nudge = [eps](const torch::Tensor& x, const HookPointImpl&) {
    torch::Tensor y = x.clone();
    y[0][7][5] += eps;
    return std::optional<torch::Tensor>(y);
  };
  auto plus = model->Run(In(tokens), {}, {{"blocks.1.hook_resid_mid", nudge}}).value().logits;
  auto base = model->Run(In(tokens), {}).value().logits;
  double fd =
      ((plus[0][-1][7] - plus[0][-1][3]) - (base[0][-1][7] - base[0][-1][3])).item<double>() / eps;
  EXPECT_NEAR(grad[0][7][5].item<double>(), fd, 2e-2 * std::max(1.0, std::abs(fd)));

  // Inference runs keep no graph.
  EXPECT_FALSE(model->Run(In(tokens), {}).value().logits.requires_grad());
}

TEST(HookedTransformerTest, BadInputIsAClearError) {
  auto model = MakeModel(SmallConfig(), true);
  auto status = [&](const ForwardInput& in, const ForwardOptions& opts = {}) {
    return model->Run(in, opts).status();
  };
  auto too_big = status(In(Tokens({{1, 2, 50}})));
  EXPECT_EQ(too_big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_big.message(), HasSubstr("token id 50 at [0, 2] is outside the vocabulary"));
  EXPECT_THAT(status(In(Tokens({{-1}}))).message(), HasSubstr("token id -1"));
  auto long_seq = status(In(torch::zeros({1, 17}, torch::kInt64)));
  EXPECT_THAT(long_seq.message(), HasSubstr("longer than the model's n_positions (16)"));
  EXPECT_THAT(status(In(torch::zeros({2}, torch::kInt64))).message(),
              HasSubstr("tokens must be [batch, pos]"));
  EXPECT_THAT(status(In(torch::zeros({1, 2}, torch::kFloat32))).message(),
              HasSubstr("tokens must be int64"));
  ForwardOptions stop;
  stop.stop_at_layer = 5;
  EXPECT_THAT(status(In(Tokens({{1}})), stop).message(), HasSubstr("stop_at_layer 5 out of range"));
  ForwardInput mask = In(Tokens({{1, 2}}));
  mask.attention_mask = torch::ones({1, 3});
  EXPECT_THAT(status(mask).message(), HasSubstr("attention_mask has shape [1, 3]"));

  auto unknown = model->Run(In(Tokens({{1}})), {},
                            {{"blocks.0.attn.hook_patern", [](const auto&, const auto&) {
                                return std::optional<torch::Tensor>();
                              }}});
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(unknown.status().message(), HasSubstr("did you mean \"blocks.0.attn.hook_pattern\""));

  CacheOptions bad_regex;
  bad_regex.regexes = {"hook_(("};
  ActivationCache cache;
  EXPECT_THAT(model->RunWithCache(In(Tokens({{1}})), {}, bad_regex, &cache).status().message(),
              HasSubstr("bad names regex"));
  CacheOptions no_batch;
  no_batch.remove_batch_dim = true;
  EXPECT_THAT(model->RunWithCache(In(Tokens({{1}, {2}})), {}, no_batch, &cache).status().message(),
              HasSubstr("remove_batch_dim needs a batch of 1"));
  EXPECT_EQ(cache.Get("blocks.9.hook_z").status().code(), absl::StatusCode::kNotFound);
}

TEST(HookedTransformerTest, CancelledRunStopsBetweenBlocks) {
  auto model = MakeModel(SmallConfig(), true);
  ForwardOptions opts;
  int polls = 0;
  opts.is_cancelled = [&polls] { return ++polls > 1; };
  auto out = model->Run(In(Tokens({{1, 2}})), opts);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(polls, 2);
}

TEST(HookedTransformerTest, DeviceIsCheckedAtRunTime) {
  EXPECT_TRUE(ParseDevice("cpu").ok());
  EXPECT_EQ(ParseDevice("tpu").status().code(), absl::StatusCode::kInvalidArgument);
  if (!torch::cuda::is_available()) {
    auto cuda =
        HookedTransformer::FromWeights(SmallConfig(), SmallWeights(SmallConfig()), "cuda:0");
    EXPECT_EQ(cuda.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(cuda.status().message(), HasSubstr("no CUDA support"));
  } else {
    auto cpu = MakeModel(SmallConfig(), true);
    auto cuda =
        HookedTransformer::FromWeights(SmallConfig(), cpu->ExportWeights(), "cuda:0").value();
    auto tokens = Tokens({{3, 1, 4, 1, 5, 9, 2, 6}});
    EXPECT_TRUE(AllClose(cuda->Run(In(tokens), {}).value().logits.cpu(),
                         cpu->Run(In(tokens), {}).value().logits, 1e-3, "cuda logits"));
  }
}

}  // namespace
}  // namespace lensgrid
