// lensgrid-coordinator: hands circuit-search shards to workers and merges
// their results; serves lensgrid.v1.Coordinator, grpc.health.v1 and reflection.
//
//   lensgrid-coordinator --listen 0.0.0.0:7070 --state-dir /var/lib/lensgrid
//
// --listen HOST:0 picks a free port; the chosen address is printed as
// "listening on HOST:PORT". State (jobs, completed shards, events) lives in
// --state-dir; a restart on the same dir resumes every unfinished job.
// --metrics-listen HOST:PORT serves Prometheus metrics at /metrics
// (deploy/README.md). Test knobs: --initial-lease-ms, --min-lease-ms,
// --worker-timeout-ms, --max-attempts, --heartbeat-ms.
//
// Limits (defaults in service/planner.h and service/scheduler.h):
// --max-shards, --max-lease-bytes, --max-result-bytes,
// --max-client-json-bytes, --max-workers, --forget-worker-ms,
// --store-retry-ms. --fresh-state starts an empty store where the state dir's
// marker says a database should be. --testing-max-db-pages-file FILE: SQLite's
// max_page_count is read from FILE before each write (a real "disk full").
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "absl/strings/numbers.h"
#include "common/metrics.h"
#include "service/coordinator_service.h"
#include "service/state_store.h"

namespace {

std::vector<prometheus::MetricFamily> SchedulerFamilies(
    const lensgrid::service::SchedulerCounters& c) {
  using lensgrid::CounterFamily;
  std::map<std::string, double> jobs;
  const std::map<lensgrid::v1::JobState, std::string> names = {
      {lensgrid::v1::JOB_QUEUED, "queued"},
      {lensgrid::v1::JOB_RUNNING, "running"},
      {lensgrid::v1::JOB_SUCCEEDED, "succeeded"},
      {lensgrid::v1::JOB_FAILED, "failed"},
      {lensgrid::v1::JOB_CANCELLED, "cancelled"}};
  for (const auto& [state, n] : c.jobs) {
    if (auto it = names.find(state); it != names.end()) jobs[it->second] = n;
  }
  return {
      CounterFamily("lensgrid_shards_leased_total", "leases granted", c.shards_leased),
      CounterFamily("lensgrid_shards_completed_total", "shards completed (first accepted result)",
                    c.shards_completed),
      CounterFamily("lensgrid_shards_failed_total", "FailShard calls with an error",
                    c.shards_failed),
      CounterFamily("lensgrid_shards_handed_back_total",
                    "shards handed back by workers shutting down", c.shards_handed_back),
      CounterFamily("lensgrid_shards_retried_total", "shards re-queued", c.shards_retried),
      lensgrid::LabeledGaugeFamily("lensgrid_jobs", "jobs now in each state", "state", jobs),
      lensgrid::GaugeFamily("lensgrid_workers", "registered workers now alive", c.workers_alive)};
}

int Usage(const std::string& why) {
  std::fprintf(stderr,
               "lensgrid-coordinator: %s\nusage: lensgrid-coordinator --listen "
               "HOST:PORT "
               "--state-dir DIR [--initial-lease-ms N] [--min-lease-ms N] "
               "[--worker-timeout-ms N] [--max-attempts N] [--heartbeat-ms N] "
               "[--metrics-listen HOST:PORT] [--max-shards N] "
               "[--max-lease-bytes N] [--max-result-bytes N] "
               "[--max-client-json-bytes N] [--max-workers N] "
               "[--forget-worker-ms N] [--store-retry-ms N] [--fresh-state]\n",
               why.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> flags;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      Usage("help");
      return 0;
    }
    if (arg.rfind("--", 0) != 0) return Usage("unexpected argument " + arg);
    if (arg == "--fresh-state") {
      flags["fresh-state"] = "1";
      continue;
    }
    const size_t eq = arg.find('=');
    if (eq != std::string::npos) {
      flags[arg.substr(2, eq - 2)] = arg.substr(eq + 1);
    } else if (i + 1 < argc) {
      flags[arg.substr(2)] = argv[++i];
    } else {
      return Usage(arg + " needs a value");
    }
  }
  lensgrid::service::SchedulerOptions options;
  const std::map<std::string, int64_t*> ints = {
      {"initial-lease-ms", &options.initial_lease_ms},
      {"min-lease-ms", &options.min_lease_ms},
      {"worker-timeout-ms", &options.worker_timeout_ms},
      {"heartbeat-ms", &options.heartbeat_interval_ms},
      {"max-shards", &options.planner.max_shards},
      {"max-lease-bytes", &options.planner.max_shard_spec_bytes},
      {"max-result-bytes", &options.planner.max_result_bytes},
      {"max-client-json-bytes", &options.planner.max_client_json_bytes},
      {"max-workers", &options.max_workers},
      {"forget-worker-ms", &options.forget_worker_ms},
      {"store-retry-ms", &options.store_retry_ms}};
  for (const auto& [name, value] : flags) {
    if (name == "listen" || name == "state-dir" || name == "metrics-listen" ||
        name == "fresh-state" || name == "testing-max-db-pages-file") {
      continue;
    }
    int64_t v = 0;
    if (!absl::SimpleAtoi(value, &v) || v <= 0)
      return Usage("--" + name + " needs a positive number");
    if (name == "max-attempts") {
      options.max_attempts = static_cast<int>(v);
    } else if (auto it = ints.find(name); it != ints.end()) {
      *it->second = v;
    } else {
      return Usage("unknown flag --" + name);
    }
  }
  if (!flags.count("listen")) return Usage("--listen HOST:PORT is required");
  if (!flags.count("state-dir")) return Usage("--state-dir DIR is required");

  lensgrid::service::StateStoreOptions store_options;
  store_options.start_fresh = flags.count("fresh-state") > 0;
  store_options.max_page_count_file = flags["testing-max-db-pages-file"];
  auto store = lensgrid::service::StateStore::Open(flags["state-dir"], store_options);
  if (!store.ok()) {
    std::fprintf(stderr, "lensgrid-coordinator: %s\n", store.status().ToString().c_str());
    return 1;
  }
  auto jobs = (*store)->Load();
  if (!jobs.ok()) {
    std::fprintf(stderr, "lensgrid-coordinator: %s\n", jobs.status().ToString().c_str());
    return 1;
  }
  lensgrid::service::RealClock clock;
  lensgrid::service::Scheduler scheduler(&clock, options, store->get());
  // A damaged job is reported (and listed as FAILED with DATA_LOSS); the
  // others are served.
  int damaged = 0;
  for (auto& job : *jobs) {
    const std::string id = job.job_id;
    if (!job.notes.empty()) {
      std::fprintf(stderr, "lensgrid-coordinator: job %s: %s\n", id.c_str(), job.notes.c_str());
    }
    absl::Status s = scheduler.Restore(std::move(job));
    if (!s.ok()) {
      ++damaged;
      std::fprintf(stderr, "lensgrid-coordinator: job %s not restored: %s\n", id.c_str(),
                   s.ToString().c_str());
    }
  }

  // Signals go to a waiting thread (this one), not to gRPC's threads.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  lensgrid::service::CoordinatorService service(&scheduler);
  grpc::ServerBuilder builder;
  std::unique_ptr<lensgrid::MetricsServer> metrics;
  if (flags.count("metrics-listen")) {
    auto started = lensgrid::MetricsServer::Start(flags["metrics-listen"]);
    if (!started.ok()) {
      std::fprintf(stderr, "lensgrid-coordinator: %s\n", started.status().ToString().c_str());
      return 1;
    }
    metrics = std::move(*started);
    builder.experimental().SetInterceptorCreators(lensgrid::RpcMetricsInterceptors(*metrics));
    metrics->AddCollector([&scheduler] { return SchedulerFamilies(scheduler.Counters()); });
    std::fprintf(stderr, "lensgrid-coordinator: metrics on http://%s/metrics\n",
                 metrics->address().c_str());
  }
  int port = 0;
  builder.AddListeningPort(flags["listen"], grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  // Job specs carry every prompt (a lease only its shard's); the planner's
  // limits apply after parsing. A job may be twice the lease limit, plus
  // 4 MiB for its metadata.
  builder.SetMaxReceiveMessageSize(static_cast<int>(
      std::min<int64_t>(INT32_MAX, 2 * options.planner.max_shard_spec_bytes + (int64_t{4} << 20))));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "lensgrid-coordinator: cannot listen on %s\n", flags["listen"].c_str());
    return 1;
  }
  service.Start();
  server->GetHealthCheckService()->SetServingStatus(true);
  const std::string host = flags["listen"].substr(0, flags["listen"].rfind(':'));
  std::printf("listening on %s:%d (%zu jobs restored, %d damaged)\n", host.c_str(), port,
              jobs->size() - damaged, damaged);
  std::fflush(stdout);

  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "lensgrid-coordinator: signal %d, shutting down\n", sig);
  server->GetHealthCheckService()->SetServingStatus(false);
  service.Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}
