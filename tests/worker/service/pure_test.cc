// Executor and hook-shape arithmetic: pure pieces of the worker.
#include <atomic>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/executor.h"
#include "worker/hook_shapes.h"

namespace lensgrid {
namespace {

TEST(ExecutorTest, RunsEveryAcceptedTaskAndRefusesWhenFull) {
  std::atomic<int> ran{0};
  absl::Notification release;
  {
    Executor executor({.threads = 1, .max_pending = 2});
    ASSERT_TRUE(executor
                    .Submit([&] {
                      release.WaitForNotification();
                      ++ran;
                    })
                    .ok());
    ASSERT_TRUE(executor.Submit([&] { ++ran; }).ok());
    absl::Status full = executor.Submit([&] { ++ran; });
    EXPECT_EQ(full.code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(full.message(), ::testing::HasSubstr("--max-queue 2"));
    release.Notify();
  }  // the destructor runs what was accepted
  EXPECT_EQ(ran, 2);
}

TEST(ExecutorTest, SlotsFreeAfterTasksFinish) {
  Executor executor({.threads = 2, .max_pending = 1});
  for (int i = 0; i < 50; ++i) {
    absl::Notification done;
    ASSERT_TRUE(executor.Submit([&] { done.Notify(); }).ok());
    done.WaitForNotification();
    while (executor.pending() > 0) {
    }
  }
}

TEST(ExecutorTest, RefusesAfterShutdown) {
  Executor executor({});
  executor.Shutdown();
  EXPECT_EQ(executor.Submit([] {}).code(), absl::StatusCode::kUnavailable);
}

TEST(HookShapesTest, InfersAxesFromTwoProbes) {
  HookShape pattern = InferHookShape({1, 4, 2, 2}, {2, 4, 3, 3});
  EXPECT_EQ(pattern.shape, (std::vector<int64_t>{-1, 4, -1, -1}));
  EXPECT_EQ(pattern.axes,
            (std::vector<std::string>{"batch", "", "query_pos", "key_pos"}));
  HookShape z = InferHookShape({1, 2, 2, 3},
                               {2, 3, 2, 3});  // 2 heads: not mistaken for pos
  EXPECT_EQ(z.axes, (std::vector<std::string>{"batch", "pos", "", ""}));
  EXPECT_EQ(*PosAxis(pattern), 2);
  EXPECT_EQ(ConcreteShape(pattern, 8, 10, 3, false),
            (std::vector<int64_t>{8, 4, 3, 10}));
  EXPECT_EQ(ConcreteShape(z, 1, 10, 10, true),
            (std::vector<int64_t>{10, 2, 3}));
}

TEST(HookShapesTest, NamesToAxesAndLayers) {
  EXPECT_EQ(HeadAxis("blocks.3.attn.hook_pattern"), 1);
  EXPECT_EQ(HeadAxis("blocks.3.attn.hook_z"), 2);
  EXPECT_EQ(HeadAxis("blocks.3.hook_resid_pre"), std::nullopt);
  EXPECT_EQ(HookLayer("blocks.11.mlp.hook_post"), 11);
  EXPECT_EQ(HookLayer("ln_final.hook_scale"), std::nullopt);
  EXPECT_EQ(SliceLength(-2, std::nullopt, 5), 2);
  EXPECT_EQ(SliceLength(4, 2, 5), 0);
  EXPECT_EQ(SliceLength(std::nullopt, 99, 5), 5);
}

}  // namespace
}  // namespace lensgrid
