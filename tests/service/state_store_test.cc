// State store on a temp dir: what is written comes back after reopening, and a
// scheduler restored from it resumes without redoing completed shards.
#include "service/state_store.h"

#include <sqlite3.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "service/scheduler.h"
#include "tests/service/test_jobs.h"

namespace lensgrid::service {
namespace {

const Caller kAnon = Caller::Anonymous();

using testing::ResultFor;

std::string TempDir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             (name + "-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "-" +
              std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  return dir.string();
}

TEST(StateStoreTest, ArraysRoundTripAndCorruptionIsDetected) {
  std::vector<Array> arrays = {{"baseline", {2}, {1.5f, -2}}, {"delta", {1, 3}, {1, 2, 3}}};
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
    job = s.Submit(kAnon, testing::SmallJob(2)).value();
    v1::RegisterRequest r;
    r.set_model_id("m");
    r.set_weights_sha256("sha");
    const std::string w = s.RegisterWorker(r).value();
    for (int i = 0; i < 5; ++i) {  // 5 of 8 shards done, a sixth leased
      auto l = s.Lease(w).value();
      ASSERT_TRUE(*s.Complete(w, l->lease_id(), testing::ResultFor(l->shard())));
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
  EXPECT_EQ(s.GetJob(kAnon, job)->shards_done(), 5);
  v1::RegisterRequest r;
  r.set_model_id("m");
  r.set_weights_sha256("sha");
  const std::string w = s.RegisterWorker(r).value();
  int recomputed = 0;
  while (auto l = s.Lease(w).value()) {
    ASSERT_TRUE(*s.Complete(w, l->lease_id(), testing::ResultFor(l->shard())));
    ++recomputed;
  }
  EXPECT_EQ(recomputed, 3);
  EXPECT_EQ(s.GetJob(kAnon, job)->state(), v1::JOB_SUCCEEDED);
  auto result = s.GetResult(kAnon, job);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->tensors.back().values, (std::vector<float>{5, 6, 7, 8}));
  bool final = false;
  auto events = *s.EventsAfter(kAnon, job, 0, &final);
  EXPECT_GT(events.size(), events_before);
  for (size_t i = 0; i < events.size(); ++i)
    EXPECT_EQ(events[i].seq(), static_cast<int64_t>(i) + 1);

  // A finished job comes back finished (as its summary), with its result
  // and events read from the store.
  auto again = (*store)->Load();
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE((*again)[0].summary.has_value());
  EXPECT_TRUE((*again)[0].results.empty());
  EXPECT_TRUE((*again)[0].events.empty());
  Scheduler s2(&clock, {}, store->get());
  ASSERT_TRUE(s2.Restore(std::move((*again)[0])).ok());
  EXPECT_EQ(s2.GetJob(kAnon, job)->state(), v1::JOB_SUCCEEDED);
  EXPECT_EQ(s2.GetJob(kAnon, job)->spec().n_layers(), 2);
  auto again_result = s2.GetResult(kAnon, job);
  ASSERT_TRUE(again_result.ok()) << again_result.status();
  EXPECT_EQ(again_result->tensors.back().values, (std::vector<float>{5, 6, 7, 8}));
  EXPECT_EQ(s2.EventsAfter(kAnon, job, 0, &final)->size(), events.size());
  EXPECT_TRUE(final);
  std::filesystem::remove_all(dir);
}

TEST(StateStoreTest, UnopenableDirIsUnavailable) {
  EXPECT_EQ(StateStore::Open("/proc/no/such/dir").status().code(), absl::StatusCode::kUnavailable);
}

void RunSql(const std::string& dir, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir + "/coordinator.db").c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

// Flips the low bit of byte `offset` of a stored result, as a bad disk would.
void FlipResultByte(const std::string& dir, const std::string& job, int64_t shard, int offset) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir + "/coordinator.db").c_str(), &db), SQLITE_OK);
  sqlite3_stmt* read = nullptr;
  sqlite3_prepare_v2(db, "SELECT data FROM results WHERE job_id = ? AND shard = ?", -1, &read,
                     nullptr);
  sqlite3_bind_text(read, 1, job.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(read, 2, shard);
  ASSERT_EQ(sqlite3_step(read), SQLITE_ROW);
  std::string data(static_cast<const char*>(sqlite3_column_blob(read, 0)),
                   sqlite3_column_bytes(read, 0));
  sqlite3_finalize(read);
  ASSERT_LT(offset, static_cast<int>(data.size()));
  data[offset] ^= 1;
  sqlite3_stmt* write = nullptr;
  sqlite3_prepare_v2(db, "UPDATE results SET data = ? WHERE job_id = ? AND shard = ?", -1, &write,
                     nullptr);
  sqlite3_bind_blob(write, 1, data.data(), static_cast<int>(data.size()), SQLITE_TRANSIENT);
  sqlite3_bind_text(write, 2, job.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(write, 3, shard);
  EXPECT_EQ(sqlite3_step(write), SQLITE_DONE);
  sqlite3_finalize(write);
  sqlite3_close(db);
}

v1::RegisterRequest Matching() {
  v1::RegisterRequest r;
  r.set_model_id("m");
  r.set_weights_sha256("sha");
  return r;
}

// Runs `shards` shards of `job` (all if -1).
void RunShards(Scheduler* s, const std::string& w, int shards = -1) {
  for (int i = 0; shards < 0 || i < shards; ++i) {
    auto l = s->Lease(w).value();
    if (!l) break;
    ASSERT_TRUE(*s->Complete(w, l->lease_id(), ResultFor(l->shard())));
  }
}

// A real SQLITE_FULL (max_page_count) in the middle of a job, then a kill:
// the store reloads with no gap, the finished job is served, the running one
// resumes. The fault left no half-written change behind.
TEST(StateStoreTest, DiskFullMidJobLeavesAConsistentStore) {
  const std::string dir = TempDir("lensgrid-full");
  const std::string pages = dir + "-pages";
  StateStoreOptions options;
  options.max_page_count_file = pages;
  FakeClock clock;
  std::string done_job, running_job;
  int64_t stored = 0;
  {
    auto store = StateStore::Open(dir, options);
    ASSERT_TRUE(store.ok()) << store.status();
    Scheduler s(&clock, {}, store->get());
    const std::string w = s.RegisterWorker(Matching()).value();
    done_job = s.Submit(kAnon, testing::SmallJob(2)).value();
    RunShards(&s, w);
    ASSERT_EQ(s.GetJob(kAnon, done_job)->state(), v1::JOB_SUCCEEDED);
    v1::JobSpec big = testing::SmallJob(100);  // 400 shards
    running_job = s.Submit(kAnon, big).value();
    RunShards(&s, w, 3);
    std::ofstream(pages) << 1;  // no new page from now on
    std::string note;
    while (note.empty()) {  // until a write needs a new page
      auto l = s.Lease(w).value();
      ASSERT_TRUE(l.has_value());
      ASSERT_TRUE(*s.Complete(w, l->lease_id(), ResultFor(l->shard()), &note));
    }
    stored = s.GetJob(kAnon, running_job)->shards_done() - 1;
    EXPECT_NE(note.find("database or disk is full"), std::string::npos) << note;
    EXPECT_NE(s.GetJob(kAnon, running_job)->store_error().find("full"), std::string::npos);
    EXPECT_FALSE(s.Lease(w).value().has_value());  // paused
    for (int i = 0; i < 3; ++i) {
      clock.Advance(2000);
      s.Tick();
    }
    EXPECT_EQ(s.GetJob(kAnon, running_job)->state(), v1::JOB_RUNNING);
  }  // killed while the disk is full
  std::filesystem::remove(pages);
  auto store = StateStore::Open(dir, options);
  ASSERT_TRUE(store.ok()) << store.status();
  auto jobs = (*store)->Load();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 2u);
  Scheduler s(&clock, {}, store->get());
  for (auto& j : *jobs) {
    EXPECT_EQ(j.damage, "");
    EXPECT_EQ(j.notes, "");
    ASSERT_TRUE(s.Restore(std::move(j)).ok());
  }
  EXPECT_TRUE(s.GetResult(kAnon, done_job).ok());
  // The result held in memory at the kill is lost, and only it.
  EXPECT_EQ(s.GetJob(kAnon, running_job)->shards_done(), stored);
  RunShards(&s, s.RegisterWorker(Matching()).value());
  EXPECT_EQ(s.GetJob(kAnon, running_job)->state(), v1::JOB_SUCCEEDED);
  std::filesystem::remove_all(dir);
}

TEST(StateStoreTest, AFlippedByteInAResultIsDataLossForThatJobOnly) {
  const std::string dir = TempDir("lensgrid-flip");
  FakeClock clock;
  std::string a, b;
  {
    auto store = StateStore::Open(dir);
    ASSERT_TRUE(store.ok()) << store.status();
    Scheduler s(&clock, {}, store->get());
    const std::string w = s.RegisterWorker(Matching()).value();
    a = s.Submit(kAnon, testing::SmallJob(2)).value();
    RunShards(&s, w);
    b = s.Submit(kAnon, testing::SmallJob(2)).value();
    RunShards(&s, w);
  }
  // Flip one byte in the middle of one of a's stored results.
  FlipResultByte(dir, a, 3, 30);
  auto store = StateStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  auto jobs = (*store)->Load();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  Scheduler s(&clock, {}, store->get());
  // Finished jobs load as summaries; the damage shows when the result is read.
  EXPECT_EQ((*store)->Read(a, kJobResults)->damaged_shards, std::vector<int64_t>{3});
  for (auto& j : *jobs) (void)s.Restore(std::move(j));
  absl::Status result = s.GetResult(kAnon, a).status();
  EXPECT_EQ(result.code(), absl::StatusCode::kDataLoss) << result;
  EXPECT_NE(result.message().find("shard 3"), std::string::npos) << result;
  EXPECT_EQ(s.GetJob(kAnon, a)->error_code(), static_cast<int>(absl::StatusCode::kDataLoss));
  std::string next;
  const std::vector<v1::JobStatus> failed =
      s.ListJobs(kAnon, {}, &next, {v1::JOB_FAILED, ""}).value();
  ASSERT_EQ(failed.size(), 1u);  // listed as what it now is
  EXPECT_EQ(failed[0].job_id(), a);
  EXPECT_TRUE(s.GetResult(kAnon, b).ok());  // the other job is served
  std::filesystem::remove_all(dir);
}

TEST(StateStoreTest, AnEmptyOrMissingDatabaseUnderAMarkerRefusesToStart) {
  const std::string dir = TempDir("lensgrid-marker");
  {
    auto store = StateStore::Open(dir);
    ASSERT_TRUE(store.ok()) << store.status();
    FakeClock clock;
    Scheduler s(&clock, {}, store->get());
    s.Submit(kAnon, testing::SmallJob(1)).value();
  }
  ASSERT_TRUE(std::filesystem::exists(dir + "/" + StateStore::kMarker));
  std::filesystem::remove(dir + "/coordinator.db-wal");
  std::filesystem::remove(dir + "/coordinator.db-shm");
  std::filesystem::resize_file(dir + "/coordinator.db", 0);
  absl::Status s = StateStore::Open(dir).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("empty"), std::string::npos) << s;
  std::filesystem::remove(dir + "/coordinator.db");
  s = StateStore::Open(dir).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("--fresh-state"), std::string::npos) << s;
  StateStoreOptions fresh;
  fresh.start_fresh = true;
  auto store = StateStore::Open(dir, fresh);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE((*store)->Load()->empty());
  std::filesystem::remove_all(dir);
}

TEST(StateStoreTest, ADroppedTableIsReportedNotRecreated) {
  const std::string dir = TempDir("lensgrid-schema");
  ASSERT_TRUE(StateStore::Open(dir).ok());
  RunSql(dir, "DROP TABLE results");
  absl::Status s = StateStore::Open(dir).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(s.message().find("\"results\""), std::string::npos) << s;
  RunSql(dir, "SELECT 1");  // still no table: it was not recreated
  std::filesystem::remove_all(dir);
}

TEST(StateStoreTest, EventsAfterAGapAreDroppedAndReportedNotFatal) {
  const std::string dir = TempDir("lensgrid-gap");
  FakeClock clock;
  std::string job;
  {
    auto store = StateStore::Open(dir);
    ASSERT_TRUE(store.ok());
    Scheduler s(&clock, {}, store->get());
    job = s.Submit(kAnon, testing::SmallJob(2)).value();
    RunShards(&s, s.RegisterWorker(Matching()).value(), 4);
  }
  RunSql(dir, "DELETE FROM events WHERE seq = 3");  // an old store's gap
  auto store = StateStore::Open(dir);
  ASSERT_TRUE(store.ok());
  auto jobs = (*store)->Load();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_EQ((*jobs)[0].events.size(), 2u);
  EXPECT_NE((*jobs)[0].notes.find("seq 3"), std::string::npos);
  Scheduler s(&clock, {}, store->get());
  ASSERT_TRUE(s.Restore(std::move((*jobs)[0])).ok());
  RunShards(&s, s.RegisterWorker(Matching()).value());
  EXPECT_EQ(s.GetJob(kAnon, job)->state(), v1::JOB_SUCCEEDED);
  auto again = (*store)->Load();  // written on from seq 3, stale rows gone
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)[0].notes, "");
  std::filesystem::remove_all(dir);
}

// A job a client submitted with a dataset and no model files: stored before
// and after a worker prepared it, restored either way.
TEST(StateStoreTest, APreparedJobIsRestoredWithItsPromptsAnUnpreparedOneIsPreparedAgain) {
  const std::string dir = TempDir("lensgrid-store-prepare");
  FakeClock clock;
  v1::JobSpec spec;
  spec.set_model_id("m");
  spec.set_method(v1::METHOD_ABLATE_HEADS);
  spec.set_prompts_per_shard(1);
  spec.set_components_per_shard(1);
  spec.mutable_dataset()->set_name("induction");
  v1::RegisterRequest r;
  r.set_model_id("m");
  r.set_weights_sha256("sha");
  r.mutable_model()->set_n_layers(2);
  r.mutable_model()->set_n_heads(2);
  v1::PreparedDataset prepared;
  *prepared.mutable_model() = r.model();
  prepared.set_weights_sha256("sha");
  for (int i = 0; i < 3; ++i) {
    v1::InlinePrompt* p = prepared.add_prompts();
    p->add_tokens(1);
    p->add_tokens(2);
    p->add_answers(3);
    p->add_wrongs(4);
  }
  std::string prepared_job, waiting_job;
  {
    auto store = StateStore::Open(dir);
    ASSERT_TRUE(store.ok()) << store.status();
    Scheduler s(&clock, {}, store->get());
    prepared_job = s.Submit(kAnon, spec).value();
    waiting_job = s.Submit(kAnon, spec).value();
    const std::string w = s.RegisterWorker(r).value();
    auto lease = s.Lease(w).value();
    ASSERT_TRUE(lease.has_value() && lease->has_prepare());
    ASSERT_EQ(lease->job_id(), prepared_job);
    ASSERT_TRUE(*s.CompletePrepare(w, lease->lease_id(), prepared));
    EXPECT_EQ(s.GetJob(kAnon, prepared_job)->shards_total(), 12);  // 3 prompts x 4 heads
  }
  auto store = StateStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  auto jobs = (*store)->Load();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  Scheduler s(&clock, {}, store->get());
  for (StoredJob& j : *jobs) ASSERT_TRUE(s.Restore(std::move(j)).ok());
  const v1::JobStatus restored = *s.GetJob(kAnon, prepared_job);
  EXPECT_TRUE(restored.prepared());
  EXPECT_EQ(restored.n_prompts(), 3);
  EXPECT_EQ(restored.shards_total(), 12);
  EXPECT_EQ(restored.spec().weights_sha256(), "sha");
  EXPECT_FALSE(s.GetJob(kAnon, waiting_job)->prepared());
  const std::string w = s.RegisterWorker(r).value();
  // The prepared job's shards first (it is older), then the other's preparation.
  int shards = 0;
  bool prepare_leased = false;
  while (auto lease = s.Lease(w).value()) {
    if (lease->has_prepare()) {
      EXPECT_EQ(lease->job_id(), waiting_job);
      prepare_leased = true;
      break;
    }
    ASSERT_TRUE(*s.Complete(w, lease->lease_id(), testing::ResultFor(lease->shard())));
    ++shards;
  }
  EXPECT_EQ(shards, 12);
  EXPECT_TRUE(prepare_leased);
  EXPECT_EQ(s.GetJob(kAnon, prepared_job)->state(), v1::JOB_SUCCEEDED);
  std::filesystem::remove_all(dir);
}

TEST(StateStoreTest, OneCoordinatorPerStateDirectory) {
  const std::string dir = TempDir("lensgrid-store-lock");
  auto first = StateStore::Open(dir);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = StateStore::Open(dir);
  ASSERT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find(absl::StrCat("pid ", getpid())), std::string::npos)
      << second.status();
  first->reset();  // the first coordinator stops: the directory is free again
  auto third = StateStore::Open(dir);
  EXPECT_TRUE(third.ok()) << third.status();
  std::filesystem::remove_all(dir);
}

TEST(StateStoreTest, ARequestIdFindsItsJobAfterAReopen) {
  const std::string dir = TempDir("lensgrid-store-request");
  FakeClock clock;
  const Caller alice{"alice", Role::kSubmitter};
  std::string job;
  {
    auto store = StateStore::Open(dir);
    ASSERT_TRUE(store.ok()) << store.status();
    Scheduler s(&clock, {}, store->get());
    job = s.Submit(alice, testing::SmallJob(2), "k8s-job-uid").value();
  }
  auto store = StateStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  auto jobs = (*store)->Load();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ((*jobs)[0].owner, "alice");
  EXPECT_EQ((*jobs)[0].request_id, "k8s-job-uid");
  Scheduler s(&clock, {}, store->get());
  ASSERT_TRUE(s.Restore(std::move((*jobs)[0])).ok());
  EXPECT_EQ(s.Submit(alice, testing::SmallJob(2), "k8s-job-uid").value(), job);
  EXPECT_EQ(s.GetJob(alice, job)->shards_total(), 8);
  EXPECT_EQ(s.Submit(alice, testing::SmallJob(1), "k8s-job-uid").status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST(StateStoreTest, ADatabaseFromBeforeOwnersAndRequestIdsOpens) {
  const std::string dir = TempDir("lensgrid-store-old");
  std::filesystem::create_directories(dir);
  {
    // The schema of the first stores: no checksums, owners or request ids.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((std::filesystem::path(dir) / "coordinator.db").c_str(), &db),
              SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "CREATE TABLE jobs(job_id TEXT PRIMARY KEY, spec BLOB NOT NULL,"
                           " created_ms INTEGER NOT NULL, state INTEGER NOT NULL,"
                           " error_code INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL "
                           "DEFAULT '');"
                           "CREATE TABLE results(job_id TEXT NOT NULL, shard INTEGER NOT NULL,"
                           " data BLOB NOT NULL, PRIMARY KEY(job_id, shard));"
                           "CREATE TABLE events(job_id TEXT NOT NULL, seq INTEGER NOT NULL,"
                           " data BLOB NOT NULL, PRIMARY KEY(job_id, seq));",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_stmt* insert = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db,
                                 "INSERT INTO jobs(job_id, spec, created_ms, state) "
                                 "VALUES('job-1-1', ?, 1, 1), ('job-1-2', ?, 2, 5)",
                                 -1, &insert, nullptr),
              SQLITE_OK);
    const std::string spec = testing::SmallJob(1).SerializeAsString();
    sqlite3_bind_blob(insert, 1, spec.data(), static_cast<int>(spec.size()), SQLITE_TRANSIENT);
    sqlite3_bind_blob(insert, 2, spec.data(), static_cast<int>(spec.size()), SQLITE_TRANSIENT);
    ASSERT_EQ(sqlite3_step(insert), SQLITE_DONE);
    sqlite3_finalize(insert);
    sqlite3_close(db);
  }
  auto store = StateStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  auto jobs = (*store)->Load();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ((*jobs)[0].owner, "anonymous");
  EXPECT_EQ((*jobs)[0].request_id, "");
  EXPECT_FALSE((*jobs)[1].summary.has_value());  // finished, but no summary stored yet
  FakeClock clock;
  SchedulerOptions o;
  o.summarize_after_ms = 0;
  Scheduler s(&clock, o, store->get());
  for (StoredJob& job : *jobs) ASSERT_TRUE(s.Restore(std::move(job)).ok());
  EXPECT_EQ(s.GetJob(kAnon, "job-1-1")->shards_total(), 4);
  s.Tick();  // the finished job's summary is written once
  auto again = (*store)->Load();
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_TRUE((*again)[1].summary.has_value());
  EXPECT_EQ((*again)[1].summary->state(), v1::JOB_CANCELLED);
  EXPECT_EQ(s.GetJob(kAnon, "job-1-2")->spec().n_heads(), 2);
  // The migrated store takes new jobs with request ids.
  const std::string job = s.Submit(kAnon, testing::SmallJob(1), "r1").value();
  EXPECT_EQ(s.Submit(kAnon, testing::SmallJob(1), "r1").value(), job);
}

TEST(StateStoreTest, ADeletedJobIsGoneFromTheStore) {
  const std::string dir = TempDir("lensgrid-store-delete");
  FakeClock clock;
  std::string kept, deleted;
  {
    auto store = StateStore::Open(dir);
    ASSERT_TRUE(store.ok()) << store.status();
    Scheduler s(&clock, {}, store->get());
    kept = s.Submit(kAnon, testing::SmallJob(1)).value();
    deleted = s.Submit(kAnon, testing::SmallJob(1), "req").value();
    v1::RegisterRequest r;
    r.set_model_id("m");
    r.set_weights_sha256("sha");
    const std::string w = s.RegisterWorker(r).value();
    while (auto l = s.Lease(w).value()) {
      ASSERT_TRUE(*s.Complete(w, l->lease_id(), testing::ResultFor(l->shard())));
    }
    ASSERT_TRUE(s.Delete(kAnon, deleted).ok());
  }
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((std::filesystem::path(dir) / "coordinator.db").c_str(), &db),
              SQLITE_OK);
    for (const char* table : {"jobs", "results", "events"}) {
      sqlite3_stmt* q = nullptr;
      ASSERT_EQ(sqlite3_prepare_v2(
                    db,
                    absl::StrCat("SELECT count(*) FROM ", table, " WHERE job_id = '", deleted, "'")
                        .c_str(),
                    -1, &q, nullptr),
                SQLITE_OK);
      ASSERT_EQ(sqlite3_step(q), SQLITE_ROW);
      EXPECT_EQ(sqlite3_column_int(q, 0), 0) << table;
      sqlite3_finalize(q);
    }
    sqlite3_close(db);
  }
  auto store = StateStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  auto jobs = (*store)->Load();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ((*jobs)[0].job_id, kept);
  EXPECT_GT((*jobs)[0].finished_ms, 0);
}

TEST(StateStoreTest, AFinishedJobIsKeptAsASummaryAndReadOnDemand) {
  const std::string dir = TempDir("lensgrid-store-summary");
  FakeClock clock;
  auto store = StateStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  SchedulerOptions o;
  o.summarize_after_ms = 5000;
  Scheduler s(&clock, o, store->get());
  const Caller alice{"alice", Role::kSubmitter};
  const std::string job = s.Submit(alice, testing::SmallJob(2), "req").value();
  v1::RegisterRequest r;
  r.set_model_id("m");
  r.set_weights_sha256("sha");
  const std::string w = s.RegisterWorker(r).value();
  std::vector<v1::ShardLease> leases;
  while (auto l = s.Lease(w).value()) leases.push_back(*l);
  for (const auto& l : leases) ASSERT_TRUE(*s.Complete(w, l.lease_id(), ResultFor(l.shard())));
  const v1::JobStatus whole = s.GetJob(alice, job).value();
  bool final = false;
  const size_t n_events = s.EventsAfter(alice, job, 0, &final)->size();
  clock.Advance(5000);
  s.Tick();
  // Listed from its summary: no spec.
  std::string next;
  const std::vector<v1::JobStatus> listed = s.ListJobs(alice, {}, &next).value();
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_FALSE(listed[0].has_spec());
  EXPECT_EQ(listed[0].state(), v1::JOB_SUCCEEDED);
  EXPECT_EQ(listed[0].shards_done(), 8);
  EXPECT_EQ(listed[0].owner(), "alice");
  EXPECT_EQ(listed[0].request_id(), "req");
  // Everything else is read from the store, as it was.
  const v1::JobStatus read = s.GetJob(alice, job).value();
  EXPECT_EQ(read.spec().SerializeAsString(), whole.spec().SerializeAsString());
  EXPECT_EQ(read.n_prompts(), 2);
  EXPECT_EQ(read.last_event_seq(), whole.last_event_seq());
  EXPECT_EQ(read.finished_unix_ms(), whole.finished_unix_ms());
  auto result = s.GetResult(alice, job);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->tensors.back().values, (std::vector<float>{5, 6, 7, 8}));
  EXPECT_EQ(s.EventsAfter(alice, job, 0, &final)->size(), n_events);
  EXPECT_TRUE(final);
  EXPECT_EQ(s.EventsAfter(alice, job, 3, &final)->size(), n_events - 3);
  // Still owned, still idempotent, still deletable; a late completion is dropped.
  EXPECT_EQ(s.GetJob(Caller{"bob", Role::kSubmitter}, job).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(s.Submit(alice, testing::SmallJob(2), "req").value(), job);
  EXPECT_FALSE(*s.Complete(w, leases[0].lease_id(), ResultFor(leases[0].shard())));
  EXPECT_TRUE(s.Delete(alice, job).ok());
  EXPECT_EQ(s.GetJob(alice, job).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.EventsAfter(alice, job, 0, &final).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace lensgrid::service
