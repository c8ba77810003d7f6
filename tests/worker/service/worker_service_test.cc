// The gRPC adapter over a fake backend, through an in-process channel (no
// sockets): readiness, chunked replies, status pass-through, a full queue and
// cancellation.
#include "worker/worker_service.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"
#include "client/worker_client.h"
#include "common/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lensgrid {
namespace {

class FakeBackend : public WorkerBackend {
 public:
  FakeBackend() { info_.set_weights_sha256("abc"); }
  const v1::ModelInfo& Info() const override { return info_; }
  absl::StatusOr<v1::TokenizeResponse> Tokenize(const v1::TokenizeRequest& r,
                                                const CancelCheck&) const override {
    if (r.texts_size() == 0) return absl::InvalidArgumentError("no texts");
    v1::TokenizeResponse out;
    out.add_tokens()->add_ids(static_cast<int64_t>(r.texts(0).size()));
    return out;
  }
  absl::StatusOr<v1::DetokenizeResponse> Detokenize(const v1::DetokenizeRequest&) const override {
    return absl::UnimplementedError("fake");
  }
  // input.texts[0]: "block" waits for `release` or cancellation; "fail" fails;
  // otherwise a reply of one tensor of `n` floats, n = the text's length *
  // 1000.
  absl::StatusOr<RunResult> RunWithCache(const v1::RunWithCacheRequest& r,
                                         const CancelCheck& cancelled) const override {
    const std::string& text = r.input().texts(0);
    if (text == "fail") return absl::NotFoundError("unknown hook name \"x\"");
    if (text == "block") {
      started.Notify();
      while (!release.HasBeenNotified()) {
        if (cancelled()) {
          saw_cancel = true;
          return absl::CancelledError("run cancelled");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    auto data = std::make_shared<std::vector<float>>(text.size() * 1000);
    for (size_t i = 0; i < data->size(); ++i) (*data)[i] = static_cast<float>(i);
    RunResult result;
    TensorBytes t{"x",
                  TensorDType::kF32,
                  {static_cast<int64_t>(data->size())},
                  {reinterpret_cast<const uint8_t*>(data->data()), data->size() * 4},
                  data};
    result.tensors.push_back(t);
    ChunkCursor cursor(result.tensors);
    for (auto& m : cursor.Metas()) *result.header.add_tensors() = m;
    return result;
  }
  absl::StatusOr<RunResult> RunWithInterventions(const v1::RunWithInterventionsRequest&,
                                                 const CancelCheck&) const override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<RunResult> RunShard(const v1::RunShardRequest&,
                                     const CancelCheck&) const override {
    return absl::UnimplementedError("fake");
  }

  // max_new_tokens messages, or with max_new_tokens -1 one message, then
  // waits for cancellation.
  absl::Status Generate(const v1::GenerateRequest& r, const CancelCheck& cancelled,
                        GenerateSink* sink) const override {
    if (r.max_new_tokens() == 0) return absl::InvalidArgumentError("max_new_tokens must be > 0");
    const int n = r.max_new_tokens() < 0 ? 1 : r.max_new_tokens();
    for (int i = 0; i < n; ++i) {
      v1::GenerateResponse m;
      m.set_step(i);
      m.add_tokens(100 + i);
      sink->Send(std::move(m));
    }
    if (r.max_new_tokens() > 0) return absl::OkStatus();
    while (!cancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    generate_cancelled.Notify();
    return absl::CancelledError("generate cancelled");
  }

  mutable absl::Notification started, release, generate_cancelled;
  mutable std::atomic<bool> saw_cancel{false};

 private:
  v1::ModelInfo info_;
};

class WorkerServiceTest : public ::testing::Test {
 protected:
  void Start(int max_pending, const Authorizer* auth = nullptr) {
    executor_ =
        std::make_unique<Executor>(Executor::Options{.threads = 1, .max_pending = max_pending});
    service_ = std::make_unique<WorkerService>(
        executor_.get(),
        WorkerService::Options{.chunk_bytes = 1000, .log_requests = false, .auth = auth});
    grpc::ServerBuilder builder;
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    client_ = std::make_unique<WorkerClient>(server_->InProcessChannel(grpc::ChannelArguments()),
                                             WorkerClient::Options());
  }
  void TearDown() override {
    backend_->release.Notify();
    server_->Shutdown();
    executor_.reset();
  }
  static v1::RunWithCacheRequest Text(const std::string& text) {
    v1::RunWithCacheRequest r;
    r.mutable_input()->add_texts(text);
    return r;
  }

  std::shared_ptr<FakeBackend> backend_ = std::make_shared<FakeBackend>();
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<WorkerService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<WorkerClient> client_;
};

TEST_F(WorkerServiceTest, UnavailableUntilTheBackendIsSet) {
  Start(4);
  EXPECT_EQ(client_->GetModelInfo().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(client_->RunWithCache(Text("a")).status().code(), absl::StatusCode::kUnavailable);
  service_->SetBackend(backend_);
  EXPECT_EQ(client_->GetModelInfo()->weights_sha256(), "abc");
}

TEST_F(WorkerServiceTest, TokensAreCheckedBeforeAnyWork) {
  const Authorizer auth(std::vector<TokenEntry>{{"alice", Role::kSubmitter, Sha256Hex("s-token")},
                                                {"pod", Role::kWorker, Sha256Hex("w-token")}});
  Start(4, &auth);
  service_->SetBackend(backend_);
  auto stub = v1::Worker::NewStub(server_->InProcessChannel(grpc::ChannelArguments()));
  const auto info = [&](const char* token) {
    grpc::ClientContext ctx;
    if (token != nullptr) ctx.AddMetadata("authorization", std::string("Bearer ") + token);
    v1::ModelInfo reply;
    return stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &reply).error_code();
  };
  EXPECT_EQ(info(nullptr), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(info("nope"), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(info("w-token"), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(info("s-token"), grpc::StatusCode::OK);
  // A worker-role token's run is refused before the backend sees it.
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Bearer w-token");
  auto reader = stub->RunWithCache(&ctx, Text("block"));
  v1::RunResponse response;
  while (reader->Read(&response)) {
  }
  const grpc::Status refused = reader->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(refused.error_message(), ::testing::HasSubstr("needs role submitter or admin"));
  EXPECT_FALSE(backend_->started.HasBeenNotified());
  grpc::ClientContext tokenize_ctx;
  v1::TokenizeResponse tokens;
  EXPECT_EQ(stub->Tokenize(&tokenize_ctx, v1::TokenizeRequest(), &tokens).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(WorkerServiceTest, StreamsChunksThatReassemble) {
  Start(4);
  service_->SetBackend(backend_);
  auto reply = client_->RunWithCache(Text("abcdefg"));  // 7000 floats in 1000-byte chunks
  ASSERT_TRUE(reply.ok()) << reply.status();
  const WireTensor* x = reply->Find("x");
  ASSERT_NE(x, nullptr);
  ASSERT_EQ(x->data.size(), 28000u);
  const float* f = reinterpret_cast<const float*>(x->data.data());
  for (int i = 0; i < 7000; ++i) ASSERT_EQ(f[i], static_cast<float>(i));
}

TEST_F(WorkerServiceTest, BackendStatusReachesTheClient) {
  Start(4);
  service_->SetBackend(backend_);
  auto reply = client_->RunWithCache(Text("fail"));
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(reply.status().message(), ::testing::HasSubstr("unknown hook name"));
  EXPECT_EQ(client_->Tokenize(v1::TokenizeRequest()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(WorkerServiceTest, FullQueueIsUnavailableAndCancelFreesIt) {
  Start(1);
  service_->SetBackend(backend_);
  grpc::ClientContext ctx;
  auto stub = v1::Worker::NewStub(server_->InProcessChannel(grpc::ChannelArguments()));
  auto reader = stub->RunWithCache(&ctx, Text("block"));
  backend_->started.WaitForNotification();
  auto busy = client_->RunWithCache(Text("a"));
  EXPECT_EQ(busy.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(busy.status().message(), ::testing::HasSubstr("--max-queue 1"));
  ctx.TryCancel();
  v1::RunResponse response;
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The slot frees once the cancelled run returns.
  absl::StatusOr<RunReply> after;
  for (int i = 0; i < 1000; ++i) {
    after = client_->RunWithCache(Text("a"));
    if (after.status().code() != absl::StatusCode::kUnavailable) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(after.ok()) << after.status();
  EXPECT_TRUE(backend_->saw_cancel);  // it stopped, not released
}

TEST(RequestLogLineTest, NamesMethodTokensBytesMsAndStatus) {
  EXPECT_EQ(RequestLogLine("RunWithCache", 12, 4096, 3.26, absl::OkStatus()),
            "RunWithCache tokens=12 bytes=4096 ms=3.3 status=OK");
  EXPECT_EQ(RequestLogLine("Tokenize", 0, 0, 0, absl::UnavailableError("busy")),
            "Tokenize tokens=0 bytes=0 ms=0.0 status=UNAVAILABLE: busy");
}

TEST_F(WorkerServiceTest, GenerateStreamsEveryStepThenTheStatus) {
  Start(4);
  service_->SetBackend(backend_);
  v1::GenerateRequest request;
  request.set_max_new_tokens(25);
  auto reply = client_->Generate(request);
  ASSERT_TRUE(reply.ok()) << reply.status();
  ASSERT_EQ(reply->steps.size(), 25u);
  for (int i = 0; i < 25; ++i) EXPECT_EQ(reply->Tokens(0)[i], 100 + i);
  request.set_max_new_tokens(0);
  auto bad = client_->Generate(request);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), ::testing::HasSubstr("max_new_tokens"));
  // A backend without weights or generation says so.
  EXPECT_EQ(client_->GetWeights(v1::GetWeightsRequest()).status().code(),
            absl::StatusCode::kUnimplemented);
}

TEST_F(WorkerServiceTest, CancellingAGenerateStopsTheBackend) {
  Start(1);
  service_->SetBackend(backend_);
  auto stub = v1::Worker::NewStub(server_->InProcessChannel(grpc::ChannelArguments()));
  grpc::ClientContext ctx;
  v1::GenerateRequest request;
  request.set_max_new_tokens(-1);
  auto reader = stub->Generate(&ctx, request);
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.tokens(0), 100);
  ctx.TryCancel();
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  backend_->generate_cancelled.WaitForNotification();
}

TEST_F(WorkerServiceTest, GenerateAndGetWeightsAreAuthorizedFirst) {
  const Authorizer auth(std::vector<TokenEntry>{{"pod", Role::kWorker, Sha256Hex("w-token")}});
  Start(4, &auth);
  service_->SetBackend(backend_);
  auto stub = v1::Worker::NewStub(server_->InProcessChannel(grpc::ChannelArguments()));
  {
    grpc::ClientContext ctx;
    v1::GenerateRequest request;
    request.set_max_new_tokens(-1);  // would wait for a cancel if it ran
    auto reader = stub->Generate(&ctx, request);
    v1::GenerateResponse response;
    EXPECT_FALSE(reader->Read(&response));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer w-token");
    auto reader = stub->GetWeights(&ctx, v1::GetWeightsRequest());
    v1::RunResponse response;
    EXPECT_FALSE(reader->Read(&response));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
}

}  // namespace
}  // namespace lensgrid
