// GPT-2's pre-tokenizer pattern, including its Python-regex whitespace set,
// ill-formed UTF-8, and inputs large enough to exhaust a regex engine's stack.
#include "worker/model/tokenizer/pretokenizer.h"

#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lensgrid {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> Split(std::string_view text) {
  static const PreTokenizer* pre = PreTokenizer::Create()->release();
  std::vector<std::string> pieces;
  pre->Split(text, [&](std::string_view piece) { pieces.emplace_back(piece); });
  return pieces;
}

TEST(PreTokenizerTest, SplitsLikeGpt2) {
  EXPECT_THAT(Split("Hello world"), ElementsAre("Hello", " world"));
  EXPECT_THAT(Split("I'm fine, they'RE 42!"),
              ElementsAre("I", "'m", " fine", ",", " they", "'", "RE", " 42", "!"));
  EXPECT_THAT(Split("a  b"), ElementsAre("a", " ", " b"));
  EXPECT_THAT(Split("a\n\n  b  "), ElementsAre("a", "\n\n ", " b", "  "));
  EXPECT_THAT(Split(" \t(x)"), ElementsAre(" ", "\t", "(", "x", ")"));
  EXPECT_THAT(Split("x1.5e3"), ElementsAre("x", "1", ".", "5", "e", "3"));
  EXPECT_THAT(Split("caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87"),  // "café 中文"
              ElementsAre("caf\xC3\xA9", " \xE4\xB8\xAD\xE6\x96\x87"));
  EXPECT_THAT(Split(""), ElementsAre());
}

// Python's `regex` \s is the White_Space property: U+0085 is space, U+FEFF and
// U+180E are not.
TEST(PreTokenizerTest, WhitespaceIsUnicodeWhiteSpace) {
  EXPECT_THAT(Split("a\xC2\x85"
                    "b"),
              ElementsAre("a", "\xC2\x85", "b"));
  EXPECT_THAT(Split("a\xC2\xA0\xC2\xA0"
                    "b"),
              ElementsAre("a", "\xC2\xA0", "\xC2\xA0", "b"));
  EXPECT_THAT(Split("a\xE3\x80\x80"
                    "b"),
              ElementsAre("a", "\xE3\x80\x80", "b"));
  EXPECT_THAT(Split("a \xEF\xBB\xBF"
                    "b"),
              ElementsAre("a", " \xEF\xBB\xBF", "b"));
  EXPECT_THAT(Split("a \xE1\xA0\x8E"
                    "b"),
              ElementsAre("a", " \xE1\xA0\x8E", "b"));
}

// Each ill-formed byte is one "other" character: it joins punctuation runs and
// a leading space.
TEST(PreTokenizerTest, IllFormedBytesActAsSymbols) {
  EXPECT_THAT(Split("a \xFF!b"), ElementsAre("a", " \xFF!", "b"));
  EXPECT_THAT(Split("abc\xE2\x82"), ElementsAre("abc", "\xE2\x82"));
  EXPECT_THAT(Split("\xE2\x82"
                    "abc"),
              ElementsAre("\xE2\x82", "abc"));
  EXPECT_THAT(Split("x \x80\xC3\xA9"), ElementsAre("x", " \x80", "\xC3\xA9"));
  EXPECT_THAT(Split("\xED\xA0\x80 \xF0\x9F\x98"), ElementsAre("\xED\xA0\x80", " \xF0\x9F\x98"));
  EXPECT_THAT(Split("  \xFF"), ElementsAre(" ", " \xFF"));
}

TEST(PreTokenizerTest, HugeRunsStayOnePiece) {
  const std::string spaces(8 << 20, ' ');
  EXPECT_THAT(Split(spaces), ElementsAre(spaces));
  const std::string letters(8 << 20, 'a');
  EXPECT_THAT(Split(letters), ElementsAre(letters));
  const std::string symbols(4 << 20, '=');
  EXPECT_THAT(Split(symbols), ElementsAre(symbols));
  EXPECT_THAT(Split("x" + spaces + "y"),
              ElementsAre("x", std::string(spaces.size() - 1, ' '), " y"));
}

TEST(PreTokenizerTest, PiecesConcatenateBackToAnyBytes) {
  std::string text;
  for (int i = 0; i < 20000; ++i) text.push_back(static_cast<char>((i * 7919) % 256));
  std::string joined;
  for (const std::string& piece : Split(text)) {
    ASSERT_FALSE(piece.empty());
    joined += piece;
  }
  EXPECT_EQ(joined, text);
}

TEST(PreTokenizerTest, InterpreterMatchesJit) {
  auto jit = PreTokenizer::Create(/*allow_jit=*/true);
  auto interpreter = PreTokenizer::Create(/*allow_jit=*/false);
  ASSERT_TRUE(jit.ok() && interpreter.ok());
  const std::vector<std::string> pool = {"a",
                                         "Z",
                                         "1",
                                         " ",
                                         "  ",
                                         "\t",
                                         "\n",
                                         "\r\n",
                                         "'",
                                         "'s",
                                         "'LL",
                                         ".",
                                         "!?",
                                         "\xC2\xA0",
                                         "\xC2\x85",
                                         "\xE3\x80\x80",
                                         "\xEF\xBB\xBF",
                                         "\xC3\xA9",
                                         "\xCC\x81",
                                         "\xE4\xB8\xAD",
                                         "\xF0\x9F\x98\x80",
                                         "\xE2\x80\x8D",
                                         "\xFF",
                                         "\xE2\x82",
                                         "\xD9\xA1",
                                         "\xE2\x85\xA0"};
  std::mt19937 rng(4);
  for (int i = 0; i < 5000; ++i) {
    std::string text;
    for (int j = rng() % 30; j >= 0; --j) text += pool[rng() % pool.size()];
    std::vector<std::string> a, b;
    (*jit)->Split(text, [&](std::string_view p) { a.emplace_back(p); });
    (*interpreter)->Split(text, [&](std::string_view p) { b.emplace_back(p); });
    ASSERT_EQ(a, b) << text;
  }
}

}  // namespace
}  // namespace lensgrid
