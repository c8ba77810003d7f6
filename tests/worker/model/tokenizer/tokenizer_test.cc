// Tokenizer API on GPT-2's real files: known ids, special token, decoding,
// errors, threads.
#include "worker/model/tokenizer/tokenizer.h"

#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/model/tokenizer/test_util.h"

namespace lensgrid {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kReplacement[] = "\xEF\xBF\xBD";

TEST(Gpt2TokenizerTest, KnownIds) {
  LG_REQUIRE_GPT2();
  const Tokenizer& tok = *Gpt2Tokenizer();
  EXPECT_THAT(tok.Encode("The cat sat on the mat."),
              ElementsAre(464, 3797, 3332, 319, 262, 2603, 13));
  EXPECT_THAT(tok.Encode("Hello world"), ElementsAre(15496, 995));
  EXPECT_THAT(tok.Encode(" Mary Jane"), ElementsAre(5335, 12091));
  EXPECT_THAT(tok.Encode(""), ElementsAre());
  EXPECT_EQ(tok.vocab_size(), 50257);
  EXPECT_EQ(*tok.TokenString(995), "\xC4\xA0world");  // "Ġworld"
}

TEST(Gpt2TokenizerTest, SingleTokens) {
  LG_REQUIRE_GPT2();
  const Tokenizer& tok = *Gpt2Tokenizer();
  EXPECT_EQ(*tok.ToSingleToken(" Mary"), 5335);
  EXPECT_EQ(*tok.ToSingleToken(" John"), 1757);
  EXPECT_EQ(*tok.ToSingleToken("<|endoftext|>"), 50256);
  absl::StatusOr<int64_t> two = tok.ToSingleToken(" Mary Jane");
  EXPECT_EQ(two.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(two.status().message(), HasSubstr("2 tokens [5335, 12091]"));
  EXPECT_EQ(tok.ToSingleToken("").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Gpt2TokenizerTest, EndOfTextIsRecognisedInText) {
  LG_REQUIRE_GPT2();
  const Tokenizer& tok = *Gpt2Tokenizer();
  EXPECT_EQ(tok.eot_token(), 50256);
  EXPECT_THAT(tok.Encode("<|endoftext|>"), ElementsAre(50256));
  EXPECT_THAT(tok.Encode("a<|endoftext|>b"), ElementsAre(64, 50256, 65));
  // The text on each side is encoded on its own: " " is not merged into " The".
  EXPECT_THAT(tok.Encode(" <|endoftext|><|endoftext|>The"), ElementsAre(220, 50256, 50256, 464));
  EXPECT_THAT(tok.Encode("<|endoftext"), ElementsAre(27, 91, 437, 1659, 5239));
  EXPECT_EQ(*tok.Decode({464, 50256, 464}), "The<|endoftext|>The");
}

TEST(Gpt2TokenizerTest, DecodeReplacesPartialUtf8) {
  LG_REQUIRE_GPT2();
  const Tokenizer& tok = *Gpt2Tokenizer();
  // "€" is E2 82 AC: one token (26391), or "â" (158, byte E2) + "Ĥ¬" (8955,
  // bytes 82 AC).
  EXPECT_THAT(tok.Encode("\xE2\x82\xAC"), ElementsAre(26391));
  EXPECT_EQ(*tok.Decode({158, 8955}), "\xE2\x82\xAC");
  EXPECT_EQ(*tok.Decode({158}), kReplacement);
  EXPECT_EQ(*tok.Decode({158, 224}),
            kReplacement);  // E2 82: one maximal subpart
  EXPECT_EQ(*tok.Decode({64, 158, 64}), std::string("a") + kReplacement + "a");
  // Bytes 82 AC are two lone continuation bytes: two replacements, as in
  // Python.
  EXPECT_THAT(*tok.ToStrTokens({464, 158, 8955}),
              ElementsAre("The", kReplacement, std::string(kReplacement) + kReplacement));
  EXPECT_EQ(*tok.DecodeBytes({158, 224}), "\xE2\x82");
}

TEST(Gpt2TokenizerTest, UnknownIdsAreErrorsNamingTheId) {
  LG_REQUIRE_GPT2();
  const Tokenizer& tok = *Gpt2Tokenizer();
  for (int64_t bad : {int64_t{50257}, int64_t{-1}, int64_t{1} << 40}) {
    absl::StatusOr<std::string> text = tok.Decode({464, bad});
    EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(text.status().message(), HasSubstr("token id " + std::to_string(bad)));
    EXPECT_FALSE(tok.ToStrTokens({bad}).ok());
    EXPECT_FALSE(tok.TokenString(bad).ok());
  }
}

TEST(Gpt2TokenizerTest, RoundTrips) {
  LG_REQUIRE_GPT2();
  const Tokenizer& tok = *Gpt2Tokenizer();
  for (std::string text : {"Hello, world!  \n\tIt's 3.14 \xE2\x80\x94 caf\xC3\xA9.",
                           "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9 \xE4\xB8\xAD\xE6\x96\x87",
                           "  leading and trailing  ", "\r\n\r\n", "<|endoftext|>x"}) {
    EXPECT_EQ(*tok.Decode(tok.Encode(text)), text);
  }
  // Any bytes, valid UTF-8 or not, come back exactly from DecodeBytes.
  std::mt19937 rng(5);
  for (int i = 0; i < 2000; ++i) {
    std::string bytes(1 + rng() % 40, ' ');
    for (char& c : bytes) c = static_cast<char>(rng() % 4 == 0 ? ' ' : rng() % 256);
    EXPECT_EQ(*tok.DecodeBytes(tok.Encode(bytes)), bytes);
  }
}

TEST(Gpt2TokenizerTest, IllFormedUtf8IsEncodedByteWise) {
  LG_REQUIRE_GPT2();
  const Tokenizer& tok = *Gpt2Tokenizer();
  // A lone 0xFF is the byte token "ÿ" (187).
  EXPECT_THAT(tok.Encode("\xFF"), ElementsAre(187));
  EXPECT_EQ(*tok.DecodeBytes(tok.Encode("a \xFF!b")), "a \xFF!b");
  EXPECT_EQ(*tok.Decode(tok.Encode("a\xE2\x82"
                                   "b")),
            std::string("a") + kReplacement + "b");
}

TEST(Gpt2TokenizerTest, ConcurrentEncodesAgree) {
  LG_REQUIRE_GPT2();
  const Tokenizer& tok = *Gpt2Tokenizer();
  std::vector<std::string> texts;
  std::mt19937 rng(6);
  for (int i = 0; i < 64; ++i) {
    std::string text;
    for (int w = 0; w < 200; ++w) {
      text += " w" + std::to_string(rng() % 5000) + (w % 7 == 0 ? ".\n" : "");
    }
    texts.push_back(text);
  }
  std::vector<std::vector<int64_t>> expected;
  for (const std::string& text : texts) expected.push_back(tok.Encode(text));
  std::vector<std::thread> threads;
  std::vector<int> mismatches(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          const size_t j = (i * 7 + t + round) % texts.size();
          if (tok.Encode(texts[j]) != expected[j]) ++mismatches[t];
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(mismatches, ::testing::Each(0));
}

}  // namespace
}  // namespace lensgrid
