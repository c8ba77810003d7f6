// lensgrid-coordinator: hands circuit-search shards to workers and merges
// their results; serves lensgrid.v1.Coordinator (clients) and
// lensgrid.v1.WorkQueue (workers), grpc.health.v1 and reflection.
//
//   lensgrid-coordinator --listen 0.0.0.0:7070 --state-dir /var/lib/lensgrid
//
// --listen HOST:0 picks a free port; the chosen address is printed as
// "listening on HOST:PORT". --worker-listen HOST:PORT serves WorkQueue there
// alone (printed first as "worker queue on HOST:PORT"); without it both APIs
// are on --listen. State (jobs, completed shards, events) lives in
// --state-dir; a restart on the same dir resumes every unfinished job.
// --retain-finished 7d (the default; Nd, Nh, Nm, Ns, 0 = for ever): finished
// jobs and their results are deleted this long after they finished.
// Security (README.md#security): --tls-cert/--tls-key serve TLS, --tls-client-ca
// requires client certificates (mTLS), --auth-tokens FILE requires bearer
// tokens with roles (reloaded on SIGHUP); a non-loopback --listen without TLS
// and tokens needs --insecure. Each also from LENSGRID_TLS_CERT, ... .
// --metrics-listen HOST:PORT serves Prometheus metrics at /metrics
// (deploy/README.md). --health-listen HOST:PORT serves only grpc.health.v1 in
// plaintext (probes have no credentials); --log-format json writes every log
// line as JSON (one per job lifecycle event and shard failure); connections
// get keepalive pings and a GOAWAY after --max-connection-age-ms (30 min). Test knobs:
// --initial-lease-ms, --min-lease-ms,
// --worker-timeout-ms, --max-attempts, --heartbeat-ms. Flags are parsed by
// CLI11 like every lensgrid binary's (--help lists them with their defaults).
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

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/auth_flags.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/mutex_mode.h"
#include "common/serving.h"
#include "service/coordinator_service.h"
#include "service/state_store.h"

namespace {

// One log line (common/log.h: text, or JSON with --log-format json).
void Log(lensgrid::LogLevel level, const std::string& message, const std::string& job = "") {
  lensgrid::LogEvent(level, message, {{"job", job}});
}

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
      lensgrid::GaugeFamily("lensgrid_workers", "registered workers now alive", c.workers_alive),
      lensgrid::GaugeFamily("lensgrid_pending_shards",
                            "shards waiting for a worker (queued or backing off; a job waiting "
                            "to be prepared counts 1): scale workers on this",
                            c.pending_shards),
      lensgrid::BuildInfoFamily("coordinator")};
}

// "7d", "12h", "30m", "45s", "0" -> milliseconds.
absl::StatusOr<int64_t> ParseDurationMs(const std::string& text) {
  if (text == "0") return 0;
  const std::map<char, int64_t> units = {
      {'d', 86400000}, {'h', 3600000}, {'m', 60000}, {'s', 1000}};
  int64_t n = 0;
  auto unit = text.empty() ? units.end() : units.find(text.back());
  if (unit == units.end() || !absl::SimpleAtoi(text.substr(0, text.size() - 1), &n) || n < 0 ||
      n > (int64_t{1} << 62) / unit->second) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\" is not a duration like 7d, 12h, 30m, 45s or 0"));
  }
  return n * unit->second;
}

struct Flags {
  std::string listen, state_dir, metrics_listen;
  std::string retain_finished = "7d";
  std::string worker_listen;  // empty: WorkQueue on --listen too
  std::string health_listen;  // empty: no plaintext health port
  std::string log_format = "text";
  lensgrid::ConnectionOptions connections;
  lensgrid::ServerSecurity security;
  lensgrid::service::SchedulerOptions scheduler;
  lensgrid::service::StateStoreOptions store;
};

// The flags, with the same parser (CLI11) as every other lensgrid binary. Returns an exit code
// when the program should end (help, a bad flag).
std::optional<int> ParseFlags(int argc, char** argv, Flags* f) {
  CLI::App app{"Hands circuit-search shards to workers and merges their results",
               "lensgrid-coordinator"};
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // last wins
  auto& o = f->scheduler;
  app.add_option("--listen", f->listen, "HOST:PORT (port 0: pick a free one)")->required();
  app.add_option("--worker-listen", f->worker_listen,
                 "HOST:PORT to serve the worker-facing API (lensgrid.v1.WorkQueue) on, alone; "
                 "default: on --listen beside lensgrid.v1.Coordinator");
  app.add_option("--summarize-after-ms", o.summarize_after_ms,
                 "a finished job is kept whole in memory this long, then as its summary (the "
                 "rest is read from the store)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--state-dir", f->state_dir, "where jobs, results and events are kept")
      ->required();
  lensgrid::AddServerSecurityFlags(&app, &f->security);
  app.add_option("--health-listen", f->health_listen,
                 "HOST:PORT of a plaintext grpc.health.v1-only server (for probes without "
                 "credentials)");
  // Long polls and WatchJob streams reconnect by themselves; an old
  // connection's calls in flight finish first.
  lensgrid::AddConnectionFlags(&app, &f->connections, /*default_max_age_ms=*/30 * 60 * 1000);
  app.add_option("--log-format", f->log_format, "text | json")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "json"}));
  app.add_option("--metrics-listen", f->metrics_listen,
                 "HOST:PORT to serve Prometheus metrics on (GET /metrics)");
  const auto positive = CLI::Range(int64_t{1}, int64_t{1} << 62);
  app.add_option("--initial-lease-ms", o.initial_lease_ms, "lease before any shard time is known")
      ->capture_default_str()
      ->check(positive);
  app.add_option("--min-lease-ms", o.min_lease_ms, "shortest lease")
      ->capture_default_str()
      ->check(positive);
  app.add_option("--worker-timeout-ms", o.worker_timeout_ms,
                 "a worker silent this long is lost; its leases are re-queued")
      ->capture_default_str()
      ->check(positive);
  app.add_option("--max-attempts", o.max_attempts, "failures of one shard before the job fails")
      ->capture_default_str()
      ->check(positive);
  app.add_option("--heartbeat-ms", o.heartbeat_interval_ms, "how often workers report")
      ->capture_default_str()
      ->check(positive);
  app.add_option("--max-shards", o.planner.max_shards, "shards of one job")
      ->capture_default_str()
      ->check(positive);
  app.add_option("--max-lease-bytes", o.planner.max_shard_spec_bytes,
                 "the largest shard spec a lease may carry")
      ->capture_default_str()
      ->check(positive);
  app.add_option("--max-result-bytes", o.planner.max_result_bytes, "a job's merged result")
      ->capture_default_str()
      ->check(positive);
  app.add_option("--max-client-json-bytes", o.planner.max_client_json_bytes, "a job's client_json")
      ->capture_default_str()
      ->check(positive);
  app.add_option("--max-dataset-bytes", o.planner.max_dataset_bytes,
                 "a job's JSONL dataset (built by a worker)")
      ->capture_default_str()
      ->check(positive);
  app.add_option("--model-wait-ms", o.model_wait_ms,
                 "a job that no live worker serves fails after this long (0: waits for ever)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  bool no_prompt_affinity = false;
  app.add_flag("--no-prompt-affinity", no_prompt_affinity,
               "lease shards in plan order, not preferably to the worker that ran a shard of "
               "the same prompts (whose base run it has cached)");
  app.add_option("--max-workers", o.max_workers, "registered workers")
      ->capture_default_str()
      ->check(positive);
  app.add_option("--forget-worker-ms", o.forget_worker_ms, "lost workers are forgotten after")
      ->capture_default_str()
      ->check(positive);
  app.add_option("--store-retry-ms", o.store_retry_ms, "retry a failing state store every")
      ->capture_default_str()
      ->check(positive);
  app.add_flag("--fresh-state", f->store.start_fresh,
               "start an empty store where the state dir's marker says a database should be");
  app.add_option("--retain-finished", f->retain_finished,
                 "finished jobs (with their results) are deleted this long after they finished: "
                 "Nd, Nh, Nm or Ns; 0 keeps them for ever")
      ->capture_default_str()
      ->check([](const std::string& v) {
        absl::StatusOr<int64_t> ms = ParseDurationMs(v);
        return ms.ok() ? std::string() : std::string(ms.status().message());
      });
  app.add_option("--testing-max-db-pages-file", f->store.max_page_count_file,
                 "testing: SQLite's max_page_count is read from FILE before each write")
      ->group("");  // hidden
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  o.retain_finished_ms = *ParseDurationMs(f->retain_finished);
  o.prompt_affinity = !no_prompt_affinity;
  return std::nullopt;
}

// The store and every job in it; a damaged job is reported (and listed as FAILED with
// DATA_LOSS), the others are served. Returns the number restored and damaged.
absl::StatusOr<std::pair<size_t, int>> RestoreJobs(lensgrid::service::StateStore* store,
                                                   lensgrid::service::Scheduler* scheduler) {
  auto jobs = store->Load();
  if (!jobs.ok()) return jobs.status();
  int damaged = 0;
  for (auto& job : *jobs) {
    const std::string id = job.job_id;
    if (!job.notes.empty()) {
      Log(lensgrid::LogLevel::kWarning, absl::StrCat("job ", id, ": ", job.notes), id);
    }
    absl::Status s = scheduler->Restore(std::move(job));
    if (!s.ok()) {
      ++damaged;
      Log(lensgrid::LogLevel::kError, absl::StrCat("job ", id, " not restored: ", s.ToString()),
          id);
    }
  }
  return std::make_pair(jobs->size() - damaged, damaged);
}

int Fail(const absl::Status& status) {
  Log(lensgrid::LogLevel::kError, status.ToString());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  lensgrid::UseReleaseMutexes();
  Flags flags;
  if (std::optional<int> done = ParseFlags(argc, argv, &flags)) return *done;
  lensgrid::SetLogComponent("lensgrid-coordinator");
  (void)lensgrid::SetLogFormat(flags.log_format);  // checked by the flag
  auto warning = lensgrid::CheckListenSecurity(flags.listen, flags.security);
  if (!warning.ok()) {
    Log(lensgrid::LogLevel::kError, std::string(warning.status().message()));
    return 2;
  }
  if (!warning->empty()) Log(lensgrid::LogLevel::kWarning, *warning);
  if (!flags.worker_listen.empty()) {
    auto worker_warning = lensgrid::CheckListenSecurity(flags.worker_listen, flags.security);
    if (!worker_warning.ok()) {
      Log(lensgrid::LogLevel::kError,
          absl::StrCat("--worker-listen: ", worker_warning.status().message()));
      return 2;
    }
    if (!worker_warning->empty()) {
      Log(lensgrid::LogLevel::kWarning, absl::StrCat("--worker-listen: ", *worker_warning));
    }
  }
  auto credentials = lensgrid::MakeServerCredentials(flags.security);
  if (!credentials.ok()) return Fail(credentials.status());
  auto authorizer = lensgrid::Authorizer::Open(flags.security.auth_tokens);
  if (!authorizer.ok()) return Fail(authorizer.status());
  auto store = lensgrid::service::StateStore::Open(flags.state_dir, flags.store);
  if (!store.ok()) return Fail(store.status());
  lensgrid::service::RealClock clock;
  lensgrid::service::Scheduler scheduler(&clock, flags.scheduler, store->get());
  auto restored = RestoreJobs(store->get(), &scheduler);
  if (!restored.ok()) return Fail(restored.status());

  // Signals go to a waiting thread (this one), not to gRPC's threads.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);  // reload --auth-tokens
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  // The worker-facing API beside the client-facing one (--listen), or alone
  // on --worker-listen; one Scheduler and one pump behind both.
  lensgrid::service::WorkQueueService queue(&scheduler, authorizer->get());
  lensgrid::service::CoordinatorService service(&scheduler, authorizer->get(), &queue);
  std::unique_ptr<lensgrid::MetricsServer> metrics;
  if (!flags.metrics_listen.empty()) {
    auto started = lensgrid::MetricsServer::Start(flags.metrics_listen);
    if (!started.ok()) return Fail(started.status());
    metrics = std::move(*started);
    metrics->AddCollector([&scheduler] { return SchedulerFamilies(scheduler.Counters()); });
    Log(lensgrid::LogLevel::kInfo,
        absl::StrCat("metrics on http://", metrics->address(), "/metrics"));
  }
  // Job specs carry every prompt (a lease only its shard's); the planner's
  // limits apply after parsing. A job may be twice the lease limit, plus
  // 4 MiB for its metadata.
  // A JSONL dataset (--max-dataset-bytes) comes in one SubmitJob too.
  const lensgrid::service::PlannerOptions& planner = flags.scheduler.planner;
  const int max_receive = static_cast<int>(std::min<int64_t>(
      INT32_MAX,
      std::max(2 * planner.max_shard_spec_bytes, planner.max_dataset_bytes) + (int64_t{4} << 20)));
  // Health (grpc.health.v1) and reflection are on every server.
  auto serve = [&](const std::string& address, std::vector<grpc::Service*> services,
                   int* port) -> std::unique_ptr<grpc::Server> {
    grpc::ServerBuilder builder;
    lensgrid::ApplyConnectionOptions(flags.connections, &builder);
    if (metrics != nullptr) {
      builder.experimental().SetInterceptorCreators(lensgrid::RpcMetricsInterceptors(*metrics));
    }
    builder.AddListeningPort(address, *credentials, port);
    for (grpc::Service* s : services) builder.RegisterService(s);
    builder.SetMaxReceiveMessageSize(max_receive);
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    if (server == nullptr || *port == 0) {
      Log(lensgrid::LogLevel::kError, absl::StrCat("cannot listen on ", address));
      return nullptr;
    }
    return server;
  };
  std::unique_ptr<lensgrid::HealthListener> health;
  if (!flags.health_listen.empty()) {
    auto started = lensgrid::HealthListener::Start(flags.health_listen);
    if (!started.ok()) return Fail(started.status());
    health = std::move(*started);
    health->AddServiceName("lensgrid.v1.Coordinator");
    health->AddServiceName("lensgrid.v1.WorkQueue");
    Log(lensgrid::LogLevel::kInfo, absl::StrCat("health on ", health->address()));
  }
  const bool separate = !flags.worker_listen.empty();
  int port = 0, worker_port = 0;
  std::unique_ptr<grpc::Server> server = separate ? serve(flags.listen, {&service}, &port)
                                                  : serve(flags.listen, {&service, &queue}, &port);
  if (server == nullptr) return 1;
  std::unique_ptr<grpc::Server> worker_server;
  if (separate) {
    worker_server = serve(flags.worker_listen, {&queue}, &worker_port);
    if (worker_server == nullptr) return 1;
  }
  service.Start();
  auto set_serving = [&](bool serving) {
    server->GetHealthCheckService()->SetServingStatus(serving);
    if (worker_server != nullptr) worker_server->GetHealthCheckService()->SetServingStatus(serving);
    if (health != nullptr) health->SetServing(serving);
  };
  set_serving(true);
  const std::string host = flags.listen.substr(0, flags.listen.rfind(':'));
  if (separate) {
    const std::string worker_host = flags.worker_listen.substr(0, flags.worker_listen.rfind(':'));
    std::printf("worker queue on %s:%d\n", worker_host.c_str(), worker_port);
  }
  std::printf("listening on %s:%d (%zu jobs restored, %d damaged)\n", host.c_str(), port,
              restored->first, restored->second);
  std::fflush(stdout);

  int sig = 0;
  while (sigwait(&signals, &sig) == 0 && sig == SIGHUP) {
    if (!(*authorizer)->enabled()) {
      Log(lensgrid::LogLevel::kWarning, "SIGHUP: no --auth-tokens to reload");
      continue;
    }
    auto tokens = (*authorizer)->Reload();
    if (tokens.ok()) {
      Log(lensgrid::LogLevel::kInfo,
          absl::StrCat("SIGHUP: reloaded ", flags.security.auth_tokens, " (", *tokens, " tokens)"));
    } else {
      Log(lensgrid::LogLevel::kWarning,
          absl::StrCat("SIGHUP: kept the old tokens: ", tokens.status().ToString()));
    }
  }
  Log(lensgrid::LogLevel::kInfo, absl::StrCat("signal ", sig, ", shutting down"));
  set_serving(false);
  service.Stop();
  const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(2);
  if (worker_server != nullptr) worker_server->Shutdown(deadline);
  server->Shutdown(deadline);
  return 0;
}
