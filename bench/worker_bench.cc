// Worker benchmark (numbers, not pass/fail): a worker served on loopback TCP
// in this process, against the same work without gRPC, side by side:
//   1. a large cache: the in-process core call (run + pack, no transfer), then
//      the same RunWithCache streamed over gRPC at several chunk sizes and
//      written into same-host shared memory; transfer MB/s = bytes / (call -
//      core call), beside memcpy of the same bytes, the first write of them
//      into fresh memory (where a streamed reply lands), and a plain TCP
//      socket moving them on loopback between warm buffers (TCP's ceiling).
//   2. a small RunWithCache: in process, over gRPC (streamed and shared
//      memory), and the floor of one unary gRPC round trip (GetModelInfo).
//
//   build/bench/worker_bench [--tokens 1024] [--reps 5]
#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/attached_shared_memory.h"
#include "client/worker_client.h"
#include "common/mutex_mode.h"
#include "common/openblas_env.h"
#include "worker/core/worker_core.h"
#include "worker/executor.h"
#include "worker/model/cpu_threads.h"
#include "worker/shared_memory.h"
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

// The median over `reps` pairs of (`fn` - `base`), each pair run back to back:
// what `fn` costs beyond `base`, with the machine's drift cancelled.
template <typename Base, typename Fn>
double MedianExtraMs(int reps, Base base, Fn fn) {
  std::vector<double> extra;
  for (int i = 0; i < reps; ++i) {
    auto start = Clock::now();
    base();
    auto middle = Clock::now();
    fn();
    auto end = Clock::now();
    extra.push_back(
        std::chrono::duration<double, std::milli>((end - middle) - (middle - start)).count());
  }
  std::sort(extra.begin(), extra.end());
  return extra[extra.size() / 2];
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

// Milliseconds for a plain TCP socket on loopback to move `bytes` from one
// thread's buffer into another's (1 MiB writes, a pre-touched destination).
double TcpLoopbackMs(uint64_t bytes) {
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listener, 1) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(listener);
    return -1;
  }
  std::vector<char> src(bytes, 1), dst(bytes, 2);  // both touched before the clock starts
  std::thread sender([&] {
    int c = accept(listener, nullptr, nullptr);
    for (uint64_t sent = 0; sent < bytes;) {
      ssize_t n = write(c, src.data() + sent, std::min<uint64_t>(bytes - sent, 1 << 20));
      if (n <= 0) break;
      sent += n;
    }
    close(c);
  });
  int c = socket(AF_INET, SOCK_STREAM, 0);
  const auto start = Clock::now();
  uint64_t got = 0;
  if (connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    while (got < bytes) {
      ssize_t n = read(c, dst.data() + got, bytes - got);
      if (n <= 0) break;
      got += n;
    }
  }
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  close(c);
  sender.join();
  close(listener);
  return got == bytes ? ms : -1;
}

// A WorkerService on 127.0.0.1 over `core`, and a client of it.
struct Served {
  Served(std::shared_ptr<const WorkerCore> core, size_t chunk_bytes)
      : executor({.threads = 1, .max_pending = 8}),
        service(&executor, {.chunk_bytes = chunk_bytes, .log_requests = false}) {
    service.SetBackend(std::move(core));
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
    client = WorkerClient::Connect(absl::StrCat("127.0.0.1:", port)).value();
    if (!client->WaitUntilReady(absl::Seconds(10)).ok()) std::abort();
    WorkerClient::Options chunks_only;
    chunks_only.inline_tensors = false;  // as a client older than Worker API 2.2
    chunked_client = WorkerClient::Connect(absl::StrCat("127.0.0.1:", port), chunks_only).value();
  }
  ~Served() { server->Shutdown(); }
  Executor executor;
  WorkerService service;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<WorkerClient> client;          // small replies inline (the default)
  std::unique_ptr<WorkerClient> chunked_client;  // small replies as header + chunks
};

// Runs `paths` in rounds, each path once per round back to back, `rounds`
// times; returns each path's median ms, and each path's median ratio to
// path 0 within a round (the machine's drift, +-10-20% over a minute here,
// cancels within a round).
struct Interleaved {
  std::vector<double> median_ms, median_ratio;
};
Interleaved RunInterleaved(int rounds, const std::vector<std::function<void()>>& paths) {
  std::vector<std::vector<double>> ms(paths.size()), ratio(paths.size());
  for (int r = 0; r < rounds; ++r) {
    std::vector<double> round;
    for (const auto& path : paths) {
      auto start = Clock::now();
      path();
      round.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    }
    for (size_t i = 0; i < paths.size(); ++i) {
      ms[i].push_back(round[i]);
      ratio[i].push_back(round[i] / round[0]);
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  Interleaved out;
  for (size_t i = 0; i < paths.size(); ++i) {
    out.median_ms.push_back(median(ms[i]));
    out.median_ratio.push_back(median(ratio[i]));
  }
  return out;
}

// Median ms of WriteTensorsToRegion for `request`'s result (the run itself
// untimed), into a region of `region_bytes` of this process's own.
double RegionCopyMs(const WorkerCore& core, const v1::RunWithCacheRequest& request,
                    uint64_t region_bytes, int reps) {
  const std::string name = "/lensgrid-worker-bench-copy";
  const int fd = shm_open(name.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || ftruncate(fd, static_cast<off_t>(region_bytes)) != 0) std::abort();
  close(fd);
  SharedMemoryRegions regions({});
  auto attached = regions.Attach(name, region_bytes, "bench");
  shm_unlink(name.c_str());
  if (!attached.ok()) std::abort();
  v1::SharedMemoryTarget target;
  target.set_region_id(attached->region_id);
  std::vector<double> ms;
  for (int i = 0; i <= reps; ++i) {  // the first touches the pages
    absl::StatusOr<RunResult> result = core.RunWithCache(request, [] { return false; });
    auto writer = regions.Reserve(target, "bench");
    // Held here, so the write's release of the tensors frees nothing: their
    // memory goes back after the clock stops, as the core call's does.
    const std::vector<TensorBytes> keep = result->tensors;
    auto start = Clock::now();
    if (!WriteTensorsToRegion(**writer, &result->tensors, &result->header).ok()) std::abort();
    if (i > 0) {
      ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    }
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void Check(const absl::StatusOr<RunReply>& reply) {
  if (!reply.ok()) {
    std::fprintf(stderr, "%s\n", reply.status().ToString().c_str());
    std::exit(1);
  }
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
  auto never = [] { return false; };

  // 1. A large cache.
  v1::RunWithCacheRequest big;
  *big.mutable_input()->mutable_tokens() = Tokens(tokens);
  big.mutable_options()->set_return_type(v1::RETURN_NONE);
  uint64_t bytes = 0;
  int n_tensors = 0;
  double core_ms = MedianMs(reps, [&] {
    auto result = core->RunWithCache(big, never);
    bytes = result->header.total_bytes();
    n_tensors = result->header.tensors_size();
  });
  std::vector<char> src(bytes, 1), dst(bytes);
  double memcpy_ms = MedianMs(reps, [&] { std::memcpy(dst.data(), src.data(), bytes); });
  src = std::vector<char>();
  dst = std::vector<char>();
  // The transfer alone, as TcpLoopbackMs times it (its buffers are touched
  // before its clock starts; timing the whole call once counted their page
  // faults as TCP's).
  std::vector<double> tcp_runs;
  for (int i = 0; i < 3; ++i) tcp_runs.push_back(TcpLoopbackMs(bytes));
  std::sort(tcp_runs.begin(), tcp_runs.end());
  const double tcp_ms = tcp_runs[1];
  // A reply lands in tensors allocated for it: the first write into memory
  // never touched before, one page fault per 4 KiB page.
  double fresh_ms = MedianMs(reps, [&] {
    std::unique_ptr<char[]> fresh(new char[bytes]);
    std::memset(fresh.get(), 1, bytes);
    asm volatile("" : : "r"(fresh.get()) : "memory");
  });
  const double mb = bytes / 1e6;
  const double memcpy_rate = mb / (memcpy_ms / 1e3);
  std::printf(
      "worker_bench: full cache, 4 layers x 8 heads, d_model 256, %d tokens: %.1f MB in "
      "%d tensors; medians of %d\n",
      tokens, mb, n_tensors, reps);
  std::printf(
      "  (a call's transfer: the median over %d back-to-back pairs of (call - core call))\n", reps);
  std::printf("  %-44s %9s %12s %10s\n", "path", "ms", "transfer", "of memcpy");
  auto core_call = [&] { (void)core->RunWithCache(big, never); };
  auto row = [&](const std::string& what, double ms, double transfer_ms) {
    const double rate = mb / (transfer_ms / 1e3);
    std::printf("  %-44s %9.1f %7.0f MB/s %9.1f%%\n", what.c_str(), ms, rate,
                100 * rate / memcpy_rate);
  };
  std::printf("  %-44s %9.1f %12s %10s\n", "in-process core call (run + pack)", core_ms, "-", "-");
  row("memcpy of the same bytes", memcpy_ms, memcpy_ms);
  row("first write into fresh memory (page faults)", fresh_ms, fresh_ms);
  row("plain TCP socket on loopback, warm buffers", tcp_ms, tcp_ms);
  for (size_t chunk : {size_t{64} << 10, size_t{256} << 10, size_t{1} << 20,
                       (size_t{4} << 20) - (size_t{4} << 10)}) {
    Served served(core, chunk);
    Check(served.client->RunWithCache(big));  // warm-up
    double extra = MedianExtraMs(reps, core_call, [&] { Check(served.client->RunWithCache(big)); });
    row(absl::StrCat("gRPC stream, ", chunk >> 10, " KiB chunks",
                     chunk == kDefaultChunkBytes ? " (default)" : ""),
        core_ms + extra, extra);
  }
  Served served(core, kDefaultChunkBytes);
  auto region = AttachedSharedMemory::Create(served.client.get(), bytes + 64 * (n_tensors + 1));
  if (!region.ok()) {
    std::fprintf(stderr, "%s\n", region.status().ToString().c_str());
    return 1;
  }
  v1::RunWithCacheRequest big_shm = big;
  *big_shm.mutable_options()->mutable_shared_memory() = (*region)->Target();
  Check(served.client->RunWithCache(big_shm));  // first touch of the region's pages
  double shm_extra =
      MedianExtraMs(reps, core_call, [&] { Check(served.client->RunWithCache(big_shm)); });
  // What the path adds, measured directly (the pairs above are at the mercy
  // of the core call's own +-10%): the worker's copy into the region, timed
  // alone, plus the path's per-call overhead (the small calls below).
  const double copy_ms = RegionCopyMs(*core, big, bytes + 64 * (n_tensors + 1), reps);
  const int small_reps = reps * 40;
  v1::RunWithCacheRequest small;
  *small.mutable_input()->mutable_tokens() = Tokens(8);
  small.mutable_cache()->add_names("blocks.0.attn.hook_pattern");
  v1::RunWithCacheRequest small_shm = small;
  *small_shm.mutable_options()->mutable_shared_memory() = (*region)->Target();
  for (int i = 0; i < 10; ++i) {  // warm-up: each path's first calls allocate
    (void)core->RunWithCache(small, never);
    Check(served.client->RunWithCache(small));
    Check(served.chunked_client->RunWithCache(small));
    Check(served.client->RunWithCache(small_shm));
  }
  const Interleaved small_calls =
      RunInterleaved(small_reps, {[&] { (void)core->RunWithCache(small, never); },
                                  [&] { Check(served.client->RunWithCache(small)); },
                                  [&] { Check(served.chunked_client->RunWithCache(small)); },
                                  [&] { Check(served.client->RunWithCache(small_shm)); }});
  const double small_core = small_calls.median_ms[0];
  const double shm_call_overhead = std::max(0.0, small_calls.median_ms[3] - small_core);
  row("gRPC + same-host shared memory (views)", core_ms + copy_ms + shm_call_overhead,
      copy_ms + shm_call_overhead);
  std::printf(
      "    = the worker's copy into the region %.1f ms + the call's overhead %.2f ms; end "
      "to end minus the core call, paired: %.1f ms\n",
      copy_ms, shm_call_overhead, shm_extra);
  std::printf(
      "  goals: >= 25%% of memcpy over TCP loopback, >= 60%% with shared memory. Compare: the "
      "plain socket between warm buffers is TCP's ceiling here, and a streamed reply also "
      "lands in fresh tensors (the fresh-memory row)\n");

  // 2. A small RunWithCache (measured above).
  double unary = MedianMs(small_reps, [&] { (void)served.client->GetModelInfo(); });
  std::printf(
      "small RunWithCache (8 tokens, logits + pattern0): %d rounds, each path once per round "
      "back to back; median ms, and the median of each round's ratio to in-process:\n",
      small_reps);
  const char* small_paths[] = {
      "in-process core call", "gRPC, one message (inline tensors, the default)",
      "gRPC, header + a chunk per tensor (a pre-2.2 client)", "gRPC + same-host shared memory"};
  for (size_t i = 0; i < 4; ++i) {
    std::printf("  %-54s %6.2f ms  %5.2fx\n", small_paths[i], small_calls.median_ms[i],
                small_calls.median_ratio[i]);
  }
  std::printf("  one unary round trip (GetModelInfo) %.2f ms; goal <= 1.3x in-process\n", unary);
  return 0;
}

}  // namespace
}  // namespace lensgrid

int main(int argc, char** argv) {
  lensgrid::UseReleaseMutexes();  // as lensgrid-worker runs
  lensgrid::EnsureOpenBlasCoreType(argv);
  return lensgrid::Main(argc, argv);
}
