// lensgrid-worker: serves one hooked GPT-2 over gRPC (lensgrid.v1.Worker, plus
// grpc.health.v1 and reflection).
//
//   lensgrid-worker --model DIR --listen HOST:PORT [--coordinator ADDR]
//                   [--device cpu|cuda:N] [--threads N]
//                   [--max-queue N] [--max-batch N] [--max-tokens N]
//                   [--max-response-bytes N] [--chunk-bytes N]
//                   [--max-program-nodes N] [--max-program-bytes N]
//                   [--max-einsum-elements N]
//                   [--no-processing] [--model-id ID] [--capacity N]
//                   [--metrics-listen HOST:PORT] [--health-listen HOST:PORT]
//                   [--log-format text|json] [--max-connection-age-ms N]
//
// It listens first (health NOT_SERVING), then loads the weights (SERVING).
// Port 0 picks a free port; the "listening on HOST:PORT" line names it.
// With --coordinator it also pulls circuit-search shards from there
// (worker/coordinator_link.h). --metrics-listen serves Prometheus metrics at
// /metrics (deploy/README.md). --health-listen serves only grpc.health.v1, in
// plaintext, for probes that have no credentials; connections get keepalive
// pings and a GOAWAY after --max-connection-age-ms (10 min) so clients
// rebalance across workers (common/serving.h).
// Security (README.md#security): the Worker API server takes --tls-cert,
// --tls-key, --tls-client-ca (mTLS) and --auth-tokens (submitter and admin
// tokens may run models; reloaded on SIGHUP); a non-loopback --listen without
// TLS and tokens needs --insecure. As the coordinator's client it takes
// --coordinator-tls-ca, --coordinator-tls-cert, --coordinator-tls-key and
// --coordinator-token (a worker-role token). Each also from the environment
// (LENSGRID_TLS_CERT, ..., LENSGRID_COORDINATOR_TOKEN).
// SIGINT/SIGTERM: NOT_SERVING; running shards are handed back to the
// coordinator; then a graceful shutdown of at most 5 s, and an exit after
// --shutdown-grace-ms even if a request is stuck. Health also turns
// NOT_SERVING while a running request makes no progress for --stall-ms.
#include <fcntl.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "client/hub/hub_download.h"
#include "common/auth_flags.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/model_id.h"
#include "common/mutex_mode.h"
#include "common/openblas_env.h"
#include "common/serving.h"
#include "worker/coordinator_link.h"
#include "worker/core/worker_core.h"
#include "worker/executor.h"
#include "worker/model/cpu_threads.h"
#include "worker/worker_service.h"

namespace {

constexpr char kServiceName[] = "lensgrid.v1.Worker";

struct Flags {
  lensgrid::WorkerOptions worker;
  std::string listen;
  int threads = 0;
  int executor_threads = 1;
  int64_t max_request_bytes = 64 << 20;
  std::string coordinator;
  std::string model_id;
  std::string name;
  std::string metrics_listen;
  std::string advertise;
  int capacity = 1;
  int64_t shutdown_grace_ms = 10000;
  int64_t stall_ms = 60000;
  int max_shared_memory_regions = 64;
  lensgrid::ServerSecurity security;
  lensgrid::ClientTransport to_coordinator;
  lensgrid::ConnectionOptions connections;
  std::string health_listen;
  std::string log_format = "text";
};

// One log line (common/log.h: text, or JSON with --log-format json).
template <typename... Parts>
void Log(lensgrid::LogLevel level, const Parts&... parts) {
  std::ostringstream line;
  (line << ... << parts);
  lensgrid::LogEvent(level, line.str());
}

// The pull loop, started once the weights are loaded and stopped first on a
// signal (so that its shards are handed back while the coordinator listens).
class LinkSlot {
 public:
  void Start(std::unique_ptr<lensgrid::CoordinatorLink> link) {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    link_ = std::move(link);
    link_->Start();
  }
  void Stop() {
    absl::MutexLock lock(&mu_);
    stopped_ = true;
    if (link_ != nullptr) link_->Stop();
  }
  lensgrid::CoordinatorLinkStats stats() {
    absl::MutexLock lock(&mu_);
    return link_ != nullptr ? link_->stats() : lensgrid::CoordinatorLinkStats();
  }

 private:
  absl::Mutex mu_;
  bool stopped_ = false;
  std::unique_ptr<lensgrid::CoordinatorLink> link_;
};

int signal_pipe[2] = {-1, -1};

void OnSignal(int sig) {
  const int saved = errno;
  (void)!::write(signal_pipe[1], &sig, sizeof(sig));
  errno = saved;
}

std::string HostName() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "";
  return buf;
}

// --health-listen's server (set before any thread that calls SetServing starts).
lensgrid::HealthListener* health_listener = nullptr;

void SetServing(grpc::Server* server, bool serving) {
  if (health_listener != nullptr) health_listener->SetServing(serving);
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);
  health->SetServingStatus(kServiceName, serving);
}

}  // namespace

int main(int argc, char** argv) {
  lensgrid::UseReleaseMutexes();
  lensgrid::EnsureOpenBlasCoreType(argv);
  CLI::App app{"Serve one hooked GPT-2 over gRPC", "lensgrid-worker"};
  Flags flags;
  lensgrid::WorkerOptions& w = flags.worker;
  app.add_option(
         "--model", w.model_dir,
         "model dir (config.json, model.safetensors or a sharded checkpoint), or name (gpt2, "
         "ORG/NAME[@REV]: from the Hub's cache, pulled if absent)")
      ->required();
  bool offline = false;
  app.add_flag("--offline", offline,
               "never download: a model name must be in the cache (also "
               "LENSGRID_OFFLINE=1)");
  app.add_option("--listen", flags.listen, "HOST:PORT (port 0: pick a free one)")->required();
  app.add_option("--device", w.device, "cpu | cuda | cuda:N")->capture_default_str();
  app.add_option("--threads", flags.threads, "CPU threads for matmuls (default: all)");
  app.add_option("--executor-threads", flags.executor_threads, "requests run at the same time")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--max-queue", w.max_queue, "requests queued or running; more: UNAVAILABLE")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  app.add_option("--max-batch", w.max_batch, "sequences per request")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-tokens", w.max_tokens, "batch * pos per request")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-response-bytes", w.max_response_bytes, "logits + activations of one reply")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-reply-memory", w.max_reply_memory,
                 "bytes all replies in flight may hold together; more: "
                 "RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-text-bytes", w.max_text_bytes, "bytes of text in one request")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-tokenize-texts", w.max_tokenize_texts, "texts in one Tokenize request")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-dataset-prompts", w.max_dataset_prompts, "prompts in one shard's dataset")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-program-nodes", w.max_program_nodes,
                 "nodes of all hook programs of one request")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-program-bytes", w.max_program_bytes,
                 "bytes of every value of one request's hook programs, summed")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-einsum-elements", w.max_einsum_elements,
                 "index space (product of every index's size) of one einsum")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--shard-cache-bytes", w.shard_cache_bytes,
                 "memory for the base runs of shards' prompt ranges, reused by the other "
                 "component shards of a range (least recently used out); 0: none")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--shutdown-grace-ms", flags.shutdown_grace_ms,
                 "after SIGTERM, exit after this long even if a request is "
                 "still running")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{100}, int64_t{3600000}));
  app.add_option("--stall-ms", flags.stall_ms,
                 "health says NOT_SERVING while a running request has made no "
                 "progress for this long")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{100}, int64_t{3600000}));
  app.add_option("--max-shared-memory-regions", flags.max_shared_memory_regions,
                 "same-host clients' shared-memory regions attached at once "
                 "(AttachSharedMemory); 0: no shared memory")
      ->capture_default_str()
      ->check(CLI::Range(0, 4096));
  app.add_option("--chunk-bytes", w.chunk_bytes, "bytes per streamed TensorChunk")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1024}, int64_t{3} << 20));
  app.add_option("--max-request-bytes", flags.max_request_bytes, "largest request message accepted")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{4} << 20, int64_t{1} << 30));
  app.add_flag("--no-processing", w.no_processing,
               "Hugging Face weights as they are (no fold_ln / centering)");
  app.add_option("--coordinator", flags.coordinator,
                 "HOST:PORT of a lensgrid-coordinator's work queue to pull shards from (its "
                 "--worker-listen, else its --listen)");
  app.add_option("--model-id", flags.model_id,
                 "model id to register with (default: the model dir's name, or the Hub name "
                 "given; +no-processing with --no-processing)");
  app.add_option("--capacity", flags.capacity, "shards run at once for the coordinator")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--advertise", flags.advertise,
                 "HOST:PORT the coordinator shows for this worker's own API (default: "
                 "the --listen address; on Kubernetes: $(POD_IP):PORT)");
  app.add_option("--metrics-listen", flags.metrics_listen,
                 "HOST:PORT to serve Prometheus metrics on (GET /metrics)");
  app.add_option("--name", flags.name, "name shown by `lensgrid workers` (default: host name)");
  lensgrid::AddServerSecurityFlags(&app, &flags.security);
  lensgrid::AddClientTransportFlags(&app, &flags.to_coordinator, "coordinator");
  // Clients of the Worker API rebalance across worker pods every 10 min.
  lensgrid::AddConnectionFlags(&app, &flags.connections, /*default_max_age_ms=*/600000);
  app.add_option("--health-listen", flags.health_listen,
                 "HOST:PORT of a plaintext grpc.health.v1-only server (for probes without "
                 "credentials)");
  app.add_option("--log-format", flags.log_format, "text | json")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "json"}));
  CLI11_PARSE(app, argc, argv);
  lensgrid::SetLogComponent("lensgrid-worker");
  (void)lensgrid::SetLogFormat(flags.log_format);  // checked by the flag

  auto warning = lensgrid::CheckListenSecurity(flags.listen, flags.security);
  if (!warning.ok()) {
    Log(lensgrid::LogLevel::kError, warning.status().message());
    return 2;
  }
  if (!warning->empty()) Log(lensgrid::LogLevel::kWarning, *warning);
  auto credentials = lensgrid::MakeServerCredentials(flags.security);
  if (!credentials.ok()) {
    Log(lensgrid::LogLevel::kError, credentials.status().message());
    return 1;
  }
  absl::StatusOr<std::unique_ptr<lensgrid::Authorizer>> authorizer =
      lensgrid::Authorizer::Open(flags.security.auth_tokens);
  if (!authorizer.ok()) {
    Log(lensgrid::LogLevel::kError, authorizer.status().message());
    return 1;
  }
  std::shared_ptr<grpc::Channel> coordinator_channel;
  if (!flags.coordinator.empty()) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(static_cast<int>(flags.max_request_bytes));
    lensgrid::AddClientKeepalive(&args);
    auto channel = lensgrid::OpenChannel(flags.coordinator, flags.to_coordinator, args);
    if (!channel.ok()) {
      Log(lensgrid::LogLevel::kError, channel.status().message());
      return 1;
    }
    coordinator_channel = std::move(*channel);
  }

  std::unique_ptr<lensgrid::MetricsServer> metrics;
  if (!flags.metrics_listen.empty()) {
    auto started = lensgrid::MetricsServer::Start(flags.metrics_listen);
    if (!started.ok()) {
      Log(lensgrid::LogLevel::kError, started.status().message());
      return 1;
    }
    metrics = std::move(*started);
  }

  // SIGINT/SIGTERM write to a pipe that one thread reads and then shuts down.
  // (Blocking them is not enough: OpenBLAS starts its threads when the
  // library loads, before main, with the signals unblocked.)
  if (::pipe2(signal_pipe, O_CLOEXEC) != 0) {
    std::perror("lensgrid-worker: pipe");
    return 1;
  }
  struct sigaction action = {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGHUP, &action, nullptr);  // reload --auth-tokens

  lensgrid::ConfigureCpuThreads(flags.threads);
  lensgrid::Executor executor(
      {.threads = flags.executor_threads, .max_pending = static_cast<int>(w.max_queue)});
  lensgrid::WorkerService service(
      &executor, {.chunk_bytes = static_cast<size_t>(w.chunk_bytes),
                  .shared_memory = {.max_regions = flags.max_shared_memory_regions},
                  .auth = authorizer->get()});

  std::unique_ptr<lensgrid::HealthListener> health;
  if (!flags.health_listen.empty()) {
    auto started = lensgrid::HealthListener::Start(flags.health_listen);
    if (!started.ok()) {
      Log(lensgrid::LogLevel::kError, started.status().message());
      return 1;
    }
    health = std::move(*started);
    health->AddServiceName(kServiceName);
    health_listener = health.get();
    Log(lensgrid::LogLevel::kInfo, "health on ", health->address());
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  lensgrid::ApplyConnectionOptions(flags.connections, &builder);
  LinkSlot link;
  // The model's core once loaded (its shard cache's counters), for /metrics.
  std::atomic<const lensgrid::WorkerCore*> loaded_core{nullptr};
  if (metrics != nullptr) {
    builder.experimental().SetInterceptorCreators(lensgrid::RpcMetricsInterceptors(*metrics));
    metrics->AddCollector([&executor, &service, &link, &loaded_core] {
      const lensgrid::CoordinatorLinkStats s = link.stats();
      const lensgrid::WorkerCore* core = loaded_core.load();
      const lensgrid::BaseRunCache::Stats cache =
          core != nullptr ? core->ShardCacheStats() : lensgrid::BaseRunCache::Stats();
      return std::vector<prometheus::MetricFamily>{
          lensgrid::BuildInfoFamily("worker"),
          lensgrid::GaugeFamily("lensgrid_executor_queue_depth",
                                "requests and shards queued or running",
                                executor.pending() + s.shards_running),
          lensgrid::CounterFamily("lensgrid_executor_busy_seconds_total",
                                  "time spent running requests and shards",
                                  executor.busy_seconds() + s.busy_seconds),
          lensgrid::CounterFamily("lensgrid_cache_bytes_sent_total",
                                  "tensor bytes streamed out (replies and shard results)",
                                  static_cast<double>(service.bytes_sent() + s.bytes_sent)),
          lensgrid::GaugeFamily("lensgrid_worker_shards_running", "shards running now",
                                s.shards_running),
          lensgrid::CounterFamily("lensgrid_worker_shards_completed_total",
                                  "shard results the coordinator accepted", s.shards_completed),
          lensgrid::CounterFamily("lensgrid_worker_shards_handed_back_total",
                                  "shards handed back (shutdown)", s.shards_handed_back),
          lensgrid::CounterFamily("lensgrid_worker_shard_cache_hits_total",
                                  "shards that reused their prompt range's base run",
                                  static_cast<double>(cache.hits)),
          lensgrid::CounterFamily("lensgrid_worker_shard_cache_misses_total",
                                  "shards that ran their prompt range's base run",
                                  static_cast<double>(cache.misses)),
          lensgrid::GaugeFamily("lensgrid_worker_shard_cache_bytes",
                                "bytes of base runs kept (--shard-cache-bytes)",
                                static_cast<double>(cache.bytes)),
          lensgrid::GaugeFamily("lensgrid_worker_shared_memory_regions",
                                "same-host shared-memory regions attached now",
                                service.shared_memory_regions())};
    });
    Log(lensgrid::LogLevel::kInfo, "metrics on http://", metrics->address(), "/metrics");
  }
  int port = 0;
  builder.AddListeningPort(flags.listen, *credentials, &port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(flags.max_request_bytes));
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    Log(lensgrid::LogLevel::kError, "cannot listen on \"", flags.listen,
        "\" (expected HOST:PORT, a free port, an address of this machine)");
    return 1;
  }
  SetServing(server.get(), false);
  const std::string host = flags.listen.substr(0, flags.listen.rfind(':'));
  Log(lensgrid::LogLevel::kInfo, "listening on ", host, ":", port, " (NOT_SERVING until ",
      "the weights are loaded)");

  std::atomic<bool> stopping{false};
  std::thread([server = server.get(), &link, &stopping, grace_ms = flags.shutdown_grace_ms,
               auth = authorizer->get(), tokens_path = flags.security.auth_tokens] {
    int sig = 0;
    while (true) {
      const ssize_t n = ::read(signal_pipe[0], &sig, sizeof(sig));
      if (n < 0 && errno == EINTR) continue;
      if (n != sizeof(sig) || sig != SIGHUP) break;
      if (!auth->enabled()) {
        Log(lensgrid::LogLevel::kInfo, "SIGHUP: no --auth-tokens to reload");
        continue;
      }
      absl::StatusOr<size_t> reloaded = auth->Reload();
      if (reloaded.ok()) {
        Log(lensgrid::LogLevel::kInfo, "SIGHUP: reloaded ", tokens_path, " (", *reloaded,
            " tokens)");
      } else {
        Log(lensgrid::LogLevel::kWarning, "SIGHUP: kept the old tokens: ", reloaded.status());
      }
    }
    Log(lensgrid::LogLevel::kInfo, "signal ", sig, ", shutting down");
    stopping = true;
    // A request stuck where it cannot see the shutdown must not keep the
    // process alive past its grace period.
    std::thread([grace_ms] {
      std::this_thread::sleep_for(std::chrono::milliseconds(grace_ms));
      Log(lensgrid::LogLevel::kWarning, "still running ", grace_ms,
          " ms after the signal (a request did not stop); exiting");
      std::_Exit(0);
    }).detach();
    SetServing(server, false);
    link.Stop();
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }).detach();

  auto start = std::chrono::steady_clock::now();
  // A model name is pulled (if absent) while health says NOT_SERVING.
  const std::string model_flag = w.model_dir;  // a Hub name names the model id
  if (absl::Status s = lensgrid::hub::ResolveModelFlag(&w.model_dir, offline, &std::cerr);
      !s.ok()) {
    Log(lensgrid::LogLevel::kError, absl::StatusCodeToString(s.code()), ": ", s.message());
    server->Shutdown(std::chrono::system_clock::now());
    metrics.reset();
    return 1;
  }
  absl::StatusOr<std::unique_ptr<lensgrid::WorkerCore>> core = lensgrid::WorkerCore::Load(w);
  if (!core.ok()) {
    Log(lensgrid::LogLevel::kError, "cannot load ", w.model_dir, ": ",
        absl::StatusCodeToString(core.status().code()), ": ", core.status().message());
    server->Shutdown(std::chrono::system_clock::now());
    metrics.reset();
    return 1;
  }
  const lensgrid::v1::ModelInfo& info = (*core)->Info();
  if (!info.has_tokenizer()) {
    Log(lensgrid::LogLevel::kWarning, "no tokenizer files; requests must send token ids");
  }
  loaded_core = core->get();  // lives as long as `backend`, past metrics.reset()
  auto backend = std::shared_ptr<const lensgrid::WorkerBackend>(std::move(*core));
  service.SetBackend(backend);
  SetServing(server.get(), true);
  // Liveness: a request running without progress (it polls its cancel check
  // between blocks) for --stall-ms means the executor is wedged. And once the
  // executor goes idle after work, the allocator's free pages go back to the
  // OS (every request thread keeps its own malloc arena otherwise).
  std::thread liveness([server = server.get(), &executor, &stopping, stall_ms = flags.stall_ms] {
    bool stalled = false, trimmed = true;
    while (!stopping) {
      std::this_thread::sleep_for(
          std::chrono::milliseconds(std::clamp<int64_t>(stall_ms / 4, 25, 250)));
      if (stopping) break;
      if (executor.pending() > 0) {
        trimmed = false;
      } else if (!trimmed) {
        malloc_trim(0);
        trimmed = true;
      }
      const int64_t quiet = executor.StalledMs();
      if (!stalled && quiet >= stall_ms) {
        stalled = true;
        Log(lensgrid::LogLevel::kWarning, "NOT_SERVING: a request has made no ", "progress for ",
            quiet, " ms (executor stalled)");
        SetServing(server, false);
      } else if (stalled && quiet < stall_ms) {
        stalled = false;
        Log(lensgrid::LogLevel::kInfo, "SERVING again: the executor made ", "progress");
        SetServing(server, true);
      }
    }
  });
  if (!flags.coordinator.empty()) {
    lensgrid::CoordinatorLinkOptions options;
    options.name = flags.name.empty() ? HostName() : flags.name;
    options.model_id = flags.model_id.empty()
                           ? lensgrid::DefaultModelId(model_flag, !w.no_processing)
                           : flags.model_id;
    options.address = flags.advertise.empty() ? host + ":" + std::to_string(port) : flags.advertise;
    options.capacity = flags.capacity;
    options.chunk_bytes = static_cast<size_t>(w.chunk_bytes);
    link.Start(std::make_unique<lensgrid::CoordinatorLink>(backend, coordinator_channel, options));
  }
  Log(lensgrid::LogLevel::kInfo, "serving ", w.model_dir, " (", info.config().n_layers(),
      " layers, sha256 ", info.weights_sha256().substr(0, 12), ", ", info.device(), ") after ",
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                            start)
          .count(),
      " ms");
  server->Wait();
  stopping = true;
  liveness.join();
  metrics.reset();  // its collector reads the objects below
  link.Stop();
  executor.Shutdown();
  return 0;
}
