// The real lensgrid-coordinator process on loopback, driven by fake workers
// written here (C++ gRPC clients, no model): a job runs to its merged result;
// kill -9 and a restart on the same state dir resume without recomputing; an
// expired lease is re-queued; a malformed result is retried elsewhere; cancel
// stops the job at once; WatchJob resumes from an event number.
#include <fcntl.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <thread>

#include "gtest/gtest.h"
#include "lensgrid/v1/coordinator.grpc.pb.h"
#include "tests/service/test_jobs.h"

// Reads the deprecated name fields on purpose: what older clients send.
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

extern char** environ;

namespace lensgrid::service {
namespace {

using testing::ResultFor;
using testing::SmallJob;

// A coordinator child process; killed (SIGKILL) when destroyed.
class Coordinator {
 public:
  Coordinator(const std::string& state_dir, std::vector<std::string> extra = {}) {
    const char* bin_dir = std::getenv("LENSGRID_BINARY_DIR");
    const std::string bin =
        std::string(bin_dir ? bin_dir : "build") + "/service/lensgrid-coordinator";
    std::vector<std::string> args = {bin, "--listen", "127.0.0.1:0", "--state-dir", state_dir};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int out[2];
    if (pipe(out) != 0) return;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    if (posix_spawn(&pid_, bin.c_str(), &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    // "listening on 127.0.0.1:PORT ..." within 20 s.
    std::string line;
    pollfd p{out[0], POLLIN, 0};
    while (pid_ > 0 && line.find('\n') == std::string::npos && poll(&p, 1, 20000) > 0) {
      char buf[256];
      const ssize_t n = read(out[0], buf, sizeof(buf));
      if (n <= 0) break;
      line.append(buf, n);
    }
    close(out[0]);
    const std::string prefix = "listening on ";
    if (line.rfind(prefix, 0) == 0)
      address_ = line.substr(prefix.size(), line.find(' ', prefix.size()) - prefix.size());
    if (!address_.empty()) {
      auto channel = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
      stub_ = v1::Coordinator::NewStub(channel);
      queue_ = v1::WorkQueue::NewStub(channel);  // both APIs on --listen
    }
  }
  ~Coordinator() { Kill(); }
  void Kill() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  bool ok() const { return stub_ != nullptr; }
  const std::string& address() const { return address_; }
  v1::Coordinator::Stub* stub() { return stub_.get(); }
  v1::WorkQueue::Stub* queue() { return queue_.get(); }

 private:
  pid_t pid_ = -1;
  std::string address_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
  std::unique_ptr<v1::WorkQueue::Stub> queue_;
};

std::unique_ptr<grpc::ClientContext> Ctx(int seconds = 20) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return ctx;
}

// A fake worker: registers, leases, completes with computed values.
struct FakeWorker {
  v1::WorkQueue::Stub* stub;
  std::string id;

  explicit FakeWorker(v1::WorkQueue::Stub* s) : stub(s) { Register(); }
  void Register() {
    v1::RegisterRequest req;
    req.set_model_id("m");
    req.set_weights_sha256("sha");
    req.set_name("fake");
    v1::RegisterResponse resp;
    grpc::Status s = stub->Register(Ctx().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    id = resp.worker_id();
  }
  // Long-polls up to `wait_ms`; re-registers on NOT_FOUND.
  std::optional<v1::ShardLease> Lease(int64_t wait_ms = 0) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      v1::LeaseShardRequest req;
      req.set_worker_id(id);
      req.set_wait_ms(wait_ms);
      v1::LeaseShardResponse resp;
      grpc::Status s = stub->LeaseShard(Ctx().get(), req, &resp);
      if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
        Register();
        continue;
      }
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (s.ok() && resp.has_shard()) return resp.lease();
      return std::nullopt;
    }
    return std::nullopt;
  }
  grpc::Status Complete(const std::string& lease_id, const std::vector<Array>& tensors,
                        v1::CompleteShardResponse* resp) {
    auto ctx = Ctx();
    auto writer = stub->CompleteShard(ctx.get(), resp);
    v1::CompleteShardRequest req;
    req.mutable_header()->set_worker_id(id);
    req.mutable_header()->set_lease_id(lease_id);
    writer->Write(req);
    for (const Array& a : tensors) {
      v1::CompleteShardRequest chunk;
      v1::TensorChunk* c = chunk.mutable_chunk();
      c->set_name(a.name);
      c->set_dtype(v1::F32);
      for (int64_t d : a.shape) c->add_shape(d);
      c->set_total_bytes(a.values.size() * sizeof(float));
      c->set_offset(0);
      c->set_data(std::string(reinterpret_cast<const char*>(a.values.data()),
                              a.values.size() * sizeof(float)));
      writer->Write(chunk);
    }
    writer->WritesDone();
    return writer->Finish();
  }
  bool CompleteOk(const v1::ShardLease& lease) {
    v1::CompleteShardResponse resp;
    grpc::Status s = Complete(lease.lease_id(), ResultFor(lease.shard()), &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return s.ok() && resp.accepted();
  }
};

std::string StateDir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / (name + "-" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  return dir.string();
}

std::string Submit(v1::Coordinator::Stub* stub, const v1::JobSpec& spec) {
  v1::SubmitJobRequest req;
  *req.mutable_spec() = spec;
  v1::SubmitJobResponse resp;
  grpc::Status s = stub->SubmitJob(Ctx().get(), req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return resp.job_id();
}

std::vector<v1::JobEvent> Watch(v1::Coordinator::Stub* stub, const std::string& job,
                                int64_t after) {
  v1::WatchJobRequest req;
  req.set_job_id(job);
  req.set_after_seq(after);
  auto ctx = Ctx();
  auto reader = stub->WatchJob(ctx.get(), req);
  std::vector<v1::JobEvent> events;
  v1::JobEvent e;
  while (reader->Read(&e)) events.push_back(e);
  grpc::Status s = reader->Finish();
  EXPECT_TRUE(s.ok()) << s.error_message();
  return events;
}

v1::JobStatus Job(v1::Coordinator::Stub* stub, const std::string& job) {
  v1::GetJobRequest req;
  req.set_job_id(job);
  v1::JobStatus status;
  EXPECT_TRUE(stub->GetJob(Ctx().get(), req, &status).ok());
  return status;
}

TEST(CoordinatorIntegrationTest, KillAndRestartResumesWithoutRecomputing) {
  const std::string dir = StateDir("lensgrid-coord-restart");
  auto coord = std::make_unique<Coordinator>(dir);
  ASSERT_TRUE(coord->ok());
  const std::string job = Submit(coord->stub(), SmallJob(2));  // 8 shards
  int computed = 0;
  {
    FakeWorker w(coord->queue());
    for (int i = 0; i < 3; ++i) {
      auto lease = w.Lease();
      ASSERT_TRUE(lease.has_value());
      ASSERT_TRUE(w.CompleteOk(*lease));
      ++computed;
    }
    ASSERT_TRUE(w.Lease().has_value());  // a fourth, lost with the coordinator
  }
  coord->Kill();
  coord = std::make_unique<Coordinator>(dir);
  ASSERT_TRUE(coord->ok());
  EXPECT_EQ(Job(coord->stub(), job).shards_done(), 3);
  FakeWorker w(coord->queue());
  while (auto lease = w.Lease()) {
    ASSERT_TRUE(w.CompleteOk(*lease));
    ++computed;
  }
  EXPECT_EQ(computed, 8);  // each shard computed once
  EXPECT_EQ(Job(coord->stub(), job).state(), v1::JOB_SUCCEEDED);

  // The streamed result: header, then the merged tensors.
  v1::GetResultRequest req;
  req.set_job_id(job);
  auto ctx = Ctx();
  auto reader = coord->stub()->GetResult(ctx.get(), req);
  v1::GetResultResponse part;
  ASSERT_TRUE(reader->Read(&part));
  ASSERT_TRUE(part.has_header());
  EXPECT_EQ(part.header().grids(0).name(), "delta");
  std::map<std::string, std::string> bytes;
  while (reader->Read(&part)) bytes[part.chunk().name()] += part.chunk().data();
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_EQ(bytes["delta"].size(), 4 * sizeof(float));
  std::vector<float> mean(4);
  std::memcpy(mean.data(), bytes["delta"].data(), bytes["delta"].size());
  EXPECT_EQ(mean, (std::vector<float>{5, 6, 7, 8}));
  EXPECT_EQ(bytes["delta.per_prompt"].size(), 8 * sizeof(float));

  // Watch from the start and resumed from event 4: numbered without gaps,
  // across the restart, and the resumed stream is the tail of the full one.
  auto all = Watch(coord->stub(), job, 0);
  ASSERT_GT(all.size(), 8u);
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i].seq(), static_cast<int64_t>(i) + 1);
  EXPECT_EQ(all.back().kind(), v1::JobEvent::JOB_SUCCEEDED);
  auto tail = Watch(coord->stub(), job, 4);
  ASSERT_EQ(tail.size(), all.size() - 4);
  for (size_t i = 0; i < tail.size(); ++i)
    EXPECT_EQ(tail[i].SerializeAsString(), all[i + 4].SerializeAsString());
  std::filesystem::remove_all(dir);
}

TEST(CoordinatorIntegrationTest, ExpiredLeaseIsRequeuedToALongPollingWorker) {
  const std::string dir = StateDir("lensgrid-coord-expiry");
  Coordinator coord(dir, {"--initial-lease-ms", "300", "--min-lease-ms", "300"});
  ASSERT_TRUE(coord.ok());
  v1::JobSpec spec = SmallJob(1);
  spec.set_components_per_shard(4);  // one shard
  const std::string job = Submit(coord.stub(), spec);
  FakeWorker silent(coord.queue()), good(coord.queue());
  auto first = silent.Lease();
  ASSERT_TRUE(first.has_value());
  std::optional<v1::ShardLease> second;
  for (int i = 0; i < 10 && !second; ++i) second = good.Lease(/*wait_ms=*/2000);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->shard_id(), first->shard_id());
  EXPECT_EQ(second->attempt(), 2);
  EXPECT_TRUE(good.CompleteOk(*second));
  EXPECT_FALSE(silent.CompleteOk(*first));  // late duplicate: dropped
  EXPECT_EQ(Job(coord.stub(), job).state(), v1::JOB_SUCCEEDED);
  std::filesystem::remove_all(dir);
}

TEST(CoordinatorIntegrationTest, MalformedResultIsRetriedElsewhere) {
  const std::string dir = StateDir("lensgrid-coord-malformed");
  Coordinator coord(dir);
  ASSERT_TRUE(coord.ok());
  v1::JobSpec spec = SmallJob(1);
  spec.set_components_per_shard(4);  // one shard
  const std::string job = Submit(coord.stub(), spec);
  FakeWorker bad(coord.queue()), good(coord.queue());
  auto lease = bad.Lease();
  ASSERT_TRUE(lease.has_value());
  std::vector<Array> wrong = ResultFor(lease->shard());
  wrong.pop_back();
  v1::CompleteShardResponse resp;
  EXPECT_EQ(bad.Complete(lease->lease_id(), wrong, &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_FALSE(bad.Lease().has_value());  // not back to the worker that failed it
  std::optional<v1::ShardLease> retry;
  for (int i = 0; i < 10 && !retry; ++i) retry = good.Lease(/*wait_ms=*/2000);
  ASSERT_TRUE(retry.has_value());
  EXPECT_EQ(retry->shard_id(), lease->shard_id());
  EXPECT_TRUE(good.CompleteOk(*retry));
  auto events = Watch(coord.stub(), job, 0);
  bool retried = false;
  for (const auto& e : events) {
    retried |= e.kind() == v1::JobEvent::SHARD_RETRIED &&
               e.message().find("malformed") != std::string::npos;
  }
  EXPECT_TRUE(retried);
  std::filesystem::remove_all(dir);
}

TEST(CoordinatorIntegrationTest, CancelStopsHandingOutShardsAndTellsWorkers) {
  const std::string dir = StateDir("lensgrid-coord-cancel");
  Coordinator coord(dir);
  ASSERT_TRUE(coord.ok());
  const std::string job = Submit(coord.stub(), SmallJob(2));
  FakeWorker w(coord.queue());
  auto lease = w.Lease();
  ASSERT_TRUE(lease.has_value());
  v1::CancelJobRequest cancel;
  cancel.set_job_id(job);
  v1::JobStatus status;
  ASSERT_TRUE(coord.stub()->CancelJob(Ctx().get(), cancel, &status).ok());
  EXPECT_EQ(status.state(), v1::JOB_CANCELLED);
  EXPECT_FALSE(w.Lease().has_value());
  v1::HeartbeatRequest hb;
  hb.set_worker_id(w.id);
  hb.add_lease_ids(lease->lease_id());
  v1::HeartbeatResponse hb_resp;
  ASSERT_TRUE(coord.queue()->Heartbeat(Ctx().get(), hb, &hb_resp).ok());
  ASSERT_EQ(hb_resp.cancelled_lease_ids_size(), 1);
  EXPECT_EQ(Watch(coord.stub(), job, 0).back().kind(), v1::JobEvent::JOB_CANCELLED);
  // Bad requests get clear codes, and the server stays up.
  v1::SubmitJobRequest bad;
  bad.mutable_spec()->set_method_name("ablate-everything");
  v1::SubmitJobResponse bad_resp;
  EXPECT_EQ(coord.stub()->SubmitJob(Ctx().get(), bad, &bad_resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::GetJobRequest missing;
  missing.set_job_id("nope");
  EXPECT_EQ(coord.stub()->GetJob(Ctx().get(), missing, &status).error_code(),
            grpc::StatusCode::NOT_FOUND);
  std::filesystem::remove_all(dir);
}

TEST(CoordinatorIntegrationTest, WatchResumedFromItsLastEventMissesNothing) {
  const std::string dir = StateDir("lensgrid-coord-watch");
  Coordinator coord(dir);
  ASSERT_TRUE(coord.ok());
  const std::string job = Submit(coord.stub(), SmallJob(2));  // 8 shards
  FakeWorker w(coord.queue());
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(w.CompleteOk(*w.Lease()));
  // Events so far: SUBMITTED, WORKER_JOINED, 2 x SHARD_DONE.
  std::vector<v1::JobEvent> seen;
  {
    v1::WatchJobRequest req;
    req.set_job_id(job);
    auto ctx = Ctx();
    auto reader = coord.stub()->WatchJob(ctx.get(), req);
    v1::JobEvent e;
    while (seen.size() < 4 && reader->Read(&e)) seen.push_back(e);
    ASSERT_EQ(seen.size(), 4u);
    ASSERT_TRUE(w.CompleteOk(*w.Lease()));  // arrives on the live, parked stream
    ASSERT_TRUE(reader->Read(&e));
    seen.push_back(e);
    EXPECT_EQ(e.kind(), v1::JobEvent::SHARD_DONE);
    ctx->TryCancel();  // the client drops the stream mid-job
    while (reader->Read(&e)) {
    }
    reader->Finish();
  }
  while (auto lease = w.Lease()) ASSERT_TRUE(w.CompleteOk(*lease));
  for (const auto& e : Watch(coord.stub(), job, seen.back().seq())) seen.push_back(e);
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i].seq(), static_cast<int64_t>(i) + 1);
  EXPECT_EQ(seen.back().kind(), v1::JobEvent::JOB_SUCCEEDED);
  EXPECT_EQ(seen.back().shards_done(), 8);
  std::filesystem::remove_all(dir);
}

TEST(CoordinatorIntegrationTest, ServesHealth) {
  const std::string dir = StateDir("lensgrid-coord-health");
  Coordinator coord(dir);
  ASSERT_TRUE(coord.ok());
  // grpc.health.v1.Health/Check with an empty request (service ""), raw bytes:
  // the reply is HealthCheckResponse{status: SERVING (1)} = 08 01.
  grpc::GenericStub stub(grpc::CreateChannel(coord.address(), grpc::InsecureChannelCredentials()));
  grpc::ByteBuffer request, response;
  grpc::Slice empty("");
  request = grpc::ByteBuffer(&empty, 1);
  auto ctx = Ctx();
  std::promise<grpc::Status> done;
  stub.UnaryCall(ctx.get(), "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                 &response, [&](grpc::Status s) { done.set_value(s); });
  grpc::Status s = done.get_future().get();
  ASSERT_TRUE(s.ok()) << s.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const auto& sl : slices)
    bytes += std::string(reinterpret_cast<const char*>(sl.begin()), sl.size());
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace lensgrid::service
