// Scheduler on a fake clock: leases, expiry, retries, duplicates, failures,
// model matching, cancel, events. No network.
#include "service/scheduler.h"

#include <algorithm>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/echo.h"
#include "gtest/gtest.h"
#include "tests/service/test_jobs.h"

namespace lensgrid::service {
namespace {

const Caller kAnon = Caller::Anonymous();

using testing::ResultFor;
using testing::SmallJob;

class SchedulerTest : public ::testing::Test {
 protected:
  SchedulerTest() : scheduler_(&clock_, Options(), nullptr) {}
  static SchedulerOptions Options() {
    SchedulerOptions o;
    o.initial_lease_ms = 10000;
    o.min_lease_ms = 1000;
    o.backoff_base_ms = 100;
    o.worker_timeout_ms = 60000;
    o.max_attempts = 3;
    return o;
  }
  std::string Worker(const std::string& model = "m", const std::string& sha = "sha") {
    v1::RegisterRequest r;
    r.set_model_id(model);
    r.set_weights_sha256(sha);
    r.set_name("w");
    return scheduler_.RegisterWorker(r).value();
  }
  std::optional<v1::ShardLease> Lease(const std::string& w) {
    auto l = scheduler_.Lease(w);
    EXPECT_TRUE(l.ok()) << l.status();
    return l.ok() ? *l : std::nullopt;
  }
  v1::JobState State(const std::string& job) { return scheduler_.GetJob(kAnon, job)->state(); }
  std::vector<v1::JobEvent::Kind> Kinds(const std::string& job) {
    bool final = false;
    std::vector<v1::JobEvent::Kind> kinds;
    for (const auto& e : *scheduler_.EventsAfter(kAnon, job, 0, &final)) kinds.push_back(e.kind());
    return kinds;
  }

  FakeClock clock_;
  Scheduler scheduler_;
};

TEST_F(SchedulerTest, RunsAJobToItsMergedResult) {
  const std::string job = scheduler_.Submit(kAnon, SmallJob()).value();
  const std::string w = Worker();
  int n = 0;
  while (auto lease = Lease(w)) {
    ASSERT_TRUE(*scheduler_.Complete(w, lease->lease_id(), ResultFor(lease->shard())));
    ++n;
  }
  EXPECT_EQ(n, 8);  // 2 prompts x 4 heads
  EXPECT_EQ(State(job), v1::JOB_SUCCEEDED);
  auto result = scheduler_.GetResult(kAnon, job);
  ASSERT_TRUE(result.ok()) << result.status();
  const Array& mean = result->tensors.back();
  EXPECT_EQ(mean.name, "delta");
  EXPECT_EQ(mean.values, (std::vector<float>{5, 6, 7, 8}));  // mean of 10p + c over p = 0, 1
  EXPECT_EQ(Kinds(job).back(), v1::JobEvent::JOB_SUCCEEDED);
}

// Prompt-range affinity: a worker that ran a shard of a prompt range gets
// that range's next shards (its base run is cached there); another worker
// starts on a range nobody holds.
TEST_F(SchedulerTest, AffinityLeasesARangesShardsToTheWorkerThatRanOne) {
  const std::string job = scheduler_.Submit(kAnon, SmallJob(3)).value();  // 3 ranges x 4 heads
  const std::string a = Worker(), b = Worker();
  std::map<std::string, std::vector<int64_t>> ranges;  // worker -> prompt_begin of each lease
  for (int round = 0; round < 4; ++round) {
    for (const std::string& w : {a, b}) {
      std::optional<v1::ShardLease> lease = Lease(w);
      ASSERT_TRUE(lease.has_value());
      ranges[w].push_back(lease->shard().prompt_begin());
      ASSERT_TRUE(*scheduler_.Complete(w, lease->lease_id(), ResultFor(lease->shard())));
    }
  }
  // Each ran one range whole, and not the other's.
  EXPECT_EQ(std::set<int64_t>(ranges[a].begin(), ranges[a].end()).size(), 1u);
  EXPECT_EQ(std::set<int64_t>(ranges[b].begin(), ranges[b].end()).size(), 1u);
  EXPECT_NE(ranges[a].front(), ranges[b].front());
  // The third range: whoever asks first starts it, and keeps it.
  std::optional<v1::ShardLease> first = Lease(b);
  ASSERT_TRUE(first.has_value());
  const int64_t third = first->shard().prompt_begin();
  EXPECT_NE(third, ranges[a].front());
  EXPECT_NE(third, ranges[b].front());
  std::optional<v1::ShardLease> next = Lease(b);
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->shard().prompt_begin(), third);
  for (const auto* l : {&*first, &*next}) {
    ASSERT_TRUE(*scheduler_.Complete(b, l->lease_id(), ResultFor(l->shard())));
  }
  // The other worker asking is not kept waiting: it shares the range.
  while (auto l = Lease(a)) {
    EXPECT_EQ(l->shard().prompt_begin(), third);
    ASSERT_TRUE(*scheduler_.Complete(a, l->lease_id(), ResultFor(l->shard())));
  }
  EXPECT_EQ(State(job), v1::JOB_SUCCEEDED);
  auto result = scheduler_.GetResult(kAnon, job);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->tensors.back().values, (std::vector<float>{10, 11, 12, 13}));  // p = 0, 1, 2
}

// No worker waits while a shard is ready: with one prompt range held by A,
// B still gets its shards.
TEST_F(SchedulerTest, AffinityStarvesNoWorker) {
  scheduler_.Submit(kAnon, SmallJob(1)).value();  // 1 range x 4 heads
  const std::string a = Worker(), b = Worker();
  std::optional<v1::ShardLease> la = Lease(a);
  ASSERT_TRUE(la.has_value());
  std::optional<v1::ShardLease> lb = Lease(b);
  ASSERT_TRUE(lb.has_value());
  EXPECT_NE(la->shard_id(), lb->shard_id());
  EXPECT_TRUE(Lease(a).has_value());
  EXPECT_TRUE(Lease(b).has_value());
  EXPECT_FALSE(Lease(a).has_value());  // all 4 leased
}

// A lost worker's ranges go to the workers left: its leased shard is
// re-queued as before, and its range's shards run elsewhere.
TEST_F(SchedulerTest, AffinityALostWorkersRangesGoToOthers) {
  const std::string job = scheduler_.Submit(kAnon, SmallJob(2)).value();  // 2 ranges x 4 heads
  const std::string a = Worker(), b = Worker();
  std::optional<v1::ShardLease> la = Lease(a);
  ASSERT_TRUE(la.has_value());
  const int64_t range_a = la->shard().prompt_begin();
  ASSERT_TRUE(*scheduler_.Complete(a, la->lease_id(), ResultFor(la->shard())));
  std::optional<v1::ShardLease> held = Lease(a);  // A holds this one when it goes silent
  ASSERT_TRUE(held.has_value());
  EXPECT_EQ(held->shard().prompt_begin(), range_a);
  std::optional<v1::ShardLease> lb = Lease(b);
  ASSERT_TRUE(lb.has_value());
  EXPECT_NE(lb->shard().prompt_begin(), range_a);
  ASSERT_TRUE(*scheduler_.Complete(b, lb->lease_id(), ResultFor(lb->shard())));
  // A goes silent; B keeps talking.
  for (int i = 0; i < 7; ++i) {
    clock_.Advance(9000);
    ASSERT_TRUE(scheduler_.Heartbeat(b, {}).ok());
    scheduler_.Tick();
  }
  const std::vector<v1::JobEvent::Kind> kinds = Kinds(job);
  ASSERT_NE(std::find(kinds.begin(), kinds.end(), v1::JobEvent::WORKER_LOST), kinds.end());
  EXPECT_EQ(scheduler_.Lease(a).status().code(), absl::StatusCode::kNotFound);  // lost
  int on_range_a = 0;
  while (auto l = Lease(b)) {
    on_range_a += l->shard().prompt_begin() == range_a ? 1 : 0;
    ASSERT_TRUE(*scheduler_.Complete(b, l->lease_id(), ResultFor(l->shard())));
  }
  EXPECT_EQ(on_range_a, 3);  // the one A held and the two it never leased
  EXPECT_EQ(State(job), v1::JOB_SUCCEEDED);
  auto result = scheduler_.GetResult(kAnon, job);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->tensors.back().values, (std::vector<float>{5, 6, 7, 8}));
}

// Without affinity, shards go out in plan order, as they always did.
TEST(SchedulerAffinityOffTest, LeasesInPlanOrder) {
  FakeClock clock;
  SchedulerOptions o;
  o.prompt_affinity = false;
  Scheduler s(&clock, o, nullptr);
  s.Submit(kAnon, SmallJob(2)).value();
  v1::RegisterRequest r;
  r.set_model_id("m");
  r.set_weights_sha256("sha");
  const std::string w = s.RegisterWorker(r).value();
  for (int64_t i = 0; i < 8; ++i) {
    std::optional<v1::ShardLease> lease = s.Lease(w).value();
    ASSERT_TRUE(lease.has_value());
    EXPECT_EQ(lease->shard_id(), i);
  }
}

// The signal to scale workers on: shards waiting for a worker, backing off
// ones included, leased ones not.
TEST_F(SchedulerTest, PendingShardsCountWhatWaitsForAWorker) {
  EXPECT_EQ(scheduler_.Counters().pending_shards, 0);
  scheduler_.Submit(kAnon, SmallJob(1)).value();  // 4 shards
  EXPECT_EQ(scheduler_.Counters().pending_shards, 4);
  const std::string w = Worker();
  std::optional<v1::ShardLease> lease = Lease(w);
  ASSERT_TRUE(lease.has_value());
  EXPECT_EQ(scheduler_.Counters().pending_shards, 3);
  ASSERT_TRUE(scheduler_.Fail(w, lease->lease_id(), absl::UnavailableError("oom")).ok());
  EXPECT_EQ(scheduler_.Counters().pending_shards, 4);  // backing off: still waiting
  while (auto l = Lease(w))
    ASSERT_TRUE(*scheduler_.Complete(w, l->lease_id(), ResultFor(l->shard())));
  clock_.Advance(1000);
  scheduler_.Tick();
  while (auto l = Lease(w))
    ASSERT_TRUE(*scheduler_.Complete(w, l->lease_id(), ResultFor(l->shard())));
  EXPECT_EQ(scheduler_.Counters().pending_shards, 0);
}

TEST_F(SchedulerTest, OnlyMatchingWorkersGetShards) {
  scheduler_.Submit(kAnon, SmallJob()).value();
  EXPECT_FALSE(Lease(Worker("other")).has_value());
  EXPECT_FALSE(Lease(Worker("m", "different-sha")).has_value());
  EXPECT_TRUE(Lease(Worker("m", "sha")).has_value());
}

TEST_F(SchedulerTest, UnknownWorkerMustRegisterAgain) {
  EXPECT_EQ(scheduler_.Lease("nobody").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(scheduler_.Heartbeat("nobody", {}).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SchedulerTest, ExpiredLeaseIsRequeuedAfterBackoffAndFirstCompletionWins) {
  const std::string job = scheduler_.Submit(kAnon, SmallJob(1)).value();
  const std::string a = Worker(), b = Worker();
  std::vector<v1::ShardLease> held;
  while (auto l = Lease(a)) held.push_back(*l);
  ASSERT_EQ(held.size(), 4u);
  clock_.Advance(10001);
  scheduler_.Tick();                   // every lease expired
  EXPECT_FALSE(Lease(b).has_value());  // still backing off
  clock_.Advance(100);
  scheduler_.Tick();
  auto again = Lease(b);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->shard_id(), held[0].shard_id());
  EXPECT_EQ(again->attempt(), 2);
  // The late first attempt completes first: it wins; the second is dropped.
  EXPECT_TRUE(*scheduler_.Complete(a, held[0].lease_id(), ResultFor(held[0].shard())));
  EXPECT_FALSE(*scheduler_.Complete(b, again->lease_id(), ResultFor(again->shard())));
  // And b is told to drop it.
  EXPECT_EQ(scheduler_.Heartbeat(b, {again->lease_id()})->size(), 1u);
  EXPECT_EQ(scheduler_.GetJob(kAnon, job)->shards_done(), 1);
}

TEST_F(SchedulerTest, HeartbeatsExtendLeases) {
  scheduler_.Submit(kAnon, SmallJob(1)).value();
  const std::string w = Worker();
  auto lease = Lease(w);
  for (int i = 0; i < 5; ++i) {
    clock_.Advance(6000);
    EXPECT_TRUE(scheduler_.Heartbeat(w, {lease->lease_id()})->empty());
    scheduler_.Tick();
  }
  EXPECT_TRUE(*scheduler_.Complete(w, lease->lease_id(), ResultFor(lease->shard())));
}

TEST_F(SchedulerTest, LeaseLengthFollowsObservedShardTime) {
  scheduler_.Submit(kAnon, SmallJob(2)).value();
  const std::string w = Worker();
  auto first = Lease(w);
  EXPECT_EQ(first->lease_ms(), 10000);  // nothing observed yet
  clock_.Advance(2000);
  ASSERT_TRUE(*scheduler_.Complete(w, first->lease_id(), ResultFor(first->shard())));
  EXPECT_EQ(Lease(w)->lease_ms(), 8000);  // 4 x 2 s
}

TEST_F(SchedulerTest, MalformedResultIsRetriedOnAnotherWorker) {
  const std::string job = scheduler_.Submit(kAnon, SmallJob(1)).value();
  const std::string bad = Worker(), good = Worker();
  auto lease = Lease(bad);
  std::vector<Array> wrong = ResultFor(lease->shard());
  wrong.back().shape = {7};
  auto r = scheduler_.Complete(bad, lease->lease_id(), wrong);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  clock_.Advance(1000);
  scheduler_.Tick();
  // The bad worker gets other shards first; the failed one goes to `good`.
  while (auto l = Lease(bad)) EXPECT_NE(l->shard_id(), lease->shard_id());
  auto retry = Lease(good);
  ASSERT_TRUE(retry.has_value());
  EXPECT_EQ(retry->shard_id(), lease->shard_id());
  auto kinds = Kinds(job);
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), v1::JobEvent::SHARD_RETRIED), kinds.end());
}

TEST_F(SchedulerTest, TooManyFailuresFailTheJob) {
  v1::JobSpec spec = SmallJob(1);
  spec.set_components_per_shard(4);  // one shard
  const std::string job = scheduler_.Submit(kAnon, spec).value();
  const std::string w = Worker();
  for (int i = 0; i < 3; ++i) {
    clock_.Advance(10000);
    scheduler_.Tick();
    auto lease = Lease(w);
    ASSERT_TRUE(lease.has_value());
    ASSERT_TRUE(scheduler_.Fail(w, lease->lease_id(), absl::UnavailableError("busy")).ok());
  }
  auto status = scheduler_.GetJob(kAnon, job);
  EXPECT_EQ(status->state(), v1::JOB_FAILED);
  EXPECT_NE(status->error().find("failed 3 times"), std::string::npos) << status->error();
}

TEST_F(SchedulerTest, InvalidArgumentFromAWorkerFailsTheJobWithItsMessage) {
  for (auto code : {absl::StatusCode::kInvalidArgument, absl::StatusCode::kFailedPrecondition}) {
    const std::string job = scheduler_.Submit(kAnon, SmallJob(1)).value();
    const std::string w = Worker();
    auto lease = Lease(w);
    ASSERT_TRUE(
        scheduler_.Fail(w, lease->lease_id(), absl::Status(code, "token id 99999 >= d_vocab"))
            .ok());
    auto status = scheduler_.GetJob(kAnon, job);
    EXPECT_EQ(status->state(), v1::JOB_FAILED);
    EXPECT_EQ(status->error_code(), static_cast<int>(code));
    EXPECT_NE(status->error().find("token id 99999"), std::string::npos);
    EXPECT_FALSE(Lease(w).has_value());
  }
}

TEST_F(SchedulerTest, CancelStopsLeasesAndTellsWorkers) {
  const std::string job = scheduler_.Submit(kAnon, SmallJob(2)).value();
  const std::string w = Worker();
  auto lease = Lease(w);
  EXPECT_EQ(scheduler_.Cancel(kAnon, job)->state(), v1::JOB_CANCELLED);
  EXPECT_FALSE(Lease(w).has_value());
  EXPECT_EQ(*scheduler_.Heartbeat(w, {lease->lease_id()}),
            std::vector<std::string>{lease->lease_id()});
  EXPECT_FALSE(*scheduler_.Complete(w, lease->lease_id(), ResultFor(lease->shard())));
  EXPECT_EQ(scheduler_.GetResult(kAnon, job).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(scheduler_.Cancel(kAnon, "no-such-job").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SchedulerTest, LostWorkerLeasesAreRequeued) {
  const std::string job = scheduler_.Submit(kAnon, SmallJob(1)).value();
  const std::string dead = Worker();
  auto lease = Lease(dead);
  clock_.Advance(30000);
  const std::string alive = Worker();
  clock_.Advance(30001);
  ASSERT_TRUE(scheduler_.Heartbeat(alive, {}).ok());
  scheduler_.Tick();
  EXPECT_EQ(scheduler_.Lease(dead).status().code(), absl::StatusCode::kNotFound);
  auto kinds = Kinds(job);
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), v1::JobEvent::WORKER_LOST), kinds.end());
}

TEST_F(SchedulerTest, EventsAreNumberedAndResumable) {
  const std::string job = scheduler_.Submit(kAnon, SmallJob(1)).value();
  const std::string w = Worker();
  while (auto l = Lease(w)) scheduler_.Complete(w, l->lease_id(), ResultFor(l->shard())).value();
  bool final = false;
  auto all = *scheduler_.EventsAfter(kAnon, job, 0, &final);
  EXPECT_TRUE(final);
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i].seq(), static_cast<int64_t>(i) + 1);
  auto rest = *scheduler_.EventsAfter(kAnon, job, 3, &final);
  ASSERT_EQ(rest.size(), all.size() - 3);
  EXPECT_EQ(rest.front().seq(), 4);
  EXPECT_EQ(all.back().shards_done(), 4);
}

// A journal that fails on demand ("disk full") and checks what a store
// needs: each job's events arrive as consecutive seqs, never with a gap.
class FlakyJournal : public Journal {
 public:
  absl::Status Write(const JobWrite& w) override {
    if (full) return absl::ResourceExhaustedError("database or disk is full");
    std::vector<int64_t>& seqs = events[w.job_id];
    for (const v1::JobEvent* e : w.events) {
      EXPECT_EQ(e->seq(), static_cast<int64_t>(seqs.size()) + 1) << w.job_id;
      seqs.push_back(e->seq());
      kinds.push_back(e->kind());
    }
    for (const auto& [shard, tensors] : w.results) results[w.job_id].insert(shard);
    if (w.set_state) states[w.job_id] = w.state;
    return absl::OkStatus();
  }
  bool full = false;
  std::map<std::string, std::vector<int64_t>> events;
  std::map<std::string, std::set<int64_t>> results;
  std::map<std::string, v1::JobState> states;
  std::vector<v1::JobEvent::Kind> kinds;
};

TEST(SchedulerStoreTest, AFailingStorePausesTheJobAndItResumesWithoutRecomputing) {
  FakeClock clock;
  FlakyJournal journal;
  SchedulerOptions o;
  o.store_retry_ms = 1000;
  Scheduler s(&clock, o, &journal);
  const std::string job = s.Submit(kAnon, SmallJob(2)).value();  // 8 shards
  v1::RegisterRequest r;
  r.set_model_id("m");
  r.set_weights_sha256("sha");
  const std::string w = s.RegisterWorker(r).value();
  auto a = s.Lease(w).value();
  auto b = s.Lease(w).value();
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(*s.Complete(w, a->lease_id(), ResultFor(a->shard())));

  journal.full = true;
  std::string note;
  // The result is kept (not computed again) and the worker is told so.
  ASSERT_TRUE(*s.Complete(w, b->lease_id(), ResultFor(b->shard()), &note));
  EXPECT_NE(note.find("database or disk is full"), std::string::npos) << note;
  v1::JobStatus status = s.GetJob(kAnon, job).value();
  EXPECT_NE(status.store_error().find("database or disk is full"), std::string::npos);
  EXPECT_EQ(status.state(), v1::JOB_RUNNING);
  EXPECT_EQ(status.shards_done(), 2);
  // Paused: no new leases, however long the store stays full; no failures.
  for (int i = 0; i < 5; ++i) {
    clock.Advance(1500);
    (void)s.Heartbeat(w, {});
    s.Tick();
    EXPECT_FALSE(s.Lease(w).value().has_value());
  }
  EXPECT_EQ(s.Counters().shards_retried, 0);
  EXPECT_EQ(s.Submit(kAnon, SmallJob(1)).status().code(), absl::StatusCode::kUnavailable);

  journal.full = false;
  clock.Advance(1500);
  s.Tick();
  status = s.GetJob(kAnon, job).value();
  EXPECT_EQ(status.store_error(), "");
  EXPECT_EQ(journal.results[job], (std::set<int64_t>{a->shard_id(), b->shard_id()}));
  int leased = 0;
  while (auto l = s.Lease(w).value()) {
    ASSERT_TRUE(*s.Complete(w, l->lease_id(), ResultFor(l->shard())));
    ++leased;
  }
  EXPECT_EQ(leased, 6);  // the 2 done before the fault are not run again
  EXPECT_EQ(s.GetJob(kAnon, job)->state(), v1::JOB_SUCCEEDED);
  EXPECT_EQ(journal.states[job], v1::JOB_SUCCEEDED);
  EXPECT_EQ(journal.results[job].size(), 8u);
  bool final = false;
  EXPECT_EQ(static_cast<size_t>(s.EventsAfter(kAnon, job, 0, &final)->size()),
            journal.events[job].size());  // every event stored, no gap
  EXPECT_NE(std::find(journal.kinds.begin(), journal.kinds.end(), v1::JobEvent::STORE_FAILED),
            journal.kinds.end());
  EXPECT_NE(std::find(journal.kinds.begin(), journal.kinds.end(), v1::JobEvent::STORE_RECOVERED),
            journal.kinds.end());
}

TEST_F(SchedulerTest, OverflowingJobsAreRefusedNotPlanned) {
  v1::JobSpec spec = SmallJob(1);
  spec.set_n_layers(int64_t{1} << 62);
  spec.set_n_heads(4);
  EXPECT_EQ(scheduler_.Submit(kAnon, spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec.set_n_layers(int64_t{1} << 32);
  spec.set_n_heads(int64_t{1} << 31);
  EXPECT_EQ(scheduler_.Submit(kAnon, spec).status().code(), absl::StatusCode::kInvalidArgument);
  std::string next;
  EXPECT_TRUE(scheduler_.ListJobs(kAnon, {}, &next)->empty());
  // The scheduler still serves.
  EXPECT_TRUE(scheduler_.Submit(kAnon, SmallJob(1)).ok());
}

TEST_F(SchedulerTest, ListingsArePagedAndBounded) {
  std::set<std::string> ids;
  for (int i = 0; i < 25; ++i) {
    v1::JobSpec spec = SmallJob(1);
    spec.set_client_json(std::string(60000, 'j'));  // near the 64 KiB cap
    ids.insert(scheduler_.Submit(kAnon, spec).value());
  }
  std::set<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    std::string next;
    auto page = scheduler_.ListJobs(kAnon, {10, token}, &next);
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_LE(page->size(), 10u);
    for (const auto& j : *page) EXPECT_TRUE(seen.insert(j.job_id()).second);
    token = next;
    ++pages;
  } while (!token.empty());
  EXPECT_EQ(seen, ids);
  EXPECT_EQ(pages, 3);
  // A page stays within its byte budget whatever page_size asks for.
  std::string next;
  auto big = scheduler_.ListJobs(kAnon, {1000, ""}, &next);
  ASSERT_TRUE(big.ok());
  size_t bytes = 0;
  for (const auto& j : *big) bytes += j.ByteSizeLong();
  EXPECT_LE(bytes, size_t{3} << 20);
  EXPECT_EQ(scheduler_.ListJobs(kAnon, {-1, ""}, &next).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(scheduler_.ListJobs(kAnon, {0, std::string(100000, 't')}, &next).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SchedulerWorkersTest, LostWorkersAreForgottenAndRegistrationIsBounded) {
  FakeClock clock;
  SchedulerOptions o;
  o.worker_timeout_ms = 1000;
  o.forget_worker_ms = 5000;
  o.max_workers = 3;
  Scheduler s(&clock, o, nullptr);
  v1::RegisterRequest r;
  r.set_model_id("m");
  r.set_weights_sha256("sha");
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(s.RegisterWorker(r).ok());
  EXPECT_EQ(s.RegisterWorker(r).status().code(), absl::StatusCode::kResourceExhausted);
  clock.Advance(2000);
  s.Tick();  // all lost, still listed
  std::string next;
  ASSERT_EQ(s.ListWorkers({}, &next)->size(), 3u);
  EXPECT_FALSE(s.ListWorkers({}, &next)->front().alive());
  ASSERT_TRUE(s.RegisterWorker(r).ok());  // room made from a lost one
  clock.Advance(4000);
  s.Tick();  // the first ones are forgotten; the new one is lost, listed
  EXPECT_EQ(s.ListWorkers({}, &next)->size(), 1u);
  r.set_name(std::string(1 << 20, 'n'));
  absl::Status big = s.RegisterWorker(r).status();
  EXPECT_EQ(big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(big.message().size(), 300u);
}

TEST_F(SchedulerTest, ErrorsQuoteClientInputCut) {
  const std::string id(1 << 20, 'x');
  for (const absl::Status& s :
       {scheduler_.GetJob(kAnon, id).status(), scheduler_.Cancel(kAnon, id).status(),
        scheduler_.GetResult(kAnon, id).status(), scheduler_.Lease(id).status(),
        scheduler_.Complete(Worker(), id, {}).status()}) {
    EXPECT_FALSE(s.ok());
    EXPECT_LT(s.message().size(), 300u) << s.message().substr(0, 100);
  }
}

// A job that names a dataset and no model shape or weights: what a client
// without model files submits.
v1::JobSpec DatasetJob(const std::string& model = "m") {
  v1::JobSpec s;
  s.set_model_id(model);
  s.set_method(v1::METHOD_ABLATE_HEADS);
  s.set_prompts_per_shard(1);
  s.set_components_per_shard(1);
  s.mutable_dataset()->set_name("induction");
  s.mutable_dataset()->set_n_prompts(2);
  return s;
}

// What a worker of a 2x2 model answers to a prepare lease: n prompts.
v1::PreparedDataset Prepared(int n_prompts = 2, const std::string& sha = "sha") {
  v1::PreparedDataset p;
  p.mutable_model()->set_n_layers(2);
  p.mutable_model()->set_n_heads(2);
  p.set_weights_sha256(sha);
  for (int i = 0; i < n_prompts; ++i) {
    v1::InlinePrompt* q = p.add_prompts();
    q->add_tokens(1);
    q->add_tokens(2);
    q->add_answers(3);
    q->add_wrongs(4);
  }
  p.add_first_prompt_str_tokens("<bos>");
  p.add_first_prompt_str_tokens(" a");
  return p;
}

class PrepareTest : public SchedulerTest {
 protected:
  // A worker that reported its model's shape: it can prepare jobs.
  std::string ShapedWorker(const std::string& model = "m", const std::string& sha = "sha") {
    v1::RegisterRequest r;
    r.set_model_id(model);
    r.set_weights_sha256(sha);
    r.set_name("shaped");
    r.mutable_model()->set_n_layers(2);
    r.mutable_model()->set_n_heads(2);
    return scheduler_.RegisterWorker(r).value();
  }
};

TEST_F(PrepareTest, AWorkerBuildsTheDatasetThenTheJobRunsPinnedToItsWeights) {
  const std::string job = scheduler_.Submit(kAnon, DatasetJob()).value();
  EXPECT_FALSE(scheduler_.GetJob(kAnon, job)->prepared());
  EXPECT_EQ(scheduler_.GetJob(kAnon, job)->shards_total(), 0);
  // A worker that did not report its model's shape cannot prepare.
  EXPECT_FALSE(Lease(Worker("m", "sha")).has_value());
  const std::string w = ShapedWorker();
  std::optional<v1::ShardLease> prepare = Lease(w);
  ASSERT_TRUE(prepare.has_value());
  EXPECT_TRUE(prepare->has_prepare());
  EXPECT_EQ(prepare->shard_id(), -1);
  EXPECT_EQ(prepare->prepare().dataset().name(), "induction");
  // Tensors are not the answer to a prepare lease.
  EXPECT_EQ(scheduler_.Complete(w, prepare->lease_id(), {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(*scheduler_.CompletePrepare(w, prepare->lease_id(), Prepared()));

  const v1::JobStatus status = *scheduler_.GetJob(kAnon, job);
  EXPECT_TRUE(status.prepared());
  EXPECT_EQ(status.n_prompts(), 2);
  EXPECT_EQ(status.n_pos(), 2);
  EXPECT_EQ(status.spec().n_layers(), 2);
  EXPECT_EQ(status.spec().weights_sha256(), "sha");  // pinned to the preparing worker's
  EXPECT_EQ(status.spec().model().n_layers(), 2);    // as the worker reported it
  EXPECT_EQ(status.spec().dataset().name(), "induction");
  EXPECT_EQ(status.first_prompt().tokens_size(), 2);
  EXPECT_EQ(status.first_prompt_str_tokens_size(), 2);
  EXPECT_EQ(status.shards_total(), 8);
  // A second prepare answer is stale.
  EXPECT_FALSE(*scheduler_.CompletePrepare(w, prepare->lease_id(), Prepared()));
  // Workers with other weights do not get the pinned job's shards.
  EXPECT_FALSE(Lease(ShapedWorker("m", "other-sha")).has_value());
  int n = 0;
  while (auto lease = Lease(w)) {
    ASSERT_TRUE(lease->has_shard());
    ASSERT_TRUE(*scheduler_.Complete(w, lease->lease_id(), ResultFor(lease->shard())));
    ++n;
  }
  EXPECT_EQ(n, 8);
  EXPECT_EQ(State(job), v1::JOB_SUCCEEDED);
  const std::vector<v1::JobEvent::Kind> kinds = Kinds(job);
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), v1::JobEvent::DATASET_READY), kinds.end());
}

TEST_F(PrepareTest, InlinePromptsWithoutTheModelShapeAreCompletedByTheWorker) {
  v1::JobSpec spec = testing::SmallJob();
  spec.clear_n_layers();
  spec.clear_n_heads();
  spec.clear_weights_sha256();
  const std::string job = scheduler_.Submit(kAnon, spec).value();
  const std::string w = ShapedWorker();
  std::optional<v1::ShardLease> prepare = Lease(w);
  ASSERT_TRUE(prepare.has_value() && prepare->has_prepare());
  EXPECT_FALSE(prepare->prepare().has_dataset());
  EXPECT_EQ(prepare->prepare().first_prompt().tokens_size(), 2);
  ASSERT_TRUE(*scheduler_.CompletePrepare(w, prepare->lease_id(), Prepared(/*n_prompts=*/0)));
  EXPECT_EQ(scheduler_.GetJob(kAnon, job)->n_prompts(), 2);  // the job's own prompts
  EXPECT_EQ(scheduler_.GetJob(kAnon, job)->shards_total(), 8);
}

TEST_F(PrepareTest, ABadDatasetFailsTheJobWithTheWorkersMessage) {
  const std::string job = scheduler_.Submit(kAnon, DatasetJob()).value();
  const std::string w = ShapedWorker();
  std::optional<v1::ShardLease> prepare = Lease(w);
  ASSERT_TRUE(prepare.has_value());
  ASSERT_TRUE(scheduler_
                  .Fail(w, prepare->lease_id(),
                        absl::InvalidArgumentError("prompts.jsonl:3: no \"answer\""))
                  .ok());
  EXPECT_EQ(State(job), v1::JOB_FAILED);
  EXPECT_NE(scheduler_.GetJob(kAnon, job)->error().find("prompts.jsonl:3"), std::string::npos);
  EXPECT_NE(scheduler_.GetJob(kAnon, job)->error().find("preparing the job"), std::string::npos);
}

TEST_F(PrepareTest, ADatasetOverThePlannersLimitsFailsTheJob) {
  SchedulerOptions o = Options();
  o.planner.max_prompts = 3;
  Scheduler s(&clock_, o, nullptr);
  const std::string job = s.Submit(kAnon, DatasetJob()).value();
  v1::RegisterRequest r;
  r.set_model_id("m");
  r.set_weights_sha256("sha");
  r.mutable_model()->set_n_layers(2);
  r.mutable_model()->set_n_heads(2);
  const std::string w = s.RegisterWorker(r).value();
  auto prepare = s.Lease(w);
  ASSERT_TRUE(prepare.ok() && prepare->has_value());
  ASSERT_TRUE(*s.CompletePrepare(w, (*prepare)->lease_id(), Prepared(/*n_prompts=*/5)));
  EXPECT_EQ(s.GetJob(kAnon, job)->state(), v1::JOB_FAILED);
  EXPECT_EQ(s.GetJob(kAnon, job)->error_code(),
            static_cast<int>(absl::StatusCode::kResourceExhausted));
  EXPECT_NE(s.GetJob(kAnon, job)->error().find("over the limit of 3"), std::string::npos);
}

TEST_F(PrepareTest, AnUnknownModelIdIsNotFoundNamingTheServedIds) {
  ShapedWorker("gpt2");
  ShapedWorker("lensgrid-tiny");
  absl::StatusOr<std::string> job = scheduler_.Submit(kAnon, DatasetJob("no-such-model"));
  ASSERT_EQ(job.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(job.status().message().find("no-such-model"), std::string::npos);
  EXPECT_NE(job.status().message().find("gpt2"), std::string::npos);
  EXPECT_NE(job.status().message().find("lensgrid-tiny"), std::string::npos);
}

TEST_F(PrepareTest, APinNoWorkerHasWaitsSaysSoAndFailsAfterTheModelWait) {
  SchedulerOptions o = Options();
  o.model_wait_ms = 5000;
  Scheduler s(&clock_, o, nullptr);
  v1::RegisterRequest r;
  r.set_model_id("m");
  r.set_weights_sha256("sha");
  r.mutable_model()->set_n_layers(2);
  r.mutable_model()->set_n_heads(2);
  const std::string w = s.RegisterWorker(r).value();
  v1::JobSpec spec = DatasetJob();
  spec.set_weights_sha256("pinned-sha-nobody-has");
  const std::string job = s.Submit(kAnon, spec).value();
  s.Tick();
  bool final = false;
  std::vector<v1::JobEvent> events = *s.EventsAfter(kAnon, job, 0, &final);
  ASSERT_EQ(events.back().kind(), v1::JobEvent::WAITING_FOR_WORKER);
  EXPECT_NE(events.back().message().find("pinned-sha-"), std::string::npos);
  EXPECT_FALSE(s.Lease(w)->has_value());
  clock_.Advance(4000);
  (void)s.Heartbeat(w, {});
  s.Tick();
  EXPECT_EQ(s.GetJob(kAnon, job)->state(), v1::JOB_QUEUED);
  clock_.Advance(2000);
  (void)s.Heartbeat(w, {});
  s.Tick();
  EXPECT_EQ(s.GetJob(kAnon, job)->state(), v1::JOB_FAILED);
  EXPECT_EQ(s.GetJob(kAnon, job)->error_code(),
            static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_NE(s.GetJob(kAnon, job)->error().find("--model-wait-ms"), std::string::npos);
}

TEST_F(PrepareTest, AWaitingJobRunsWhenItsWorkerComes) {
  const std::string job = scheduler_.Submit(kAnon, DatasetJob()).value();  // no worker at all
  scheduler_.Tick();
  EXPECT_EQ(Kinds(job).back(), v1::JobEvent::WAITING_FOR_WORKER);
  const std::string w = ShapedWorker();
  EXPECT_EQ(Kinds(job).back(), v1::JobEvent::WORKER_JOINED);
  std::optional<v1::ShardLease> prepare = Lease(w);
  ASSERT_TRUE(prepare.has_value() && prepare->has_prepare());
}

TEST_F(PrepareTest, HeartbeatsSayHowLongTheLeasesNowLast) {
  scheduler_.Submit(kAnon, testing::SmallJob()).value();
  const std::string w = Worker();
  std::optional<v1::ShardLease> lease = Lease(w);
  ASSERT_TRUE(lease.has_value());
  int64_t lease_ms = -1;
  ASSERT_TRUE(scheduler_.Heartbeat(w, {lease->lease_id()}, &lease_ms).ok());
  EXPECT_EQ(lease_ms, lease->lease_ms());  // the same rule as the lease itself
  ASSERT_TRUE(scheduler_.Heartbeat(w, {}, &lease_ms).ok());
  EXPECT_EQ(lease_ms, 0);
}

TEST_F(SchedulerTest, LeasesAreUnguessableAndBoundToTheirWorker) {
  const std::string job = scheduler_.Submit(kAnon, testing::SmallJob()).value();
  const std::string holder = Worker(), other = Worker();
  std::optional<v1::ShardLease> lease = Lease(holder);
  ASSERT_TRUE(lease.has_value());
  // <job>/<shard>/<attempt>-<32 hex digits of randomness>
  const std::string id = lease->lease_id();
  ASSERT_GT(id.size(), 33u);
  EXPECT_EQ(id.substr(id.size() - 33, 1), "-");
  EXPECT_EQ(id.find_first_not_of("0123456789abcdef", id.size() - 32), std::string::npos);
  // Ids it never issued are unknown, whoever asks.
  const std::string guessed = absl::StrCat(job, "/", lease->shard_id(), "/1");
  EXPECT_EQ(scheduler_.Complete(holder, guessed, ResultFor(lease->shard())).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(scheduler_.Fail(other, guessed, absl::InvalidArgumentError("x")).code(),
            absl::StatusCode::kNotFound);
  // Another worker cannot complete, fail, hand back or heartbeat the lease.
  std::vector<Array> forged = ResultFor(lease->shard());
  for (Array& a : forged) std::fill(a.values.begin(), a.values.end(), 42.0f);
  EXPECT_EQ(scheduler_.Complete(other, id, forged).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(scheduler_.Fail(other, id, absl::InvalidArgumentError("x")).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(scheduler_.HandBack(other, id).code(), absl::StatusCode::kPermissionDenied);
  // Another worker's heartbeat does not extend it: that worker is told to abandon it.
  clock_.Advance(5000);
  EXPECT_EQ(*scheduler_.Heartbeat(other, {id}), std::vector<std::string>{id});
  clock_.Advance(6000);  // 11 s after the 10 s lease: only the holder's heartbeat would save it
  scheduler_.Tick();
  EXPECT_EQ(Kinds(job).back(), v1::JobEvent::SHARD_RETRIED);
  EXPECT_EQ(State(job), v1::JOB_RUNNING);
  EXPECT_EQ(scheduler_.GetJob(kAnon, job)->shards_done(), 0);
  // The holder's (late) completion is the one that counts.
  ASSERT_TRUE(*scheduler_.Complete(holder, id, ResultFor(lease->shard())));
  EXPECT_EQ(scheduler_.GetJob(kAnon, job)->shards_done(), 1);
}

TEST_F(SchedulerTest, AnotherSubmittersJobIsNotFoundAndAdminsSeeEveryJob) {
  const Caller alice{"alice", Role::kSubmitter}, bob{"bob", Role::kSubmitter};
  const Caller admin{"root", Role::kAdmin};
  const std::string job = scheduler_.Submit(alice, SmallJob(1)).value();
  EXPECT_EQ(scheduler_.GetJob(alice, job)->owner(), "alice");
  const absl::Status missing = scheduler_.GetJob(bob, "no-such-job").status();
  bool final = false;
  for (const absl::Status& s :
       {scheduler_.GetJob(bob, job).status(), scheduler_.GetResult(bob, job).status(),
        scheduler_.EventsAfter(bob, job, 0, &final).status(),
        scheduler_.Cancel(bob, job).status()}) {
    EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
    // Nothing tells bob that the job exists.
    EXPECT_EQ(s.message(), absl::StrCat("no job ", Echo(job))) << s;
    EXPECT_EQ(missing.message(), absl::StrCat("no job ", Echo("no-such-job")));
  }
  EXPECT_EQ(State(job), v1::JOB_QUEUED);  // bob's cancel changed nothing
  std::string next;
  EXPECT_TRUE(scheduler_.ListJobs(bob, {}, &next)->empty());
  EXPECT_EQ(scheduler_.ListJobs(alice, {}, &next)->size(), 1u);
  EXPECT_EQ(scheduler_.ListJobs(admin, {}, &next)->size(), 1u);
  EXPECT_TRUE(scheduler_.EventsAfter(admin, job, 0, &final).ok());
  EXPECT_EQ(scheduler_.Cancel(admin, job)->state(), v1::JOB_CANCELLED);
}

TEST_F(SchedulerTest, ARepeatedRequestIdReturnsTheSameJob) {
  const Caller alice{"alice", Role::kSubmitter}, bob{"bob", Role::kSubmitter};
  const std::string job = scheduler_.Submit(alice, SmallJob(1), "batch-uid-1").value();
  EXPECT_EQ(scheduler_.Submit(alice, SmallJob(1), "batch-uid-1").value(), job);
  EXPECT_EQ(scheduler_.GetJob(alice, job)->request_id(), "batch-uid-1");
  std::string next;
  EXPECT_EQ(scheduler_.ListJobs(kAnon, {}, &next)->size(), 1u);
  // Another spec under the same request_id is refused, naming it.
  absl::Status other = scheduler_.Submit(alice, SmallJob(2), "batch-uid-1").status();
  EXPECT_EQ(other.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(other.message().find("request_id \"batch-uid-1\""), std::string::npos) << other;
  EXPECT_NE(other.message().find(job), std::string::npos) << other;
  // Request ids are per owner; no request id is no idempotency.
  EXPECT_NE(scheduler_.Submit(bob, SmallJob(1), "batch-uid-1").value(), job);
  EXPECT_NE(scheduler_.Submit(alice, SmallJob(1)).value(), job);
  EXPECT_NE(scheduler_.Submit(alice, SmallJob(1)).value(), job);
  EXPECT_EQ(scheduler_.ListJobs(kAnon, {}, &next)->size(), 4u);
}

TEST_F(SchedulerTest, UnsetDefaultsAreStoredAsTheDefaultsTheySay) {
  // A client that leaves metric and ablation unset and one that sends their
  // defaults (as the CLI does) submit the same job: same spec, same request.
  const Caller alice{"alice", Role::kSubmitter};
  v1::JobSpec unset = SmallJob(1);
  unset.clear_metric();
  unset.clear_ablation();
  v1::JobSpec sent = unset;
  sent.set_metric(v1::METRIC_LOGIT_DIFF);
  sent.set_ablation(v1::ABLATION_ZERO);
  const std::string job = scheduler_.Submit(alice, unset, "defaults-1").value();
  EXPECT_EQ(scheduler_.GetJob(alice, job)->spec().metric(), v1::METRIC_LOGIT_DIFF);
  EXPECT_EQ(scheduler_.GetJob(alice, job)->spec().ablation(), v1::ABLATION_ZERO);
  EXPECT_EQ(scheduler_.Submit(alice, sent, "defaults-1").value(), job);
  // A deprecated name is left for the planner to read.
  v1::JobSpec named = unset;
  named.set_ablation_name("mean");
  EXPECT_EQ(WithSpecDefaults(named).ablation(), v1::ABLATION_UNSPECIFIED);
  EXPECT_EQ(WithSpecDefaults(named).ablation_name(), "mean");
}

TEST_F(SchedulerTest, ABadRequestIdIsInvalidArgumentNamingTheField) {
  for (const std::string& bad : {std::string(129, 'r'), std::string("tab\there"),
                                 std::string("nul\0", 4), std::string("\xc3\xa9")}) {
    absl::Status s = scheduler_.Submit(kAnon, SmallJob(1), bad).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("request_id"), std::string::npos) << s;
  }
  EXPECT_TRUE(scheduler_.Submit(kAnon, SmallJob(1), std::string(128, 'r')).ok());
}

// Runs every shard of `job` on a new worker to its end.
void RunToTheEnd(Scheduler* s, const std::string& model = "m") {
  v1::RegisterRequest r;
  r.set_model_id(model);
  r.set_weights_sha256("sha");
  const std::string w = s->RegisterWorker(r).value();
  while (auto lease = s->Lease(w).value()) {
    ASSERT_TRUE(*s->Complete(w, lease->lease_id(), ResultFor(lease->shard())));
  }
}

TEST_F(SchedulerTest, DeleteRemovesAFinishedJobAndRefusesARunningOne) {
  const Caller alice{"alice", Role::kSubmitter}, bob{"bob", Role::kSubmitter};
  const std::string job = scheduler_.Submit(alice, SmallJob(1), "r").value();
  absl::Status running = scheduler_.Delete(alice, job);
  EXPECT_EQ(running.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(running.message().find("cancel it first"), std::string::npos) << running;
  EXPECT_EQ(scheduler_.Delete(bob, job).code(), absl::StatusCode::kNotFound);
  ASSERT_EQ(scheduler_.Cancel(alice, job)->state(), v1::JOB_CANCELLED);
  EXPECT_EQ(scheduler_.Delete(bob, job).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(scheduler_.Delete(alice, job).ok());
  EXPECT_EQ(scheduler_.GetJob(alice, job).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(scheduler_.Delete(alice, job).code(), absl::StatusCode::kNotFound);
  // Its request id is free again.
  EXPECT_NE(scheduler_.Submit(alice, SmallJob(1), "r").value(), job);
  // An admin deletes anyone's finished job.
  const std::string done = scheduler_.Submit(bob, SmallJob(1)).value();
  RunToTheEnd(&scheduler_);
  ASSERT_EQ(State(done), v1::JOB_SUCCEEDED);
  EXPECT_TRUE(scheduler_.Delete(Caller{"root", Role::kAdmin}, done).ok());
}

TEST(SchedulerRetentionTest, FinishedJobsAreSweptAfterTheRetention) {
  FakeClock clock;
  SchedulerOptions o;
  o.retain_finished_ms = 3600 * 1000;
  o.model_wait_ms = 0;  // the running job waits for a worker for ever
  Scheduler s(&clock, o, nullptr);
  const std::string early = s.Submit(kAnon, SmallJob(1)).value();
  RunToTheEnd(&s);
  ASSERT_EQ(s.GetJob(kAnon, early)->state(), v1::JOB_SUCCEEDED);
  EXPECT_GT(s.GetJob(kAnon, early)->finished_unix_ms(), 0);
  clock.Advance(1800 * 1000);
  const std::string late = s.Submit(kAnon, SmallJob(1)).value();
  ASSERT_EQ(s.Cancel(kAnon, late)->state(), v1::JOB_CANCELLED);
  const std::string running = s.Submit(kAnon, SmallJob(1)).value();
  s.Tick();
  EXPECT_TRUE(s.GetJob(kAnon, early).ok());  // 30 min old
  clock.Advance(1800 * 1000);
  s.Tick();
  EXPECT_EQ(s.GetJob(kAnon, early).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(s.GetJob(kAnon, late).ok());
  clock.Advance(3 * 3600 * 1000);  // a running job is never swept
  s.Tick();
  EXPECT_EQ(s.GetJob(kAnon, late).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.GetJob(kAnon, running)->state(), v1::JOB_QUEUED);
}

TEST(SchedulerRetentionTest, ZeroKeepsFinishedJobsForEver) {
  FakeClock clock;
  SchedulerOptions o;
  o.retain_finished_ms = 0;
  Scheduler s(&clock, o, nullptr);
  const std::string job = s.Submit(kAnon, SmallJob(1)).value();
  ASSERT_TRUE(s.Cancel(kAnon, job).ok());
  clock.Advance(int64_t{3650} * 24 * 3600 * 1000);
  s.Tick();
  EXPECT_TRUE(s.GetJob(kAnon, job).ok());
}

TEST_F(SchedulerTest, ListWorkersFiltersByLivenessAndModel) {
  const std::string a = Worker("m"), b = Worker("other");
  clock_.Advance(30000);
  const std::string c = Worker("m");  // registered later: heard from recently
  clock_.Advance(40000);              // a and b silent for 70 s (timeout 60 s), c for 40 s
  scheduler_.Tick();
  auto ids = [&](const WorkerFilter& filter) {
    std::string next;
    std::vector<std::string> out;
    auto workers = scheduler_.ListWorkers({}, &next, filter);
    for (const auto& w : workers.value()) out.push_back(w.worker_id());
    return out;
  };
  EXPECT_EQ(ids({}).size(), 3u);
  EXPECT_EQ(ids({/*alive_only=*/true, ""}), std::vector<std::string>{c});
  EXPECT_EQ(ids({false, "m"}).size(), 2u);
  EXPECT_EQ(ids({false, "other"}), std::vector<std::string>{b});
  EXPECT_TRUE(ids({true, "other"}).empty());
  EXPECT_NE(a, c);
}

TEST_F(SchedulerTest, ListJobsFiltersByStateAndOwner) {
  const Caller alice{"alice", Role::kSubmitter}, bob{"bob", Role::kSubmitter};
  const std::string a1 = scheduler_.Submit(alice, SmallJob(1)).value();
  const std::string a2 = scheduler_.Submit(alice, SmallJob(1)).value();
  const std::string b1 = scheduler_.Submit(bob, SmallJob(1)).value();
  ASSERT_TRUE(scheduler_.Cancel(alice, a2).ok());
  auto ids = [this](const Caller& c, JobFilter f) {
    std::string next;
    std::vector<std::string> out;
    const std::vector<v1::JobStatus> jobs = scheduler_.ListJobs(c, {}, &next, f).value();
    for (const auto& j : jobs) out.push_back(j.job_id());
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(ids(kAnon, {v1::JOB_CANCELLED, ""}), V{a2});
  EXPECT_EQ(ids(kAnon, {v1::JOB_QUEUED, ""}), (V{a1, b1}));
  EXPECT_EQ(ids(kAnon, {v1::JOB_STATE_UNSPECIFIED, "bob"}), V{b1});
  EXPECT_EQ(ids(kAnon, {v1::JOB_QUEUED, "alice"}), V{a1});
  // A submitter sees its own only, whatever the filter asks for.
  EXPECT_EQ(ids(bob, {}), V{b1});
  EXPECT_EQ(ids(bob, {v1::JOB_STATE_UNSPECIFIED, "alice"}), V{});
  std::string next;
  EXPECT_EQ(
      scheduler_.ListJobs(kAnon, {}, &next, {static_cast<v1::JobState>(99), ""}).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST_F(SchedulerTest, PagesListEveryJobOnceWhileJobsComeAndGo) {
  std::set<std::string> before;
  std::vector<std::string> order;
  for (int i = 0; i < 23; ++i) {
    order.push_back(scheduler_.Submit(kAnon, SmallJob(1)).value());
    before.insert(order.back());
  }
  // Two jobs are deleted mid-listing (one already listed, one not yet):
  // they are listed at most once; every other job exactly once.
  const std::string gone_listed = *before.begin(), gone_later = *before.rbegin();
  for (const std::string& id : {gone_listed, gone_later})
    ASSERT_TRUE(scheduler_.Cancel(kAnon, id).ok());
  std::map<std::string, int> seen;
  std::string token;
  int page = 0;
  do {
    std::string next;
    auto jobs = scheduler_.ListJobs(kAnon, {5, token}, &next);
    ASSERT_TRUE(jobs.ok()) << jobs.status();
    for (const auto& j : *jobs) ++seen[j.job_id()];
    token = next;
    // Jobs arrive (and go) between pages.
    scheduler_.Submit(kAnon, SmallJob(1)).value();
    if (++page == 2) {
      ASSERT_TRUE(scheduler_.Delete(kAnon, gone_listed).ok());
      ASSERT_TRUE(scheduler_.Delete(kAnon, gone_later).ok());
    }
  } while (!token.empty());
  for (const std::string& id : before) {
    if (id != gone_listed && id != gone_later) EXPECT_EQ(seen[id], 1) << id;
  }
  for (const auto& [id, n] : seen) EXPECT_EQ(n, 1) << id;
}

TEST_F(SchedulerTest, ConcurrentRepeatsOfARequestIdStartOneJob) {
  const Caller alice{"alice", Role::kSubmitter};
  std::vector<std::string> ids(8);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < ids.size(); ++i) {
    threads.emplace_back([&, i] { ids[i] = scheduler_.Submit(alice, SmallJob(2), "r").value(); });
  }
  for (std::thread& t : threads) t.join();
  for (const std::string& id : ids) EXPECT_EQ(id, ids[0]);
  std::string next;
  EXPECT_EQ(scheduler_.ListJobs(alice, {}, &next)->size(), 1u);
}

}  // namespace
}  // namespace lensgrid::service
