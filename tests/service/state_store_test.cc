// State store on a temp dir: what is written comes back after reopening, and a
// scheduler restored from it resumes without redoing completed shards.
#include "service/state_store.h"

#include <filesystem>

#include "gtest/gtest.h"
#include "service/scheduler.h"
#include "tests/service/test_jobs.h"

namespace lensgrid::service {
namespace {

std::string TempDir(const std::string& name) {
  auto dir =
      std::filesystem::temp_directory_path() /
      (name + "-" +
       std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "-" +
       std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  return dir.string();
}

TEST(StateStoreTest, ArraysRoundTripAndCorruptionIsDetected) {
  std::vector<Array> arrays = {{"baseline", {2}, {1.5f, -2}},
                               {"delta", {1, 3}, {1, 2, 3}}};
  auto back = DecodeArrays(EncodeArrays(arrays));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ((*back)[1].values, arrays[1].values);
  EXPECT_EQ((*back)[1].shape, arrays[1].shape);
  std::string bytes = EncodeArrays(arrays);
  bytes.pop_back();
  EXPECT_EQ(DecodeArrays(bytes).status().code(), absl::StatusCode::kDataLoss);
}

TEST(StateStoreTest, ReopenedStoreResumesTheJobWithoutRedoingShards) {
  const std::string dir = TempDir("lensgrid-store");
  FakeClock clock;
  std::string job;
  int done_before = 0;
  {
    auto store = StateStore::Open(dir);
    ASSERT_TRUE(store.ok()) << store.status();
    Scheduler s(&clock, {}, store->get());
    job = s.Submit(testing::SmallJob(2)).value();
    v1::RegisterRequest r;
    r.set_model_id("m");
    r.set_weights_sha256("sha");
    const std::string w = s.RegisterWorker(r).value();
    for (int i = 0; i < 5; ++i) {  // 5 of 8 shards done, a sixth leased
      auto l = s.Lease(w).value();
      ASSERT_TRUE(
          *s.Complete(w, l->lease_id(), testing::ResultFor(l->spec_json())));
      ++done_before;
    }
    ASSERT_TRUE(s.Lease(w).value().has_value());
  }
  auto store = StateStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  auto jobs = (*store)->Load();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ((*jobs)[0].results.size(), 5u);
  EXPECT_EQ((*jobs)[0].state, v1::JOB_RUNNING);
  const size_t events_before = (*jobs)[0].events.size();

  Scheduler s(&clock, {}, store->get());
  ASSERT_TRUE(s.Restore(std::move((*jobs)[0])).ok());
  EXPECT_EQ(s.GetJob(job)->shards_done(), 5);
  v1::RegisterRequest r;
  r.set_model_id("m");
  r.set_weights_sha256("sha");
  const std::string w = s.RegisterWorker(r).value();
  int recomputed = 0;
  while (auto l = s.Lease(w).value()) {
    ASSERT_TRUE(
        *s.Complete(w, l->lease_id(), testing::ResultFor(l->spec_json())));
    ++recomputed;
  }
  EXPECT_EQ(recomputed, 3);
  EXPECT_EQ(s.GetJob(job)->state(), v1::JOB_SUCCEEDED);
  auto result = s.GetResult(job);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->tensors.back().values, (std::vector<float>{5, 6, 7, 8}));
  bool final = false;
  auto events = *s.EventsAfter(job, 0, &final);
  EXPECT_GT(events.size(), events_before);
  for (size_t i = 0; i < events.size(); ++i)
    EXPECT_EQ(events[i].seq(), static_cast<int64_t>(i) + 1);

  // A finished job comes back finished, with its result.
  auto again = (*store)->Load();
  ASSERT_TRUE(again.ok());
  Scheduler s2(&clock, {}, nullptr);
  ASSERT_TRUE(s2.Restore(std::move((*again)[0])).ok());
  EXPECT_EQ(s2.GetJob(job)->state(), v1::JOB_SUCCEEDED);
  EXPECT_TRUE(s2.GetResult(job).ok());
  std::filesystem::remove_all(dir);
}

TEST(StateStoreTest, UnopenableDirIsUnavailable) {
  EXPECT_EQ(StateStore::Open("/proc/no/such/dir").status().code(),
            absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace lensgrid::service
