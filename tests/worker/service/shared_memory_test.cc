// The same-host shared-memory path (worker/shared_memory.h) and the raw
// chunk buffers (worker/wire_buffers.h): name, layout and peer rules, the
// region checks against real POSIX objects, and the service end to end with a
// fake backend (the real model's bit equality is in worker_core_test).
#include "worker/shared_memory.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/attached_shared_memory.h"
#include "client/worker_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/wire_buffers.h"
#include "worker/worker_service.h"

namespace lensgrid {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A POSIX shared-memory object for one test, removed after it.
class ShmObject {
 public:
  ShmObject(uint64_t size, mode_t mode = 0600) {
    std::random_device random;
    name_ = absl::StrFormat("/lensgrid-test-%08x%08x", random(), random());
    const int fd = shm_open(name_.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    EXPECT_GE(fd, 0) << std::strerror(errno);
    EXPECT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
    EXPECT_EQ(fchmod(fd, mode), 0);
    close(fd);
  }
  ~ShmObject() { shm_unlink(name_.c_str()); }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

v1::SharedMemoryTarget Target(const std::string& id, uint64_t offset = 0, uint64_t size = 0) {
  v1::SharedMemoryTarget t;
  t.set_region_id(id);
  t.set_offset(offset);
  t.set_byte_size(size);
  return t;
}

TEST(SharedMemoryNameTest, OnlyTheLensgridForm) {
  EXPECT_TRUE(ValidateSharedMemoryName("/lensgrid-0a1B._-z").ok());
  EXPECT_THAT(ValidateSharedMemoryName("/psm_123").message(), HasSubstr("must start with"));
  EXPECT_THAT(ValidateSharedMemoryName("/lensgrid-").message(), HasSubstr("1-200 characters"));
  EXPECT_THAT(ValidateSharedMemoryName("/lensgrid-a/b").message(), HasSubstr("[A-Za-z0-9._-]"));
  EXPECT_THAT(ValidateSharedMemoryName("/lensgrid-" + std::string(201, 'a')).message(),
              HasSubstr("has 201"));
  EXPECT_EQ(ValidateSharedMemoryName("lensgrid-x").code(), absl::StatusCode::kInvalidArgument);
}

TEST(SharedMemoryLayoutTest, AlignedInOrderAndBounded) {
  EXPECT_THAT(*LayoutInRegion({10, 100, 0, 64}, 0, 1000), ElementsAre(0, 64, 192, 192));
  EXPECT_THAT(*LayoutInRegion({8, 8}, 100, 200), ElementsAre(128, 192));
  absl::StatusOr<std::vector<uint64_t>> full = LayoutInRegion({100, 100}, 0, 150);
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(full.status().message(), HasSubstr("needs 228 bytes"));
  EXPECT_THAT(full.status().message(), HasSubstr("has 150"));
  EXPECT_TRUE(LayoutInRegion({}, 0, 0).ok());
}

TEST(SharedMemoryPeerTest, OnlyThisHost) {
  EXPECT_TRUE(IsLocalPeer("ipv4:127.0.0.1:5000"));
  EXPECT_TRUE(IsLocalPeer("ipv6:[::1]:5000"));
  EXPECT_TRUE(IsLocalPeer("ipv6:%5B::1%5D:5000"));
  EXPECT_TRUE(IsLocalPeer("unix:/tmp/worker.sock"));
  EXPECT_FALSE(IsLocalPeer("unknown"));  // an in-process channel: no address to judge
  EXPECT_FALSE(IsLocalPeer("ipv4:10.0.0.7:5000"));
  EXPECT_FALSE(IsLocalPeer("ipv6:[2001:db8::1]:5000"));
  EXPECT_FALSE(IsLocalPeer(""));
}

TEST(SharedMemoryRegionsTest, AttachChecksTheObject) {
  SharedMemoryRegions regions({.max_regions = 2});
  ShmObject good(4096);
  absl::StatusOr<SharedMemoryRegions::Attached> a = regions.Attach(good.name(), 4096, "alice");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->region_id.size(), 32u);
  EXPECT_EQ(a->byte_size, 4096u);

  EXPECT_EQ(regions.Attach("/lensgrid-nosuchobject", 10, "alice").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(regions.Attach(good.name(), 0, "alice").status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::Status too_big = regions.Attach(good.name(), 8192, "alice").status();
  EXPECT_EQ(too_big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_big.message(), HasSubstr("holds 4096 bytes; asked to map 8192"));
  ShmObject shared_write(4096, 0620);
  absl::Status writable = regions.Attach(shared_write.name(), 4096, "alice").status();
  EXPECT_EQ(writable.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(writable.message(), HasSubstr("writable by group or others"));

  ShmObject second(4096);
  ASSERT_TRUE(regions.Attach(second.name(), 4096, "bob").ok());
  EXPECT_EQ(regions.Attach(good.name(), 4096, "carol").status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(regions.size(), 2);
  EXPECT_TRUE(regions.Detach(a->region_id));
  EXPECT_FALSE(regions.Detach(a->region_id));
  EXPECT_EQ(regions.size(), 1);

  SharedMemoryRegions none({.max_regions = 0});
  absl::Status off = none.Attach(good.name(), 4096, "alice").status();
  EXPECT_EQ(off.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(off.message(), HasSubstr("--max-shared-memory-regions 0"));
}

TEST(SharedMemoryRegionsTest, ReserveChecksOwnerBoundsAndOverlap) {
  SharedMemoryRegions regions({});
  ShmObject object(4096);
  const std::string id = regions.Attach(object.name(), 4096, "alice")->region_id;

  EXPECT_EQ(regions.Reserve(Target(id), "bob").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(regions.Reserve(Target("0123"), "alice").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(regions.Reserve(Target(id, 4000, 200), "alice").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(regions.Reserve(Target(id, 5000), "alice").status().code(),
            absl::StatusCode::kInvalidArgument);

  auto first = regions.Reserve(Target(id, 0, 2048), "alice");
  ASSERT_TRUE(first.ok());
  EXPECT_EQ((*first)->end(), 2048u);
  absl::Status overlap = regions.Reserve(Target(id, 1024, 2048), "alice").status();
  EXPECT_EQ(overlap.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(overlap.message(), HasSubstr("another call is writing"));
  auto second = regions.Reserve(Target(id, 2048), "alice");  // to the end: no overlap
  ASSERT_TRUE(second.ok());
  EXPECT_EQ((*second)->end(), 4096u);
  first->reset();
  EXPECT_TRUE(regions.Reserve(Target(id, 0, 2048), "alice").ok());

  // A detached region stays mapped for the write in progress.
  EXPECT_TRUE(regions.Detach(id));
  std::memset((*second)->base() + 2048, 7, 2048);
  EXPECT_EQ(regions.Reserve(Target(id, 0, 10), "alice").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(SharedMemoryRegionsTest, WritesTensorsAtTheirOffsets) {
  SharedMemoryRegions regions({});
  ShmObject object(1024);
  const std::string id = regions.Attach(object.name(), 1024, "alice")->region_id;
  auto writer = regions.Reserve(Target(id, 100, 500), "alice");
  ASSERT_TRUE(writer.ok());

  auto a = std::make_shared<std::vector<float>>(std::vector<float>{1.5f, -2.0f, 3.25f});
  auto b = std::make_shared<std::vector<int64_t>>(std::vector<int64_t>{7, 8});
  std::vector<TensorBytes> tensors = {
      {"a", TensorDType::kF32, {3}, {reinterpret_cast<const uint8_t*>(a->data()), 12}, a},
      {"b", TensorDType::kI64, {1, 2}, {reinterpret_cast<const uint8_t*>(b->data()), 16}, b}};
  v1::RunHeader header;
  for (auto& m : ChunkCursor(tensors).Metas()) *header.add_tensors() = m;
  ASSERT_TRUE(WriteTensorsToRegion(**writer, &tensors, &header).ok());
  EXPECT_TRUE(tensors.empty());
  EXPECT_TRUE(header.in_shared_memory());
  EXPECT_EQ(header.tensors(0).region_offset(), 128u);
  EXPECT_EQ(header.tensors(1).region_offset(), 192u);
  EXPECT_EQ(std::memcmp((*writer)->base() + 128, a->data(), 12), 0);
  EXPECT_EQ(std::memcmp((*writer)->base() + 192, b->data(), 16), 0);

  std::vector<TensorBytes> big = {
      {"c", TensorDType::kF32, {200}, {reinterpret_cast<const uint8_t*>(a->data()), 800}, a}};
  v1::RunHeader big_header;
  *big_header.add_tensors() = ChunkCursor(big).Metas()[0];
  EXPECT_EQ(WriteTensorsToRegion(**writer, &big, &big_header).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(big_header.in_shared_memory());
}

TEST(SharedMemoryRegionsTest, AClientThatShrinksItsObjectCannotCrashTheWorker) {
  SharedMemoryRegions regions({});
  ShmObject object(1 << 16);
  const std::string id = regions.Attach(object.name(), 1 << 16, "alice")->region_id;
  auto writer = regions.Reserve(Target(id), "alice");
  ASSERT_TRUE(writer.ok());
  // The client truncates the object after attaching it: the mapping's pages
  // are gone, and touching them raises SIGBUS.
  const int fd = shm_open(object.name().c_str(), O_RDWR, 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 0), 0);
  close(fd);

  std::vector<uint8_t> bytes(1 << 15, 9);
  EXPECT_FALSE(CopyIntoSharedMapping((*writer)->base(), bytes.data(), bytes.size()));
  auto data = std::make_shared<std::vector<uint8_t>>(bytes);
  std::vector<TensorBytes> tensors = {
      {"x", TensorDType::kF32, {1 << 13}, {data->data(), data->size()}, data}};
  v1::RunHeader header;
  *header.add_tensors() = ChunkCursor(tensors).Metas()[0];
  absl::Status shrunk = WriteTensorsToRegion(**writer, &tensors, &header);
  EXPECT_EQ(shrunk.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(shrunk.message(), HasSubstr("was truncated under the mapping"));

  // An ordinary copy still works, and this process is alive to say so.
  std::vector<uint8_t> out(bytes.size());
  EXPECT_TRUE(CopyIntoSharedMapping(out.data(), bytes.data(), bytes.size()));
  EXPECT_EQ(out, bytes);
}

TEST(WireBuffersTest, ChunkBufferParsesAsTheRunResponse) {
  auto bytes = std::make_shared<std::string>(300000, '\0');
  for (size_t i = 0; i < bytes->size(); ++i) (*bytes)[i] = static_cast<char>(i * 31);
  v1::TensorChunk meta;
  meta.set_name("blocks.0.hook_resid_post");
  meta.set_dtype(v1::F32);
  meta.add_shape(75000);
  meta.set_total_bytes(bytes->size());
  for (size_t size : {size_t{0}, size_t{1}, size_t{127}, size_t{128}, bytes->size()}) {
    grpc::ByteBuffer buffer =
        ChunkBuffer(meta, {reinterpret_cast<const uint8_t*>(bytes->data()), size}, bytes);
    v1::RunResponse parsed;
    ASSERT_TRUE(ParseRequest(buffer, &parsed, "RunResponse").ok()) << size;
    v1::RunResponse expected;
    *expected.mutable_chunk() = meta;
    expected.mutable_chunk()->set_data(bytes->data(), size);
    EXPECT_EQ(parsed.SerializeAsString(), expected.SerializeAsString()) << size;
    EXPECT_EQ(buffer.Length(), expected.ByteSizeLong()) << size;
  }
  grpc::Slice junk(std::string("\x12\xff\xff"));
  v1::RunResponse parsed;
  absl::Status bad = ParseRequest(grpc::ByteBuffer(&junk, 1), &parsed, "RunWithCacheRequest");
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.message(), HasSubstr("not a valid RunWithCacheRequest"));
}

// n floats 0, 1, ..., named "x" (n = the text's length * 1000).
class CountingBackend : public WorkerBackend {
 public:
  const v1::ModelInfo& Info() const override { return info_; }
  absl::StatusOr<v1::TokenizeResponse> Tokenize(const v1::TokenizeRequest&,
                                                const CancelCheck&) const override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<v1::DetokenizeResponse> Detokenize(const v1::DetokenizeRequest&) const override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<RunResult> RunWithCache(const v1::RunWithCacheRequest& r,
                                         const CancelCheck&) const override {
    auto data = std::make_shared<std::vector<float>>(r.input().texts(0).size() * 1000);
    for (size_t i = 0; i < data->size(); ++i) (*data)[i] = static_cast<float>(i);
    RunResult result;
    result.tensors.push_back({"x",
                              TensorDType::kF32,
                              {static_cast<int64_t>(data->size())},
                              {reinterpret_cast<const uint8_t*>(data->data()), data->size() * 4},
                              data});
    for (auto& m : ChunkCursor(result.tensors).Metas()) *result.header.add_tensors() = m;
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

 private:
  v1::ModelInfo info_;
};

class SharedMemoryServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    executor_ = std::make_unique<Executor>(Executor::Options{.threads = 1, .max_pending = 8});
    service_ = std::make_unique<WorkerService>(
        executor_.get(), WorkerService::Options{.chunk_bytes = 1000, .log_requests = false});
    service_->SetBackend(std::make_shared<CountingBackend>());
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    client_ = WorkerClient::Connect(absl::StrCat("127.0.0.1:", port)).value();
  }
  void TearDown() override {
    server_->Shutdown();
    executor_.reset();
  }
  static v1::RunWithCacheRequest Text(const std::string& text) {
    v1::RunWithCacheRequest r;
    r.mutable_input()->add_texts(text);
    return r;
  }
  // Waits (bounded only against hangs) until the worker holds `n` regions.
  void WaitForRegions(int n) {
    for (int i = 0; i < 2000 && service_->shared_memory_regions() != n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    EXPECT_EQ(service_->shared_memory_regions(), n);
  }

  std::unique_ptr<Executor> executor_;
  std::unique_ptr<WorkerService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<WorkerClient> client_;
};

TEST_F(SharedMemoryServiceTest, RegionReplyEqualsTheStreamedOne) {
  auto region = AttachedSharedMemory::Create(client_.get(), 1 << 20);
  ASSERT_TRUE(region.ok()) << region.status();
  WaitForRegions(1);
  v1::RunWithCacheRequest request = Text("abcdefgh");  // 32,000 bytes: 32 chunks streamed
  absl::StatusOr<RunReply> streamed = client_->RunWithCache(request);
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  ASSERT_EQ(streamed->tensors.size(), 1u);
  EXPECT_FALSE(streamed->header.in_shared_memory());

  *request.mutable_options()->mutable_shared_memory() = (*region)->Target(4096);
  absl::StatusOr<RunReply> shared = client_->RunWithCache(request);
  ASSERT_TRUE(shared.ok()) << shared.status();
  EXPECT_TRUE(shared->header.in_shared_memory());
  EXPECT_TRUE(shared->tensors.empty());
  absl::StatusOr<std::vector<TensorView>> views = (*region)->Views(shared->header);
  ASSERT_TRUE(views.ok()) << views.status();
  ASSERT_EQ(views->size(), 1u);
  EXPECT_EQ((*views)[0].name, "x");
  EXPECT_EQ((*views)[0].shape, streamed->tensors[0].shape);
  EXPECT_EQ(shared->header.tensors(0).region_offset(), 4096u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>((*views)[0].bytes.data()),
                        (*views)[0].bytes.size()),
            streamed->tensors[0].data);
  // The range is free again once the reply is in: back-to-back calls reuse it.
  for (int i = 0; i < 20; ++i) {
    absl::StatusOr<RunReply> again = client_->RunWithCache(request);
    ASSERT_TRUE(again.ok()) << i << ": " << again.status();
  }
}

TEST_F(SharedMemoryServiceTest, ErrorsNameWhatWasWrong) {
  auto region = AttachedSharedMemory::Create(client_.get(), 16384);
  ASSERT_TRUE(region.ok()) << region.status();
  v1::RunWithCacheRequest request = Text("abcdefgh");  // 32,000 bytes
  *request.mutable_options()->mutable_shared_memory() = (*region)->Target();
  absl::StatusOr<RunReply> small = client_->RunWithCache(request);
  EXPECT_EQ(small.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(small.status().message(), HasSubstr("needs 32000 bytes"));

  *request.mutable_options()->mutable_shared_memory() = (*region)->Target(20000, 10000);
  EXPECT_EQ(client_->RunWithCache(request).status().code(), absl::StatusCode::kInvalidArgument);

  // Another process's object, not in the lensgrid form, or missing.
  grpc::ClientContext ctx;
  v1::AttachSharedMemoryRequest attach;
  attach.set_name("/lensgrid-does-not-exist");
  attach.set_byte_size(10);
  auto call = client_->AttachSharedMemory(&ctx, attach);
  v1::SharedMemoryRegion reply;
  EXPECT_FALSE(call->Read(&reply));
  grpc::Status missing = call->Finish();
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(missing.error_message(), HasSubstr("/lensgrid-does-not-exist"));
}

TEST_F(SharedMemoryServiceTest, DetachedWhenTheClientGoes) {
  std::string id;
  {
    auto region = AttachedSharedMemory::Create(client_.get(), 1 << 16);
    ASSERT_TRUE(region.ok()) << region.status();
    id = (*region)->region_id();
    WaitForRegions(1);
  }  // destroyed: the call is cancelled
  WaitForRegions(0);
  v1::RunWithCacheRequest request = Text("a");
  request.mutable_options()->mutable_shared_memory()->set_region_id(id);
  absl::StatusOr<RunReply> gone = client_->RunWithCache(request);
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(gone.status().message(), HasSubstr("not attached by this caller"));
}

}  // namespace
}  // namespace lensgrid
