// Worker benchmark (numbers, not pass/fail): a worker served on loopback TCP
// in this process, against the same work without gRPC.
//   1. cache transfer: a large RunWithCache over gRPC vs the same call on the
//      core (no transfer); transfer MB/s = bytes / (grpc - core), vs memcpy.
//   2. small RunWithCache latency: gRPC vs the core call in-process.
//
//   build/bench/worker_bench [--tokens 1024] [--reps 5]
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/worker_client.h"
#include "common/mutex_mode.h"
#include "common/openblas_env.h"
#include "worker/core/worker_core.h"
#include "worker/executor.h"
#include "worker/model/cpu_threads.h"
#include "worker/worker_service.h"

namespace lensgrid {
namespace {

using Clock = std::chrono::steady_clock;

template <typename Fn>
double MedianMs(int reps, Fn fn) {
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    auto start = Clock::now();
    fn();
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

v1::Tensor Tokens(int64_t n) {
  std::vector<int64_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = (i * 7919) % 1000;
  v1::Tensor t;
  t.set_dtype(v1::I64);
  t.add_shape(1);
  t.add_shape(n);
  t.set_data(reinterpret_cast<const char*>(ids.data()), ids.size() * 8);
  return t;
}

int Main(int argc, char** argv) {
  int tokens = 1024, reps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--tokens") == 0) tokens = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--reps") == 0) reps = std::atoi(argv[i + 1]);
  }
  ConfigureCpuThreads(0);
  const std::string dir = "/tmp/lensgrid_worker_bench_model";
  const std::string bin =
      std::getenv("LENSGRID_BINARY_DIR") ? std::getenv("LENSGRID_BINARY_DIR") : "build";
  std::string init = absl::StrCat(bin, "/client/lensgrid init --out ", dir,
                                  " --layers 4 --heads 8 --d-model 256 --vocab 1000 --n-ctx 1024"
                                  " --seed 0 > /dev/null");
  if (std::system(init.c_str()) != 0) {
    std::fprintf(stderr, "cannot run: %s\n", init.c_str());
    return 1;
  }
  WorkerOptions options;
  options.model_dir = dir;
  auto core_or = WorkerCore::Load(options);
  if (!core_or.ok()) {
    std::fprintf(stderr, "%s\n", core_or.status().ToString().c_str());
    return 1;
  }
  std::shared_ptr<const WorkerCore> core = std::move(*core_or);
  Executor executor({.threads = 1, .max_pending = 8});
  WorkerService service(&executor, {.chunk_bytes = 1 << 20, .log_requests = false});
  service.SetBackend(core);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  auto server = builder.BuildAndStart();
  auto client = WorkerClient::Connect(absl::StrCat("127.0.0.1:", port)).value();
  if (!client->WaitUntilReady(absl::Seconds(10)).ok()) return 1;
  auto never = [] { return false; };

  // 1. Large cache.
  v1::RunWithCacheRequest big;
  *big.mutable_input()->mutable_tokens() = Tokens(tokens);
  big.mutable_options()->set_return_type(v1::RETURN_NONE);
  uint64_t bytes = 0;
  double core_ms =
      MedianMs(reps, [&] { bytes = core->RunWithCache(big, never)->header.total_bytes(); });
  double grpc_ms = MedianMs(reps, [&] {
    auto reply = client->RunWithCache(big);
    if (!reply.ok()) std::fprintf(stderr, "%s\n", reply.status().ToString().c_str());
  });
  std::vector<char> src(bytes, 1), dst(bytes);
  double memcpy_ms = MedianMs(reps, [&] { std::memcpy(dst.data(), src.data(), bytes); });
  const double mb = bytes / 1e6;
  std::printf("full cache, 4 layers x 8 heads, d_model 256, %d tokens: %.1f MB\n", tokens, mb);
  std::printf("  in-process core call (run + pack) : %8.1f ms\n", core_ms);
  std::printf("  over gRPC (run + stream + reassemble): %8.1f ms\n", grpc_ms);
  std::printf("  transfer: %.0f MB/s  (= MB / (gRPC - core))\n", mb / ((grpc_ms - core_ms) / 1e3));
  std::printf("  memcpy of the same bytes: %.1f ms = %.0f MB/s\n", memcpy_ms,
              mb / (memcpy_ms / 1e3));

  // 2. Small RunWithCache latency.
  v1::RunWithCacheRequest small;
  *small.mutable_input()->mutable_tokens() = Tokens(8);
  small.mutable_cache()->add_names("blocks.0.attn.hook_pattern");
  double small_core = MedianMs(reps * 20, [&] { (void)core->RunWithCache(small, never); });
  double small_grpc = MedianMs(reps * 20, [&] { (void)client->RunWithCache(small); });
  std::printf("small RunWithCache (8 tokens, logits + pattern0):\n");
  std::printf("  in-process %.2f ms, over gRPC %.2f ms (+%.2f ms)\n", small_core, small_grpc,
              small_grpc - small_core);
  server->Shutdown();
  return 0;
}

}  // namespace
}  // namespace lensgrid

int main(int argc, char** argv) {
  lensgrid::UseReleaseMutexes();  // as lensgrid-worker runs
  lensgrid::EnsureOpenBlasCoreType(argv);
  return lensgrid::Main(argc, argv);
}
