// Coordinator dispatch + completion throughput: the real gRPC service (and its
// SQLite state store) on loopback, 64 concurrent fake workers (no model) that
// lease a shard, send its result back, and lease the next. Prints shards/s.
//
//   build/bench/coordinator_bench [--workers 64] [--prompts 40] [--no-store]
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "bench/fake_shard_result.h"
#include "lensgrid/v1/coordinator.grpc.pb.h"
#include "service/coordinator_service.h"
#include "service/state_store.h"

namespace lensgrid::service {
namespace {

// One fake worker: lease, complete with well-formed zeros, repeat until idle.
int64_t RunWorker(const std::string& address, int index) {
  grpc::ChannelArguments args;
  args.SetInt("lensgrid.bench.worker", index);  // a connection of its own
  auto stub = v1::WorkQueue::NewStub(
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
  v1::RegisterRequest reg;
  reg.set_model_id("m");
  reg.set_weights_sha256("sha");
  v1::RegisterResponse reg_resp;
  grpc::ClientContext reg_ctx;
  if (!stub->Register(&reg_ctx, reg, &reg_resp).ok()) return 0;
  int64_t done = 0;
  for (;;) {
    v1::LeaseShardRequest req;
    req.set_worker_id(reg_resp.worker_id());
    req.set_wait_ms(200);
    v1::LeaseShardResponse resp;
    grpc::ClientContext ctx;
    if (!stub->LeaseShard(&ctx, req, &resp).ok() || !resp.has_shard()) return done;
    grpc::ClientContext cctx;
    v1::CompleteShardResponse cresp;
    auto writer = stub->CompleteShard(&cctx, &cresp);
    for (const v1::CompleteShardRequest& msg :
         bench::FakeShardResult(reg_resp.worker_id(), resp.lease())) {
      writer->Write(msg);
    }
    writer->WritesDone();
    if (writer->Finish().ok() && cresp.accepted()) ++done;
  }
}

int Main(int argc, char** argv) {
  int workers = 64, prompts = 40;
  bool store = true;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--workers") && i + 1 < argc) workers = std::atoi(argv[++i]);
    if (!std::strcmp(argv[i], "--prompts") && i + 1 < argc) prompts = std::atoi(argv[++i]);
    if (!std::strcmp(argv[i], "--no-store")) store = false;
  }
  const auto dir = std::filesystem::temp_directory_path() /
                   ("lensgrid-coordinator-bench-" + std::to_string(getpid()));
  std::unique_ptr<StateStore> state;
  if (store) state = std::move(StateStore::Open(dir.string()).value());
  RealClock clock;
  Scheduler scheduler(&clock, {}, state.get());
  const lensgrid::Authorizer anyone(std::nullopt);  // no tokens: every caller is anonymous
  WorkQueueService queue(&scheduler, &anyone);
  CoordinatorService service(&scheduler, &anyone, &queue);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  builder.RegisterService(&queue);
  auto server = builder.BuildAndStart();
  service.Start();
  const std::string address = "127.0.0.1:" + std::to_string(port);

  // ablate-heads on GPT-2 small's grid (12 x 12), one (prompt, head) per shard.
  v1::JobSpec spec;
  spec.set_model_id("m");
  spec.set_weights_sha256("sha");
  spec.set_method(v1::METHOD_ABLATE_HEADS);
  spec.set_n_layers(12);
  spec.set_n_heads(12);
  spec.set_prompts_per_shard(1);
  spec.set_components_per_shard(1);
  for (int p = 0; p < prompts; ++p) {
    auto* pr = spec.add_prompts();
    for (int t = 0; t < 16; ++t) pr->add_tokens(t + p);
    pr->add_answers(1);
    pr->add_wrongs(2);
  }
  const std::string job = scheduler.Submit(lensgrid::Caller::Anonymous(), spec).value();
  const int64_t total = scheduler.GetJob(lensgrid::Caller::Anonymous(), job)->shards_total();

  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  std::vector<int64_t> done(workers, 0);
  for (int i = 0; i < workers; ++i) {
    threads.emplace_back([&, i] { done[i] = RunWorker(address, i); });
  }
  for (auto& t : threads) t.join();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int64_t completed = 0;
  for (int64_t d : done) completed += d;
  const auto status = scheduler.GetJob(lensgrid::Caller::Anonymous(), job).value();
  std::printf(
      "coordinator_bench: %d workers, %lld shards (%s), state store %s: %.2f "
      "s, %.0f shards/s\n",
      workers, static_cast<long long>(completed), v1::JobState_Name(status.state()).c_str(),
      store ? "SQLite" : "off", s, static_cast<double>(completed) / s);
  service.Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  std::filesystem::remove_all(dir);
  return completed == total ? 0 : 1;
}

}  // namespace
}  // namespace lensgrid::service

int main(int argc, char** argv) { return lensgrid::service::Main(argc, argv); }
