// Byte alphabet and UTF-8 handling; lossy decoding is checked against Python
// itself.
#include "worker/model/tokenizer/byte_level.h"

#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/worker/model/tokenizer/test_util.h"

namespace lensgrid {
namespace {

TEST(ByteAlphabetTest, MatchesGpt2BytesToUnicode) {
  EXPECT_EQ(ByteToCodePoint(' '), 0x120u);   // 'Ġ'
  EXPECT_EQ(ByteToCodePoint('\n'), 0x10Au);  // 'Ċ'
  EXPECT_EQ(ByteToCodePoint(0), 0x100u);
  EXPECT_EQ(ByteToCodePoint('!'), static_cast<char32_t>('!'));
  EXPECT_EQ(ByteToCodePoint(0xAD), 0x143u);  // the last of the 68 shifted bytes
  EXPECT_EQ(ByteToCodePoint(0xFF), 0xFFu);
  std::set<char32_t> seen;
  for (int b = 0; b < 256; ++b) seen.insert(ByteToCodePoint(b));
  EXPECT_EQ(seen.size(), 256u);
}

TEST(ByteAlphabetTest, EncodeDecodeRoundTripsEveryByte) {
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  EXPECT_EQ(ByteLevelEncode(" world"), "\xC4\xA0world");
  EXPECT_EQ(ByteLevelDecode(ByteLevelEncode(all)), all);
  EXPECT_EQ(ByteLevelDecode("<|endoftext|>"), "<|endoftext|>");
  EXPECT_EQ(ByteLevelDecode("\xE3\x80\x80"),
            std::nullopt);                        // U+3000: not in the alphabet
  EXPECT_EQ(ByteLevelDecode(" "), std::nullopt);  // a raw space is spelled 'Ġ'
  EXPECT_EQ(ByteLevelDecode("\xFF"), std::nullopt);
}

TEST(Utf8Test, ValidatesPerUnicodeTable3_7) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("\xC2\xA0\xE2\x82\xAC\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF"));
  EXPECT_FALSE(IsValidUtf8("\xC0\x80"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xE0\x9F\xBF"));      // overlong
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xE2\x82"));          // truncated
  EXPECT_FALSE(IsValidUtf8("\x80"));
  EXPECT_FALSE(IsValidUtf8("\xFF"));
}

TEST(Utf8Test, LossyDecodeReplacesMaximalSubparts) {
  const std::string kReplacement = "\xEF\xBF\xBD";
  EXPECT_EQ(DecodeUtf8Lossy("\xE2\x82"), kReplacement);
  EXPECT_EQ(DecodeUtf8Lossy("\xE2\x82"
                            "a"),
            kReplacement + "a");
  EXPECT_EQ(DecodeUtf8Lossy("\xF0\x80\x80"), kReplacement + kReplacement + kReplacement);
  EXPECT_EQ(DecodeUtf8Lossy("\xED\xA0\x80"), kReplacement + kReplacement + kReplacement);
  EXPECT_EQ(DecodeUtf8Lossy("\xF0\x9F\x98"), kReplacement);
  EXPECT_EQ(DecodeUtf8Lossy("a\xFF"
                            "b"),
            "a" + kReplacement + "b");
  EXPECT_EQ(DecodeUtf8Lossy("\xE2\x82\xAC"), "\xE2\x82\xAC");
}

// bytes.decode("utf-8", errors="replace") in Python, on many random byte
// strings.
TEST(Utf8Test, LossyDecodeMatchesPython) {
  const char* python = std::getenv("LENSGRID_PYTHON");
  if (python == nullptr || *python == '\0') GTEST_SKIP() << "LENSGRID_PYTHON not set";
  std::mt19937 rng(7);
  // Bytes that make interesting sequences: ASCII, continuations, every kind of
  // lead byte.
  const std::vector<uint8_t> pool = {'a',  0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2,
                                     0xDF, 0xE0, 0xE1, 0xED, 0xEF, 0xF0, 0xF3, 0xF4, 0xF5, 0xFF};
  std::vector<std::string> inputs;
  for (int i = 0; i < 5000; ++i) {
    std::string bytes;
    const int len = 1 + rng() % 8;
    for (int j = 0; j < len; ++j) bytes.push_back(static_cast<char>(pool[rng() % pool.size()]));
    inputs.push_back(bytes);
  }
  const std::string dir = MakeTempDir("lossy");
  std::ostringstream hex_lines;
  for (const std::string& bytes : inputs) hex_lines << absl::BytesToHexString(bytes) << "\n";
  WriteFile(dir + "/in.txt", hex_lines.str());
  const std::string command = std::string(python) +
                              " -c 'import sys\n"
                              "for l in open(sys.argv[1]):\n"
                              "  print(bytes.fromhex(l.strip()).decode(\"utf-8\", \"replace\")"
                              ".encode().hex())' " +
                              dir + "/in.txt";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[4096];
  for (size_t n; (n = fread(buffer, 1, sizeof(buffer), pipe)) > 0;) output.append(buffer, n);
  ASSERT_EQ(pclose(pipe), 0);
  std::vector<std::string> expected = absl::StrSplit(output, '\n', absl::SkipEmpty());
  ASSERT_EQ(expected.size(), inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    ASSERT_EQ(absl::BytesToHexString(DecodeUtf8Lossy(inputs[i])), expected[i])
        << "input " << absl::BytesToHexString(inputs[i]);
  }
}

}  // namespace
}  // namespace lensgrid
