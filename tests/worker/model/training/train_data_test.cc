// The training data generators: deterministic, well-formed, and split.
#include "worker/model/training/train_data.h"

#include <algorithm>
#include <map>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/model/test_util.h"
#include "worker/model/training/truncated_bpe.h"

namespace lensgrid {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kMerges = 6000;

// GPT-2's files cut to kMerges merges, written once per test binary.
const Tokenizer& Tok() {
  static const Tokenizer* tok = [] {
    std::string dir = ::lensgrid::testing::MakeTempDir("train_data_tok");
    absl::Status s = WriteTruncatedGpt2Tokenizer(DefaultBpeDir(), kMerges, dir);
    EXPECT_TRUE(s.ok()) << s;
    return LoadTokenizerFromDir(dir).value().release();
  }();
  return *tok;
}

TrainData Data(const TrainDataOptions& o = {}) {
  return TrainData::Create(o, TruncatedGpt2VocabSize(kMerges), &Tok()).value();
}

TEST(TruncatedBpeTest, CutVocabularyEndsInEndOfText) {
  std::string dir = ::lensgrid::testing::MakeTempDir("truncated_bpe");
  ASSERT_TRUE(WriteTruncatedGpt2Tokenizer(DefaultBpeDir(), 300, dir).ok());
  auto tok = LoadTokenizerFromDir(dir).value();
  EXPECT_EQ(tok->vocab_size(), 557);
  EXPECT_EQ(tok->eot_token(), 556);
  std::vector<int64_t> ids = tok->Encode("When Mary and John went to the store<|endoftext|>");
  EXPECT_EQ(ids.back(), 556);
  for (int64_t id : ids) EXPECT_LT(id, 557);
  EXPECT_EQ(tok->Decode(ids).value(), "When Mary and John went to the store<|endoftext|>");
  // Merges the cut keeps still apply: " the" is GPT-2's id 262.
  EXPECT_EQ(tok->ToSingleToken(" the").value(), 262);
  EXPECT_FALSE(WriteTruncatedGpt2Tokenizer(DefaultBpeDir(), 50001, dir).ok());
}

TEST(TrainDataTest, BatchesAreDeterministicAndWellFormed) {
  TrainData a = Data(), b = Data();
  EXPECT_EQ(a.Batch(8, 3), b.Batch(8, 3));
  EXPECT_NE(a.Batch(8, 3), a.Batch(8, 4));
  EXPECT_NE(a.Batch(8, 3), a.HeldOutBatch(8, 3));
  TrainDataOptions other;
  other.seed = 7;
  EXPECT_NE(a.Batch(8, 3), Data(other).Batch(8, 3));
  std::vector<int64_t> ids = a.Batch(8, 3);
  ASSERT_EQ(ids.size(), 8u * 128);
  for (int64_t r = 0; r < 8; ++r) EXPECT_EQ(ids[r * 128], a.eot()) << "row " << r;
  for (int64_t id : ids) {
    EXPECT_GE(id, 0);
    EXPECT_LE(id, a.eot());
  }
}

TEST(TrainDataTest, RepeatsRowsCopySpansAtVaryingOffsets) {
  TrainData data = Data();
  std::set<int64_t> offsets;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    std::mt19937_64 rng(seed);
    std::vector<int64_t> row = data.RepeatsRow(rng);
    ASSERT_EQ(row.size(), 128u);
    // Some span of >= 4 tokens appears twice; record the distance.
    bool found = false;
    for (int64_t i = 1; i + 4 <= 128 && !found; ++i) {
      for (int64_t j = i + 4; j + 4 <= 128 && !found; ++j) {
        if (std::equal(row.begin() + i, row.begin() + i + 4, row.begin() + j)) {
          offsets.insert(j - i);
          found = true;
        }
      }
    }
    EXPECT_TRUE(found) << "seed " << seed;
  }
  EXPECT_GE(offsets.size(), 5u);  // no fixed offset to learn
}

TEST(TrainDataTest, ChainRowsFollowASecondOrderRule) {
  TrainDataOptions o;
  o.chain_noise = 0;
  TrainData data = Data(o);
  std::mt19937_64 rng(1);
  std::vector<int64_t> row = data.ChainRow(rng);
  std::set<int64_t> alphabet(row.begin() + 1, row.end());
  EXPECT_LE(alphabet.size(), static_cast<size_t>(o.chain_alphabet));
  // x[t+1] is a function of x[t-1]: the same x[t-1] always gives the same x[t+1].
  std::map<int64_t, int64_t> next;
  for (size_t t = 2; t + 1 < row.size(); ++t) {
    auto [it, inserted] = next.emplace(row[t - 1], row[t + 1]);
    EXPECT_EQ(it->second, row[t + 1]) << "t " << t;
  }
}

TEST(TrainDataTest, CurriculumStartsWithHalfRepeatsAtOneOffset) {
  TrainDataOptions o;
  o.half_repeat_batches = 10;
  o.ioi_fraction = 0;
  o.chain_fraction = 0;  // all rows are repeats rows
  TrainData data = Data(o);
  auto is_half_repeat = [](const std::vector<int64_t>& ids, int64_t r) {
    auto row = ids.begin() + r * 128;
    return std::equal(row + 1, row + 64, row + 64);
  };
  std::vector<int64_t> early = data.Batch(4, 9), late = data.Batch(4, 10),
                       held_out = data.HeldOutBatch(4, 0);
  for (int64_t r = 0; r < 4; ++r) {
    EXPECT_TRUE(is_half_repeat(early, r)) << r;
    EXPECT_FALSE(is_half_repeat(late, r)) << r;
    EXPECT_FALSE(is_half_repeat(held_out, r)) << r;
  }
}

TEST(TrainDataTest, TriggerRowsRepeatTheirPairs) {
  TrainData data = Data();
  int rows_with_repeated_pairs = 0;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    std::mt19937_64 rng(seed);
    std::vector<int64_t> row = data.TriggersRow(rng);
    ASSERT_EQ(row.size(), 128u);
    std::map<std::pair<int64_t, int64_t>, int> pairs;
    for (size_t t = 1; t + 1 < row.size(); ++t) ++pairs[{row[t], row[t + 1]}];
    int most = 0;
    for (const auto& [pair, count] : pairs) most = std::max(most, count);
    if (most >= 3) ++rows_with_repeated_pairs;
  }
  EXPECT_GE(rows_with_repeated_pairs, 15);
}

TEST(TrainDataTest, IoiSentencesAndTheHeldOutSplit) {
  TrainData data = Data();
  ASSERT_TRUE(data.has_ioi());
  for (const auto& n : data.held_out_names()) {
    EXPECT_EQ(std::count(data.train_names().begin(), data.train_names().end(), n), 0) << n;
  }
  for (const auto& t : data.held_out_templates()) {
    EXPECT_EQ(std::count(data.train_templates().begin(), data.train_templates().end(), t), 0);
  }
  std::mt19937_64 rng(3);
  std::string text = Tok().Decode(data.IoiRow(rng, false)).value();
  EXPECT_THAT(text, HasSubstr("<|endoftext|>"));
  EXPECT_THAT(text, HasSubstr(" and "));
  std::vector<Prompt> prompts = data.IoiPrompts(50, 1, /*held_out=*/true);
  ASSERT_EQ(prompts.size(), 50u);
  std::set<int64_t> held_out_ids;
  for (const auto& n : data.held_out_names()) held_out_ids.insert(Tok().ToSingleToken(n).value());
  for (const Prompt& p : prompts) {
    EXPECT_EQ(p.tokens[0], data.eot());
    EXPECT_NE(p.answers[0], p.wrongs[0]);
    EXPECT_TRUE(held_out_ids.count(p.answers[0])) << p.text;
    EXPECT_TRUE(held_out_ids.count(p.wrongs[0])) << p.text;
    // The subject appears twice, the indirect object once; the prompt ends before the answer.
    EXPECT_EQ(std::count(p.tokens.begin(), p.tokens.end(), p.wrongs[0]), 2) << p.text;
    EXPECT_EQ(std::count(p.tokens.begin(), p.tokens.end(), p.answers[0]), 1) << p.text;
  }
  EXPECT_EQ(Tok().Decode(prompts[0].tokens).value().rfind("<|endoftext|>", 0), 0u);
}

TEST(TrainDataTest, RejectsSpansThatDoNotFit) {
  TrainDataOptions o;
  o.seq_len = 32;
  auto data = TrainData::Create(o, TruncatedGpt2VocabSize(kMerges), &Tok());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lensgrid
