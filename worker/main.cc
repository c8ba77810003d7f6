// lensgrid-worker: serves one hooked GPT-2 over gRPC (lensgrid.v1.Worker, plus
// grpc.health.v1 and reflection).
//
//   lensgrid-worker --model DIR --listen HOST:PORT [--device cpu|cuda:N]
//   [--threads N]
//                   [--max-queue N] [--max-batch N] [--max-tokens N]
//                   [--max-response-bytes N] [--chunk-bytes N]
//                   [--no-processing]
//
// It listens first (health NOT_SERVING), then loads the weights (SERVING).
// Port 0 picks a free port; the "listening on HOST:PORT" line names it.
// SIGINT/SIGTERM: NOT_SERVING, then a graceful shutdown of at most 5 s.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <pthread.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "common/openblas_env.h"
#include "worker/executor.h"
#include "worker/model/cpu_threads.h"
#include "worker/worker_core.h"
#include "worker/worker_service.h"

namespace {

constexpr char kServiceName[] = "lensgrid.v1.Worker";

struct Flags {
  lensgrid::WorkerOptions worker;
  std::string listen;
  int threads = 0;
  int executor_threads = 1;
  int64_t max_request_bytes = 64 << 20;
};

void SetServing(grpc::Server* server, bool serving) {
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);
  health->SetServingStatus(kServiceName, serving);
}

}  // namespace

int main(int argc, char** argv) {
  lensgrid::EnsureOpenBlasCoreType(argv);
  CLI::App app{"Serve one hooked GPT-2 over gRPC", "lensgrid-worker"};
  Flags flags;
  lensgrid::WorkerOptions& w = flags.worker;
  app.add_option("--model", w.model_dir,
                 "model dir (config.json, model.safetensors)")
      ->required();
  app.add_option("--listen", flags.listen,
                 "HOST:PORT (port 0: pick a free one)")
      ->required();
  app.add_option("--device", w.device, "cpu | cuda | cuda:N")
      ->capture_default_str();
  app.add_option("--threads", flags.threads,
                 "CPU threads for matmuls (default: all)");
  app.add_option("--executor-threads", flags.executor_threads,
                 "requests run at the same time")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--max-queue", w.max_queue,
                 "requests queued or running; more: UNAVAILABLE")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  app.add_option("--max-batch", w.max_batch, "sequences per request")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-tokens", w.max_tokens, "batch * pos per request")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-response-bytes", w.max_response_bytes,
                 "logits + activations of one reply")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--chunk-bytes", w.chunk_bytes,
                 "bytes per streamed TensorChunk")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1024}, int64_t{3} << 20));
  app.add_option("--max-request-bytes", flags.max_request_bytes,
                 "largest request message accepted")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{4} << 20, int64_t{1} << 30));
  app.add_flag("--no-processing", w.no_processing,
               "Hugging Face weights as they are (no fold_ln / centering)");
  CLI11_PARSE(app, argc, argv);

  // Signals go to one thread that shuts the server down; block them before
  // gRPC starts its threads.
  static sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  lensgrid::ConfigureCpuThreads(flags.threads);
  lensgrid::Executor executor({.threads = flags.executor_threads,
                               .max_pending = static_cast<int>(w.max_queue)});
  lensgrid::WorkerService service(
      &executor, {.chunk_bytes = static_cast<size_t>(w.chunk_bytes)});

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(flags.listen, grpc::InsecureServerCredentials(),
                           &port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(flags.max_request_bytes));
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::cerr
        << "lensgrid-worker: cannot listen on \"" << flags.listen
        << "\" (expected HOST:PORT, a free port, an address of this machine)\n";
    return 1;
  }
  SetServing(server.get(), false);
  const std::string host = flags.listen.substr(0, flags.listen.rfind(':'));
  std::cerr << "lensgrid-worker: listening on " << host << ":" << port
            << " (NOT_SERVING until "
            << "the weights are loaded)" << std::endl;

  std::thread([server = server.get()] {
    int sig = 0;
    sigwait(&signals, &sig);
    std::cerr << "lensgrid-worker: signal " << sig << ", shutting down"
              << std::endl;
    SetServing(server, false);
    server->Shutdown(std::chrono::system_clock::now() +
                     std::chrono::seconds(5));
  }).detach();

  auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::unique_ptr<lensgrid::WorkerCore>> core =
      lensgrid::WorkerCore::Load(w);
  if (!core.ok()) {
    std::cerr << "lensgrid-worker: cannot load " << w.model_dir << ": "
              << absl::StatusCodeToString(core.status().code()) << ": "
              << core.status().message() << "\n";
    server->Shutdown(std::chrono::system_clock::now());
    return 1;
  }
  const lensgrid::v1::ModelInfo& info = (*core)->Info();
  if (!info.has_tokenizer()) {
    std::cerr << "lensgrid-worker: warning: no tokenizer files; requests must "
                 "send token ids\n";
  }
  service.SetBackend(
      std::shared_ptr<const lensgrid::WorkerBackend>(std::move(*core)));
  SetServing(server.get(), true);
  std::cerr << "lensgrid-worker: serving " << w.model_dir << " ("
            << info.config().n_layers() << " layers, sha256 "
            << info.weights_sha256().substr(0, 12) << ", " << info.device()
            << ") after "
            << std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - start)
                   .count()
            << " ms" << std::endl;
  server->Wait();
  executor.Shutdown();
  return 0;
}
