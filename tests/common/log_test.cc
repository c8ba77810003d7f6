// Log lines: text for people, one JSON object per line for clusters.
#include "common/log.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace lensgrid {
namespace {

constexpr int64_t kNoon = 1796212800123;  // 2026-12-02T12:00:00.123Z

TEST(LogTest, TextLine) {
  EXPECT_EQ(
      FormatLogLine(LogFormat::kText, "lensgrid-coordinator", LogLevel::kInfo, "shard re-queued",
                    {{"job", "j-1"}, {"lease", ""}, {"shard", "4"}}, kNoon),
      "lensgrid-coordinator: shard re-queued [job=j-1 shard=4]");
  EXPECT_EQ(FormatLogLine(LogFormat::kText, "w", LogLevel::kError, "boom", {}, kNoon),
            "w: error: boom");
}

TEST(LogTest, JsonLineParsesWithEveryField) {
  const std::string line =
      FormatLogLine(LogFormat::kJson, "lensgrid-coordinator", LogLevel::kWarning,
                    "a \"quoted\"\nmessage \xff", {{"job", "j-1"}, {"worker", ""}}, kNoon);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  nlohmann::json j = nlohmann::json::parse(line);
  EXPECT_EQ(j["ts"], "2026-12-02T12:00:00.123Z");
  EXPECT_EQ(j["level"], "warning");
  EXPECT_EQ(j["component"], "lensgrid-coordinator");
  EXPECT_EQ(j["job"], "j-1");
  EXPECT_FALSE(j.contains("worker"));
  EXPECT_EQ(j["msg"].get<std::string>().rfind("a \"quoted\"\nmessage ", 0), 0u);
}

TEST(LogTest, FormatFlag) {
  EXPECT_TRUE(SetLogFormat("json").ok());
  EXPECT_EQ(GetLogFormat(), LogFormat::kJson);
  absl::Status bad = SetLogFormat("yaml");
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("--log-format"), std::string::npos);
  EXPECT_EQ(GetLogFormat(), LogFormat::kJson);
  EXPECT_TRUE(SetLogFormat("text").ok());
}

}  // namespace
}  // namespace lensgrid
