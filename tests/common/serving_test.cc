// The health-only listener answers grpc.health.v1 in plaintext, mirrors what
// it is told, and a server with the connection options applied serves.
#include "common/serving.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <string>

namespace lensgrid {
namespace {

// grpc.health.v1.Health/Check with a hand-encoded request; the reply's
// status field (1 SERVING, 2 NOT_SERVING), or -code when the call fails.
int Check(const std::string& address, const std::string& service = "") {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  std::string request;
  if (!service.empty()) request = std::string("\x0a", 1) + char(service.size()) + service;
  grpc::Slice slice(request);
  grpc::ByteBuffer in(&slice, 1), out;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  grpc::Status status;
  bool done = false;
  std::mutex mu;
  std::condition_variable cv;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &in, &out,
                 [&](grpc::Status s) {
                   std::lock_guard<std::mutex> lock(mu);
                   status = s;
                   done = true;
                   cv.notify_all();
                 });
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done; });
  if (!status.ok()) return -static_cast<int>(status.error_code());
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(out.Dump(&slices).ok());
  std::string reply;
  for (const auto& s : slices) reply.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return reply.size() == 2 && reply[0] == '\x08' ? reply[1] : 0;
}

TEST(HealthListenerTest, MirrorsWhatItIsTold) {
  auto health = HealthListener::Start("127.0.0.1:0");
  ASSERT_TRUE(health.ok()) << health.status();
  (*health)->AddServiceName("lensgrid.v1.Worker");
  const std::string address = (*health)->address();
  EXPECT_EQ(Check(address), 2);
  (*health)->SetServing(true);
  EXPECT_EQ(Check(address), 1);
  EXPECT_EQ(Check(address, "lensgrid.v1.Worker"), 1);
  EXPECT_EQ(Check(address, "nope"), -static_cast<int>(grpc::StatusCode::NOT_FOUND));
  (*health)->SetServing(false);
  EXPECT_EQ(Check(address, "lensgrid.v1.Worker"), 2);
}

TEST(HealthListenerTest, BadAddressesAreClearErrors) {
  auto bad = HealthListener::Start("nowhere");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--health-listen"), std::string::npos);
  auto taken = HealthListener::Start("127.0.0.1:0");
  ASSERT_TRUE(taken.ok());
  auto again = HealthListener::Start((*taken)->address());
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnavailable);
}

TEST(ConnectionOptionsTest, FlagsParseAndAServerStartsWithThem) {
  CLI::App app;
  ConnectionOptions options;
  AddConnectionFlags(&app, &options, /*default_max_age_ms=*/600000);
  EXPECT_EQ(options.max_connection_age_ms, 600000);
  const char* argv[] = {"x", "--max-connection-age-ms", "1000", "--keepalive-ms", "5000"};
  app.parse(5, const_cast<char**>(argv));
  EXPECT_EQ(options.max_connection_age_ms, 1000);
  EXPECT_EQ(options.keepalive_ms, 5000);
  grpc::CallbackGenericService services[2];
  int started = 0;
  auto start = [&](const std::string& listen, int* port) {
    grpc::ServerBuilder builder;
    ApplyConnectionOptions(options, &builder);
    builder.RegisterCallbackGenericService(&services[started++]);
    builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), port);
    return builder.BuildAndStart();
  };
  int port = 0;
  std::unique_ptr<grpc::Server> server = start("127.0.0.1:0", &port);
  ASSERT_NE(server, nullptr);
  EXPECT_GT(port, 0);
  // No SO_REUSEPORT: a second server on the same port does not start.
  int again = 0;
  std::unique_ptr<grpc::Server> second = start("127.0.0.1:" + std::to_string(port), &again);
  EXPECT_TRUE(second == nullptr || again == 0);
  server->Shutdown();
}

}  // namespace
}  // namespace lensgrid
