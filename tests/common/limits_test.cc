// Bounded parsing of client input: regexes (PCRE2 with limits), JSON nesting,
// and the echo of input in error messages.
#include <string>

#include "common/bounded_regex.h"
#include "common/echo.h"
#include "common/json_limits.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lensgrid {
namespace {

using ::testing::HasSubstr;

TEST(BoundedRegexTest, MatchesLikeRegexSearch) {
  auto re = BoundedRegex::Compile(R"(blocks\.[0-3]\.attn\.hook_(q|k)$)");
  ASSERT_TRUE(re.ok()) << re.status();
  EXPECT_TRUE(re->Search("blocks.2.attn.hook_q").value());
  EXPECT_FALSE(re->Search("blocks.2.attn.hook_v").value());
  EXPECT_FALSE(re->Search("blocks.5.attn.hook_q").value());
  EXPECT_TRUE(BoundedRegex::Compile("hook_z").value().Search("blocks.0.attn.hook_z").value());
}

TEST(BoundedRegexTest, CatastrophicBacktrackingIsRefusedNotRun) {
  // The probe's pattern wedged std::regex forever on hook names; PCRE2 sees
  // that no name holds an "x" and answers at once.
  auto probe = BoundedRegex::Compile("(.*.*)*x");
  ASSERT_TRUE(probe.ok());
  EXPECT_FALSE(probe->Search("blocks.11.attn.hook_pattern").value());
  // Where backtracking is truly exponential, the match limit stops it.
  for (const char* pattern : {"^(a|aa)*$", "^(a*)*$", "(\\w+\\s?)*$"}) {
    auto re = BoundedRegex::Compile(pattern);
    ASSERT_TRUE(re.ok()) << pattern;
    auto hit = re->Search(std::string(40, 'a') + "!");
    EXPECT_EQ(hit.status().code(), absl::StatusCode::kResourceExhausted) << pattern;
    EXPECT_THAT(hit.status().message(), HasSubstr("too much backtracking")) << pattern;
  }
}

TEST(BoundedRegexTest, HugeAndDeeplyNestedPatternsAreInvalidArguments) {
  std::string nested;  // 40 KB of "((((...a...))))": overflowed std::regex's stack
  for (int i = 0; i < 20000; ++i) nested += "(";
  nested += "a";
  for (int i = 0; i < 20000; ++i) nested += ")";
  auto long_one = BoundedRegex::Compile(nested);
  EXPECT_EQ(long_one.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(long_one.status().message(), HasSubstr("longer than the 1024-byte limit"));
  EXPECT_LT(long_one.status().message().size(), 400u);  // the pattern is not echoed whole

  auto deep = BoundedRegex::Compile(std::string(100, '(') + "a" + std::string(100, ')'));
  EXPECT_EQ(deep.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(deep.status().message(), HasSubstr("nests parentheses deeper than 32"));

  auto bad = BoundedRegex::Compile("hook_(q|k");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("at offset"));
}

TEST(JsonLimitsTest, DepthIsCountedOutsideStrings) {
  EXPECT_EQ(JsonNestingDepth(R"({"a": [1, {"b": 2}]})"), 3);
  EXPECT_EQ(JsonNestingDepth(R"({"a": "[[[[[[\"[[[["})"), 1);
  EXPECT_EQ(JsonNestingDepth("42"), 0);
  EXPECT_EQ(JsonNestingDepth(std::string(1000, '['), 64), 65);  // stops early
}

TEST(JsonLimitsTest, DeepNestingIsRefusedBeforeParsing) {
  // 400 KB of [[[[...]]]]: serialising it overflowed the worker's stack.
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  auto parsed = ParseJsonBounded(deep, "shard spec");
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(parsed.status().message(), HasSubstr("shard spec: JSON nests deeper than 64"));

  auto ok = ParseJsonBounded(R"({"method": "ablate-heads", "dataset": {"name": "ioi"}})", "spec");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ((*ok)["dataset"]["name"], "ioi");

  auto broken = ParseJsonBounded(R"({"a": )", "spec");
  EXPECT_EQ(broken.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(broken.status().message(), HasSubstr("spec: not valid JSON at byte"));
}

TEST(EchoTest, CutsLongInputAndNamesItsLength) {
  EXPECT_EQ(Echo("job-1"), "\"job-1\"");
  const std::string id(1 << 20, 'x');
  const std::string echoed = Echo(id);
  EXPECT_LT(echoed.size(), 160u);
  EXPECT_THAT(echoed, HasSubstr("(1048576 bytes)"));
  // Never cuts inside a UTF-8 character: "é" is 2 bytes.
  std::string accents;
  for (int i = 0; i < 100; ++i) accents += "\xC3\xA9";
  const std::string cut = Echo(accents, 5);
  EXPECT_EQ(cut.substr(0, 5), "\"\xC3\xA9\xC3\xA9");
}

}  // namespace
}  // namespace lensgrid
