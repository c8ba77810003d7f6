// The heap merge loop against GPT-2's own loop (EncodeByRounds), on toy and
// real merges.
#include "worker/model/tokenizer/bpe.h"

#include <chrono>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/worker/model/tokenizer/test_util.h"

namespace lensgrid {
namespace {

std::array<int32_t, 256> IdentityByteIds() {
  std::array<int32_t, 256> ids;
  for (int b = 0; b < 256; ++b) ids[b] = b;
  return ids;
}

std::string RandomWord(std::mt19937& rng, std::string_view alphabet, int max_len) {
  std::string word(1 + rng() % max_len, ' ');
  for (char& c : word) c = alphabet[rng() % alphabet.size()];
  return word;
}

void ExpectHeapMatchesRounds(const BytePairMerger& merger, const std::string& word) {
  std::vector<int32_t> heap, rounds;
  merger.EncodeWithHeap(word, &heap);
  merger.EncodeByRounds(word, &rounds);
  ASSERT_EQ(heap, rounds) << "word \"" << word << "\"";
}

// Merges as training makes them: each joins two tokens that already exist.
TEST(BytePairMergerTest, HeapMatchesGpt2LoopOnTrainedStyleMerges) {
  std::mt19937 rng(1);
  std::vector<int32_t> tokens = {'a', 'b', 'c'};
  absl::flat_hash_map<uint64_t, MergeRule> merges;
  for (int32_t rank = 0; rank < 300; ++rank) {
    const int32_t left = tokens[rng() % tokens.size()], right = tokens[rng() % tokens.size()];
    if (!merges.emplace(PairKey(left, right), MergeRule{rank, 256 + rank}).second) continue;
    tokens.push_back(256 + rank);
  }
  BytePairMerger merger(IdentityByteIds(), merges);
  EXPECT_TRUE(merger.merges_ordered());
  for (int i = 0; i < 3000; ++i) ExpectHeapMatchesRounds(merger, RandomWord(rng, "abc", 200));
}

TEST(BytePairMergerTest, UnorderedMergesUseGpt2Loop) {
  // "ab"+"a" is ranked before "a"+"b" makes "ab". GPT-2's loop merges every "a
  // b" first.
  absl::flat_hash_map<uint64_t, MergeRule> merges = {{PairKey(256, 'a'), {0, 257}},
                                                     {PairKey('a', 'b'), {1, 256}}};
  BytePairMerger merger(IdentityByteIds(), merges);
  EXPECT_FALSE(merger.merges_ordered());
  std::vector<int32_t> ids, heap;
  merger.Encode("abab", &ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{256, 256}));
  merger.EncodeWithHeap("abab", &heap);  // what the shortcut would get wrong
  EXPECT_EQ(heap, (std::vector<int32_t>{257, 'b'}));
}

TEST(BytePairMergerTest, NoMergesLeavesBytes) {
  BytePairMerger merger(IdentityByteIds(), {});
  std::vector<int32_t> ids;
  merger.Encode("xyz", &ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{'x', 'y', 'z'}));
}

TEST(BytePairMergerTest, HeapMatchesGpt2LoopOnGpt2Merges) {
  LG_REQUIRE_GPT2();
  const BytePairMerger& merger = Gpt2Tokenizer()->merger();
  EXPECT_TRUE(merger.merges_ordered());
  std::mt19937 rng(2);
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes.push_back(static_cast<char>(b));
  for (int i = 0; i < 2000; ++i) {
    ExpectHeapMatchesRounds(merger, " " + RandomWord(rng, "etaoinshrdlucmfwyp", 30));
    ExpectHeapMatchesRounds(merger, RandomWord(rng, "abcdefghijklmnopqrstuvwxyz", 400));
    ExpectHeapMatchesRounds(merger, RandomWord(rng, all_bytes, 60));
  }
  ExpectHeapMatchesRounds(merger, std::string(3000, 'a'));
  ExpectHeapMatchesRounds(merger, " " + std::string(3000, '='));
}

// A megabyte "word" takes the heap merger (n log n; the speed is bench/tokenizer_bench's to
// measure): it must still give GPT-2's tokens, which round-trip to the bytes, and equal the
// reference round-by-round loop where that loop is affordable.
TEST(BytePairMergerTest, MegabyteWordsEncodeExactly) {
  LG_REQUIRE_GPT2();
  std::mt19937 rng(3);
  std::string word = RandomWord(rng, "acgt", 1) + std::string(1 << 20, 'a');
  std::string dna(1 << 20, ' ');
  for (char& c : dna) c = "acgt"[rng() % 4];
  const auto& merger = Gpt2Tokenizer()->merger();
  for (const std::string* text : {&word, &dna}) {
    std::vector<int32_t> ids;
    merger.Encode(*text, &ids);
    EXPECT_GT(ids.size(), 1000u);
    const std::vector<int64_t> wide(ids.begin(), ids.end());
    EXPECT_EQ(Gpt2Tokenizer()->DecodeBytes(wide).value(), *text);
    const std::string prefix = text->substr(0, 8192);
    std::vector<int32_t> heap, rounds;
    merger.EncodeWithHeap(prefix, &heap);
    merger.EncodeByRounds(prefix, &rounds);
    EXPECT_EQ(heap, rounds);
  }
}

}  // namespace
}  // namespace lensgrid
