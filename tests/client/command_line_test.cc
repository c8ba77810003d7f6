// Which command lines `lensgrid` hands to lensgrid-local (client/command_line.h).
#include "client/command_line.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lensgrid {
namespace {

using Args = std::vector<std::string>;

TEST(NeedsLibTorchTest, InProcessWorkNeedsIt) {
  EXPECT_TRUE(NeedsLibTorch(Args{"init", "--out", "m"}));
  EXPECT_TRUE(NeedsLibTorch(Args{"train", "--out", "m", "--seed", "1"}));
  EXPECT_TRUE(NeedsLibTorch(Args{"run", "--model", "m", "--prompt", "hi"}));
  EXPECT_TRUE(NeedsLibTorch(Args{"search", "--model", "m", "--dataset", "ioi", "--method",
                                 "ablate-heads", "--in-process"}));
  EXPECT_TRUE(NeedsLibTorch(Args{"search", "--in-process=true", "--model", "m"}));
  // init and train parse their flags there, --help included.
  EXPECT_TRUE(NeedsLibTorch(Args{"init", "--help"}));
  EXPECT_TRUE(NeedsLibTorch(Args{"train", "-h"}));
}

TEST(NeedsLibTorchTest, ClientsAndRemoteWorkDoNot) {
  EXPECT_FALSE(NeedsLibTorch(Args{}));
  EXPECT_FALSE(NeedsLibTorch(Args{"--help"}));
  EXPECT_FALSE(NeedsLibTorch(Args{"jobs", "--coordinator", "h:1"}));
  EXPECT_FALSE(NeedsLibTorch(Args{"workers"}));
  EXPECT_FALSE(NeedsLibTorch(Args{"cancel", "j-1"}));
  EXPECT_FALSE(NeedsLibTorch(Args{"result", "j-1", "--output", "o"}));
  EXPECT_FALSE(NeedsLibTorch(Args{"pull", "gpt2"}));
  EXPECT_FALSE(NeedsLibTorch(Args{"tokenize", "--model", "m", "hello"}));
  EXPECT_FALSE(NeedsLibTorch(Args{"run", "--worker", "h:1", "--tokens", "1,2"}));
  EXPECT_FALSE(NeedsLibTorch(Args{"run", "--worker=h:1", "--tokens", "1,2"}));
  EXPECT_FALSE(NeedsLibTorch(Args{"search", "--model", "m", "--local", "2"}));
  EXPECT_FALSE(NeedsLibTorch(Args{"search", "--model", "m", "--coordinator", "h:1"}));
  EXPECT_FALSE(NeedsLibTorch(Args{"run", "--help"}));
  EXPECT_FALSE(NeedsLibTorch(Args{"search", "--in-process", "--help"}));
  EXPECT_FALSE(NeedsLibTorch(Args{"frobnicate"}));  // the usage error is shown here
  // The command is the first argument only: "init" as a flag's value is not the command.
  EXPECT_FALSE(NeedsLibTorch(Args{"tokenize", "init"}));
}

TEST(LibTorchExecutableTest, BesideThisOne) {
  EXPECT_EQ(LibTorchExecutableBeside("/usr/local/bin/lensgrid"), "/usr/local/bin/lensgrid-local");
  EXPECT_EQ(LibTorchExecutableBeside("lensgrid"), "./lensgrid-local");
}

TEST(CommandUsageTest, ListsEveryCommand) {
  const std::string usage = CommandUsage();
  for (const char* command : {"pull", "run", "search", "jobs", "workers", "cancel", "result",
                              "tokenize", "init", "train"}) {
    EXPECT_THAT(usage, ::testing::HasSubstr(std::string("  ") + command + " ")) << command;
  }
}

}  // namespace
}  // namespace lensgrid
