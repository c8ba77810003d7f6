// Executor and hook-shape arithmetic: pure pieces of the worker.
#include <atomic>
#include <chrono>
#include <thread>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/executor.h"
#include "worker/hook_shapes.h"
#include "worker/reply_budget.h"

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

TEST(ExecutorTest, StallShowsOnlyWhileATaskRunsWithoutProgress) {
  Executor executor({.threads = 1, .max_pending = 4});
  EXPECT_EQ(executor.StalledMs(), 0);  // idle is never stalled
  absl::Notification started, release;
  ASSERT_TRUE(executor
                  .Submit([&] {
                    started.Notify();
                    release.WaitForNotification();
                  })
                  .ok());
  started.WaitForNotification();
  // The task makes no progress: the stall grows (deadline only against hangs).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (executor.StalledMs() < 20 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_GE(executor.StalledMs(), 20);
  release.Notify();
  while (executor.pending() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(executor.StalledMs(), 0);  // nothing runs any more
}

TEST(ReplyBudgetTest, HoldsUntilReleasedAndRefusesOverTheBudget) {
  ReplyBudget budget(100);
  auto a = budget.Reserve(60, "A");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(budget.held_bytes(), 60);
  auto b = budget.Reserve(50, "B");
  EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(b.status().message(), ::testing::HasSubstr("--max-reply-memory (100)"));
  EXPECT_THAT(b.status().message(), ::testing::HasSubstr("already hold 60"));
  {
    ReplyBudget::Hold copy = *a;  // copies share one reservation
    a->reset();
    EXPECT_EQ(budget.held_bytes(), 60);
  }
  EXPECT_EQ(budget.held_bytes(), 0);
  EXPECT_TRUE(budget.Reserve(100, "C").ok());  // released at once: a temporary
  EXPECT_EQ(budget.held_bytes(), 0);
}

TEST(HookShapesTest, InfersAxesFromTwoProbes) {
  HookShape pattern = InferHookShape({1, 4, 2, 2}, {2, 4, 3, 3});
  EXPECT_EQ(pattern.shape, (std::vector<int64_t>{-1, 4, -1, -1}));
  EXPECT_EQ(pattern.axes, (std::vector<std::string>{"batch", "", "query_pos", "key_pos"}));
  HookShape z = InferHookShape({1, 2, 2, 3}, {2, 3, 2, 3});  // 2 heads: not mistaken for pos
  EXPECT_EQ(z.axes, (std::vector<std::string>{"batch", "pos", "", ""}));
  EXPECT_EQ(*PosAxis(pattern), 2);
  EXPECT_EQ(ConcreteShape(pattern, 8, 10, 3, false), (std::vector<int64_t>{8, 4, 3, 10}));
  EXPECT_EQ(ConcreteShape(z, 1, 10, 10, true), (std::vector<int64_t>{10, 2, 3}));
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
