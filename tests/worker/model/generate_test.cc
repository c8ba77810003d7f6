// Generate (worker/model/generate.h) against repeated forwards computed here:
// greedy is the argmax of the last position's logits, seeds make sampling
// repeatable, top_k = 1 is greedy, stop_at_eos pads finished rows, and left
// padding changes no row's tokens.
#include "worker/model/generate.h"

#include <torch/torch.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/model/test_util.h"
#include "worker/model/processing.h"
#include "worker/model/weights.h"

namespace lensgrid {
namespace {

using ::testing::HasSubstr;

// n_ctx 24, vocab 50 (EOS = BOS = 49).
HookedTransformerConfig Config() { return ::lensgrid::testing::TestConfig(2, 4, 32, 128, 24, 50); }

std::shared_ptr<HookedTransformer> Model() {
  static std::shared_ptr<HookedTransformer> model = [] {
    HookedTransformerConfig cfg = Config();
    GPT2Weights w = RandomWeights(cfg, 11);
    w.W_E = w.W_E * 40;  // a peaky next-token distribution, so rows differ
    ProcessWeights(ProcessingOptions{}, cfg, &w);
    return HookedTransformer::FromWeights(cfg, w).value();
  }();
  return model;
}

std::vector<int64_t> Row(const torch::Tensor& t, int64_t row) {
  torch::Tensor r = t[row].contiguous();
  return std::vector<int64_t>(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
}

GenerateOptions Greedy(int64_t n) {
  GenerateOptions o;
  o.max_new_tokens = n;
  return o;
}

TEST(GenerateTest, GreedyIsTheArgmaxOfRepeatedForwards) {
  const std::vector<int64_t> prompt = {49, 3, 17, 8};
  auto out = Generate(*Model(), LeftPadded({prompt}, 49), Greedy(8));
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->new_tokens.sizes(), (std::vector<int64_t>{1, 8}));
  EXPECT_EQ(Row(out->prompt_tokens, 0), prompt);
  EXPECT_FALSE(out->prompt_mask.defined());
  // By hand: run the whole sequence, take the last position's argmax, append.
  std::vector<int64_t> seq = prompt, expected;
  for (int i = 0; i < 8; ++i) {
    ForwardInput in;
    in.tokens = torch::tensor(seq, torch::kInt64).unsqueeze(0);
    torch::Tensor logits = Model()->Run(in, {}).value().logits;
    const int64_t next = logits[0][-1].argmax().item<int64_t>();
    expected.push_back(next);
    seq.push_back(next);
  }
  EXPECT_EQ(Row(out->new_tokens, 0), expected);
}

TEST(GenerateTest, TheSameSeedGivesTheSameTokensAndSeedsDiffer) {
  GenerateOptions o;
  o.max_new_tokens = 12;
  o.temperature = 1.0;
  auto run = [&](uint64_t seed) {
    o.seed = seed;
    auto out = Generate(*Model(), LeftPadded({{49, 5}, {49, 6, 7}}, 49), o);
    EXPECT_TRUE(out.ok()) << out.status();
    return std::make_pair(Row(out->new_tokens, 0), Row(out->new_tokens, 1));
  };
  const auto a = run(1), b = run(1), c = run(2);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);  // 24 draws from a 50-token vocabulary at temperature 1
}

TEST(GenerateTest, TopKOfOneIsGreedy) {
  GenerateOptions o;
  o.max_new_tokens = 6;
  o.temperature = 1.0;
  o.top_k = 1;
  o.seed = 5;
  const ForwardInput in = LeftPadded({{49, 1, 2, 3}, {49, 9}}, 49);
  auto sampled = Generate(*Model(), in, o);
  auto greedy = Generate(*Model(), in, Greedy(6));
  ASSERT_TRUE(sampled.ok()) << sampled.status();
  ASSERT_TRUE(greedy.ok()) << greedy.status();
  EXPECT_TRUE(torch::equal(sampled->new_tokens, greedy->new_tokens));
  // A tiny nucleus keeps only the most likely token too.
  o.top_k = 0;
  o.top_p = 1e-6;
  auto nucleus = Generate(*Model(), in, o);
  ASSERT_TRUE(nucleus.ok()) << nucleus.status();
  EXPECT_TRUE(torch::equal(nucleus->new_tokens, greedy->new_tokens));
}

TEST(GenerateTest, StopAtEosPadsFinishedRowsAndEndsWhenAllFinish) {
  // Find a prompt whose greedy continuation reaches some token X, then make X
  // the EOS of a model with the same weights.
  const std::vector<int64_t> prompt = {49, 3, 17, 8};
  auto free_run = Generate(*Model(), LeftPadded({prompt}, 49), Greedy(6));
  ASSERT_TRUE(free_run.ok()) << free_run.status();
  const std::vector<int64_t> tokens = Row(free_run->new_tokens, 0);
  const int64_t eos = tokens[2];
  const size_t first = std::find(tokens.begin(), tokens.end(), eos) - tokens.begin();
  HookedTransformerConfig cfg = Config();
  cfg.eos_token_id = eos;
  auto model = HookedTransformer::FromWeights(cfg, Model()->ExportWeights()).value();

  GenerateOptions o = Greedy(6);
  o.stop_at_eos = true;
  std::vector<GenerateStep> steps;
  o.on_step = [&](const GenerateStep& s) {
    steps.push_back(s);
    return absl::OkStatus();
  };
  // One row alone: generation ends at its EOS.
  auto alone = Generate(*model, LeftPadded({prompt}, eos), o);
  ASSERT_TRUE(alone.ok()) << alone.status();
  EXPECT_EQ(alone->new_tokens.size(1), static_cast<int64_t>(first) + 1);
  EXPECT_EQ(Row(alone->new_tokens, 0).back(), eos);
  EXPECT_TRUE(alone->finished[0].item<bool>());
  ASSERT_EQ(steps.size(), first + 1);
  EXPECT_TRUE(steps.back().finished[0]);
  EXPECT_TRUE(steps[0].prompt_tokens.defined());
  if (steps.size() > 1) {
    EXPECT_FALSE(steps[1].prompt_tokens.defined());
  }

  // With a row that never finishes within 6 steps, the finished row gets EOS
  // after its own.
  bool other_finishes = true;
  std::vector<int64_t> other;
  for (int64_t start = 0; start < 40 && other_finishes; ++start) {
    other = {start, (start + 7) % 49};
    auto r = Generate(*model, LeftPadded({other}, eos), Greedy(6));
    ASSERT_TRUE(r.ok()) << r.status();
    const auto row = Row(r->new_tokens, 0);
    other_finishes = std::find(row.begin(), row.end(), eos) != row.end();
  }
  ASSERT_FALSE(other_finishes) << "no prompt avoids the chosen EOS";
  steps.clear();
  auto both = Generate(*model, LeftPadded({prompt, other}, eos), o);
  ASSERT_TRUE(both.ok()) << both.status();
  ASSERT_EQ(both->new_tokens.size(1), 6);
  const std::vector<int64_t> row0 = Row(both->new_tokens, 0);
  for (size_t i = first; i < row0.size(); ++i) EXPECT_EQ(row0[i], eos) << "step " << i;
  EXPECT_TRUE(both->finished[0].item<bool>());
  EXPECT_FALSE(both->finished[1].item<bool>());
  EXPECT_TRUE(steps[first].finished[0]);
  EXPECT_FALSE(steps[first].finished[1]);
}

TEST(GenerateTest, LeftPaddingGivesEachRowWhatItGetsAlone) {
  const std::vector<int64_t> a = {49, 3, 17, 8, 21, 30}, b = {49, 12};
  auto batch = Generate(*Model(), LeftPadded({a, b}, 49), Greedy(7));
  auto alone_a = Generate(*Model(), LeftPadded({a}, 49), Greedy(7));
  auto alone_b = Generate(*Model(), LeftPadded({b}, 49), Greedy(7));
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_TRUE(alone_a.ok() && alone_b.ok());
  ASSERT_TRUE(batch->prompt_mask.defined());
  EXPECT_EQ(Row(batch->new_tokens, 0), Row(alone_a->new_tokens, 0));
  EXPECT_EQ(Row(batch->new_tokens, 1), Row(alone_b->new_tokens, 0));

  // Right-padded ids with a mask are re-padded on the left: the same tokens.
  ForwardInput right;
  right.tokens = torch::full({2, 6}, 0, torch::kInt64);
  right.tokens[0] = torch::tensor(a, torch::kInt64);
  right.tokens[1].slice(0, 0, 2).copy_(torch::tensor(b, torch::kInt64));
  right.attention_mask = torch::zeros({2, 6}, torch::kInt64);
  right.attention_mask[0].fill_(1);
  right.attention_mask[1].slice(0, 0, 2).fill_(1);
  auto realigned = Generate(*Model(), right, Greedy(7));
  ASSERT_TRUE(realigned.ok()) << realigned.status();
  EXPECT_TRUE(torch::equal(realigned->new_tokens, batch->new_tokens));
  EXPECT_TRUE(torch::equal(realigned->prompt_tokens, batch->prompt_tokens));
}

TEST(GenerateTest, BadOptionsAndPromptsNameTheField) {
  const ForwardInput in = LeftPadded({{49, 1}}, 49);
  auto expect = [&](GenerateOptions o, const std::string& field) {
    auto out = Generate(*Model(), in, o);
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_THAT(out.status().message(), HasSubstr(field));
  };
  expect(Greedy(0), "max_new_tokens");
  GenerateOptions o = Greedy(2);
  o.temperature = -1;
  expect(o, "temperature");
  o.temperature = std::nan("");
  expect(o, "temperature");
  o = Greedy(2);
  o.top_k = -3;
  expect(o, "top_k");
  o = Greedy(2);
  o.top_p = 1.5;
  expect(o, "top_p");
  // 2 prompt tokens + 23 new > n_ctx 24; 22 fits.
  auto over = Generate(*Model(), in, Greedy(23));
  EXPECT_EQ(over.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(over.status().message(), HasSubstr("n_ctx (24)"));
  EXPECT_TRUE(Generate(*Model(), in, Greedy(22)).ok());
  ForwardInput bad = in;
  bad.tokens = torch::tensor({49, 50}, torch::kInt64).unsqueeze(0);
  EXPECT_THAT(Generate(*Model(), bad, Greedy(1)).status().message(),
              HasSubstr("outside the vocabulary"));
  ForwardInput empty_row = LeftPadded({{49, 1}, {2}}, 49);
  empty_row.attention_mask[1].zero_();
  EXPECT_THAT(Generate(*Model(), empty_row, Greedy(1)).status().message(),
              HasSubstr("row 1 has no real token"));
}

TEST(GenerateTest, CancellationStopsBetweenSteps) {
  GenerateOptions o = Greedy(10);
  int steps = 0;
  o.on_step = [&](const GenerateStep&) {
    ++steps;
    return absl::OkStatus();
  };
  o.is_cancelled = [&] { return steps >= 3; };
  auto out = Generate(*Model(), LeftPadded({{49, 1}}, 49), o);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(steps, 3);
  // A step callback's error ends generation with it.
  o.is_cancelled = nullptr;
  o.on_step = [](const GenerateStep& s) {
    return s.step == 1 ? absl::AbortedError("reader gone") : absl::OkStatus();
  };
  EXPECT_EQ(Generate(*Model(), LeftPadded({{49, 1}}, 49), o).status().code(),
            absl::StatusCode::kAborted);
}

}  // namespace
}  // namespace lensgrid
