// The built-in datasets with GPT-2's real tokenizer (installed by bootstrap;
// the test skips without it), and the JSONL reader's errors.
#include "worker/model/analysis/dataset.h"

#include <limits>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lensgrid {
namespace {

using ::testing::HasSubstr;

HookedTransformerConfig Gpt2() { return ModelConfigPreset("gpt2").value(); }

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tok = LoadTokenizerForModel(::testing::TempDir());  // no files: GPT-2 default
    if (!tok.ok()) GTEST_SKIP() << "GPT-2 tokenizer files not installed: " << tok.status();
    tok_ = std::move(*tok);
  }
  Dataset Make(const std::string& name, int64_t n = 20, uint64_t seed = 0) {
    auto ds = MakeDataset({name, n, seed, 8}, Gpt2(), tok_.get());
    EXPECT_TRUE(ds.ok()) << ds.status();
    return ds.ok() ? *ds : Dataset{};
  }
  std::unique_ptr<Tokenizer> tok_;
};

TEST_F(DatasetTest, IoiPromptsAreWellFormed) {
  Dataset ds = Make("ioi", 40);
  ASSERT_EQ(ds.prompts.size(), 40u);
  std::set<std::string> firsts;
  for (const Prompt& p : ds.prompts) {
    EXPECT_EQ(p.tokens.front(), 50256);
    EXPECT_EQ(p.tokens.size(), p.corrupted_tokens.size()) << p.text;
    ASSERT_EQ(p.answers.size(), 1u);
    ASSERT_EQ(p.wrongs.size(), 1u);
    std::string io = tok_->Decode({p.answers[0]}).value();
    std::string s = tok_->Decode({p.wrongs[0]}).value();
    EXPECT_NE(io, s);
    // IO appears once, S twice, and the prompt stops right before the IO.
    auto count = [&](const std::string& name) {
      size_t n = 0;
      for (size_t at = p.text.find(name); at != std::string::npos; at = p.text.find(name, at + 1)) {
        ++n;
      }
      return n;
    };
    EXPECT_EQ(count(io), 1u) << p.text;
    EXPECT_EQ(count(s), 2u) << p.text;
    EXPECT_EQ(p.text.substr(p.text.size() - 3), " to") << p.text;
    // The corrupted prompt shares no name with the clean one.
    std::string corrupted = tok_->Decode(p.corrupted_tokens).value();
    EXPECT_EQ(corrupted.find(io), std::string::npos) << corrupted;
    EXPECT_EQ(corrupted.find(s), std::string::npos) << corrupted;
    firsts.insert(p.text.substr(0, 6));
  }
  EXPECT_GT(firsts.size(), 3u);  // several templates
}

TEST_F(DatasetTest, GeneratorsAreSeeded) {
  for (const std::string& name : BuiltinDatasetNames()) {
    Dataset a = Make(name, 10, 7), b = Make(name, 10, 7), c = Make(name, 10, 8);
    ASSERT_EQ(a.prompts.size(), 10u) << name;
    bool all_same = true;
    for (size_t i = 0; i < 10; ++i) {
      EXPECT_EQ(a.prompts[i].tokens, b.prompts[i].tokens) << name;
      all_same = all_same && a.prompts[i].tokens == c.prompts[i].tokens;
    }
    EXPECT_FALSE(all_same) << name << ": another seed gives the same prompts";
  }
}

TEST_F(DatasetTest, GenderBiasAndGreaterThan) {
  int64_t he = tok_->ToSingleToken(" he").value(), she = tok_->ToSingleToken(" she").value();
  for (const Prompt& p : Make("gender-bias").prompts) {
    EXPECT_TRUE((p.answers[0] == he && p.wrongs[0] == she) ||
                (p.answers[0] == she && p.wrongs[0] == he));
    EXPECT_THAT(tok_->Decode(p.corrupted_tokens).value(), HasSubstr("The person "));
    EXPECT_EQ(p.tokens.size(), p.corrupted_tokens.size());
  }
  for (const Prompt& p : Make("greater-than").prompts) {
    EXPECT_THAT(p.text, HasSubstr(" to the year 17"));
    EXPECT_EQ(p.answers.size() + p.wrongs.size(), 100u);  // "00".."99" are single tokens
    int yy = std::stoi(p.text.substr(p.text.find("year 17") + 7, 2));
    EXPECT_EQ(p.wrongs.size(), static_cast<size_t>(yy + 1));
    EXPECT_THAT(tok_->Decode(p.corrupted_tokens).value(), HasSubstr("year 1701 "));
  }
}

TEST(InductionDatasetTest, RepeatsTheFirstHalf) {
  auto ds = MakeDataset({"induction", 4, 1, 6}, Gpt2(), nullptr).value();
  for (const Prompt& p : ds.prompts) {
    ASSERT_EQ(p.tokens.size(), 12u);  // BOS + 6 + 5
    for (int i = 0; i < 5; ++i) EXPECT_EQ(p.tokens[1 + i], p.tokens[7 + i]);
    EXPECT_EQ(p.answers[0], p.tokens[6]);  // the next repeated token
    EXPECT_EQ(p.loss_start, 7);
    EXPECT_EQ(p.corrupted_tokens.size(), p.tokens.size());
  }
}

TEST(JsonlDatasetTest, ParsesIdsAndNamesBadLines) {
  HookedTransformerConfig cfg = Gpt2();
  auto ok = ParseJsonlDataset(
      "{\"tokens\": [50256, 1, 2], \"answer\": 5, \"wrong\": 6, \"corrupted_tokens\": [50256, 3, "
      "4]}\n"
      "\n"
      "{\"tokens\": [50256, 7], \"answer\": 8, \"wrong\": 9}\n",
      "d.jsonl", cfg, nullptr);
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_EQ(ok->prompts.size(), 2u);
  EXPECT_EQ(ok->prompts[1].origin, "d.jsonl:3");
  EXPECT_FALSE(ok->has_corrupted());
  auto sets = ParseJsonlDataset(
      "{\"tokens\": [50256, 1, 2], \"answers\": [5, 7], \"wrongs\": [6], \"loss_start\": 2}\n",
      "d.jsonl", cfg, nullptr);
  ASSERT_TRUE(sets.ok()) << sets.status();
  EXPECT_EQ(sets->prompts[0].answers, (std::vector<int64_t>{5, 7}));
  EXPECT_EQ(sets->prompts[0].loss_start, 2);

  auto err = [&](const std::string& line) {
    return ParseJsonlDataset("{\"tokens\": [1, 2], \"answer\": 1, \"wrong\": 2}\n" + line,
                             "d.jsonl", cfg, nullptr)
        .status();
  };
  EXPECT_THAT(err("{not json").message(), HasSubstr("d.jsonl:2: not a JSON object"));
  EXPECT_THAT(err("{\"answer\": 1, \"wrong\": 2}").message(),
              HasSubstr("d.jsonl:2: needs \"prompt\" (text) or \"tokens\""));
  EXPECT_THAT(err("{\"tokens\": [1, 99999], \"answer\": 1, \"wrong\": 2}").message(),
              HasSubstr("d.jsonl:2: \"tokens\" has 99999, not a token id"));
  EXPECT_THAT(err("{\"tokens\": [1, 2], \"answers\": [], \"wrong\": 2}").message(),
              HasSubstr("d.jsonl:2: \"answers\" must be a non-empty array"));
  EXPECT_THAT(err("{\"tokens\": [1, 2], \"answer\": 1, \"wrong\": 2, \"loss_start\": 5}").message(),
              HasSubstr("\"loss_start\" must be an integer in [1, 2)"));
  EXPECT_THAT(err("{\"tokens\": [1], \"wrong\": 2}").message(),
              HasSubstr("d.jsonl:2: missing \"answer\""));
  EXPECT_THAT(err("{\"prompt\": \"hi\", \"answer\": 1, \"wrong\": 2}").message(),
              HasSubstr("d.jsonl:2: \"prompt\" is text: it needs tokenizer files"));
  EXPECT_THAT(MakeDataset({"nope", 4}, cfg, nullptr).status().message(),
              HasSubstr("unknown dataset \"nope\""));
  EXPECT_THAT(MakeDataset({"/tmp/missing.jsonl", 4}, cfg, nullptr).status().message(),
              HasSubstr("cannot read dataset file"));
  EXPECT_THAT(MakeDataset({"induction", 0}, cfg, nullptr).status().message(),
              HasSubstr("n_prompts must be positive"));
}

TEST_F(DatasetTest, JsonlTextAnswersMustBeSingleTokens) {
  auto status = ParseJsonlDataset(
      "{\"prompt\": \"When Mary and John went to the store, John gave a drink to\", "
      "\"answer\": \" Mary\", \"wrong\": \" Johnathan Smith\"}\n",
      "d.jsonl", Gpt2(), tok_.get());
  EXPECT_THAT(status.status().message(), HasSubstr("d.jsonl:1: \"wrong\""));
  auto ok = ParseJsonlDataset(
      "{\"prompt\": \"When Mary and John went to the store, John gave a drink to\", "
      "\"answer\": \" Mary\", \"wrong\": \" John\"}\n",
      "d.jsonl", Gpt2(), tok_.get());
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->prompts[0].tokens.front(), 50256);  // BOS, as to_tokens
  EXPECT_EQ(ok->prompts[0].answers[0], 5335);
}

TEST(DatasetLimitsTest, LongPromptIsNamed) {
  HookedTransformerConfig cfg = Gpt2();
  cfg.n_ctx = 8;
  EXPECT_THAT(MakeDataset({"induction", 2, 0, 6}, cfg, nullptr).status().message(),
              HasSubstr("n_positions"));
  // 2 x seq_len + 1 overflows here: refused as too long, not allocated.
  for (int64_t seq_len : {std::numeric_limits<int64_t>::max(), int64_t{1} << 62}) {
    EXPECT_THAT(MakeDataset({"induction", 2, 0, seq_len}, cfg, nullptr).status().message(),
                HasSubstr("n_positions"));
  }
}

}  // namespace
}  // namespace lensgrid
