#include "client/search_command.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <ostream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "client/acdc_search.h"
#include "client/command_status.h"
#include "client/hub/hub_download.h"
#include "client/local_cluster.h"
#include "client/search_job.h"
#include "client/search_output.h"
#include "client/search_remote.h"
#include "client/search_values.h"
#include "client/worker_views.h"
#include "common/auth_flags.h"
#include "common/model_id.h"
#include "common/random_id.h"
#include "common/search_methods.h"
#include "common/status_macros.h"

namespace lensgrid {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// --coordinator ADDR or --local N: the job names the model by id and asks for the dataset
// (a built-in's name and seed, or the JSONL file's bytes); a worker serving the model builds it.
absl::StatusOr<SearchJobRequest> JobRequestOfFlags(const SearchFlags& flags,
                                                   const std::string& model_id) {
  SearchJobRequest r;
  r.model_id = model_id;
  r.weights_sha256 = flags.weights_sha256;
  r.method = flags.method;
  r.metric = MetricOfFlags(flags);
  r.ablation = flags.ablation;
  r.n_prompts = flags.n_prompts;
  r.seed = flags.seed;
  r.seq_len = flags.seq_len;
  r.prompts_per_shard = flags.prompts_per_shard;
  r.components_per_shard = flags.components_per_shard;
  r.circuit = CircuitParamsOfFlags(flags);
  if (absl::EndsWith(flags.dataset, ".jsonl")) {
    std::ifstream in(flags.dataset, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read dataset file ", flags.dataset));
    std::ostringstream bytes;
    bytes << in.rdbuf();
    r.jsonl = bytes.str();
    if (r.jsonl.find_first_not_of(" \t\r\n") == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("dataset ", flags.dataset, " has no prompts"));
    }
    r.dataset = std::filesystem::path(flags.dataset).filename().string();
  } else {
    const std::vector<std::string>& names = BuiltinDatasetNames();
    if (std::find(names.begin(), names.end(), flags.dataset) == names.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown dataset \"", flags.dataset.substr(0, 120),
                       "\" (built-in: ", absl::StrJoin(names, ", "), "; or a FILE.jsonl)"));
    }
    r.dataset = flags.dataset;
  }
  return r;
}

// The shape of the model a worker registered with the coordinator as serving `model_id` (what
// a circuit graph needs before any job: --edges, acdc). `why` says what needs it.
absl::StatusOr<v1::ModelShape> ModelShapeOnCoordinator(const std::string& address,
                                                       const ClientTransport& transport,
                                                       const std::string& model_id,
                                                       const std::string& why) {
  CoordinatorClient::Options options;
  options.transport = transport;
  LG_ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorClient> coordinator,
                      CoordinatorClient::Connect(address, options));
  LG_ASSIGN_OR_RETURN(std::vector<v1::WorkerInfo> workers, coordinator->ListWorkers());
  for (const v1::WorkerInfo& w : workers) {
    if (w.model_id() == model_id && w.model().n_layers() > 0) return w.model();
  }
  return absl::FailedPreconditionError(
      absl::StrCat(why, ": no worker serving model \"", model_id,
                   "\" is registered with the coordinator, so the circuit graph's shape is "
                   "unknown"));
}

CircuitGraph GraphOfShape(const v1::ModelShape& shape) {
  return CircuitGraph::Build(
      {static_cast<int>(shape.n_layers()), static_cast<int>(shape.n_heads()), shape.attn_only()});
}

// --method acdc through a coordinator: one acdc-step job per iteration and a
// circuit-faithfulness job at the end, each with a request id derived from the search's
// (REQUEST_ID/acdc/ITERATION, REQUEST_ID/faith): the same search run again with the same
// --request-id finds the finished iterations' jobs and goes on from the first unfinished one.
absl::Status ExecuteAcdcRemote(const SearchFlags& flags, const SearchJobRequest& request,
                               const std::string& address, RemoteSearchOptions options,
                               const LocalCluster* cluster, std::ostream& out, std::ostream& err) {
  LG_ASSIGN_OR_RETURN(v1::ModelShape shape, ModelShapeOnCoordinator(address, options.transport,
                                                                    request.model_id, "acdc"));
  SearchContext ctx;
  ctx.method = request.method;
  ctx.metric = request.metric;
  ctx.ablation = request.ablation;
  ctx.n_layers = shape.n_layers();
  ctx.n_heads = shape.n_heads();
  ctx.attn_only = shape.attn_only();
  const std::string base = options.request_id;
  options.quiet = true;  // a line per iteration instead
  std::string pin = request.weights_sha256;
  v1::JobStatus last_status;
  std::string first_job, last_job;
  int64_t jobs = 0;
  auto run_job = [&](Method method, const CircuitParams& params,
                     const std::string& suffix) -> absl::StatusOr<SearchValues> {
    SearchJobRequest r = request;
    r.method = MethodName(method);
    r.circuit = params;
    r.weights_sha256 = pin;  // every job on the first one's weights
    LG_ASSIGN_OR_RETURN(v1::JobSpec job, MakeSearchJobSpec(r));
    SearchContext job_ctx = ctx;
    job_ctx.method = r.method;
    job_ctx.circuit = params;
    LG_ASSIGN_OR_RETURN(SearchNames names, NamesOfContext(job_ctx));
    RemoteSearchOptions o = options;
    std::string id;
    v1::JobStatus status;
    o.job_id = &id;
    o.final_status = &status;
    o.request_id = base + suffix;
    LG_ASSIGN_OR_RETURN(SearchValues v, RunOnCoordinator(address, job, names, o));
    if (pin.empty()) pin = status.spec().weights_sha256();
    last_status = std::move(status);
    if (first_job.empty()) first_job = id;
    last_job = id;
    ++jobs;
    return v;
  };
  auto start = std::chrono::steady_clock::now();
  LG_ASSIGN_OR_RETURN(AcdcSearch acdc,
                      RunAcdcSearch(
                          ctx, flags.threshold,
                          [&](int iteration, const CircuitParams& p) {
                            return run_job(Method::kAcdcStep, p, absl::StrCat("/acdc/", iteration));
                          },
                          [&](const CircuitParams& p) {
                            return run_job(Method::kCircuitFaithfulness, p, "/faith");
                          },
                          &err));
  LG_ASSIGN_OR_RETURN(SearchContext out_ctx, ContextFromJobStatus(last_status));
  out_ctx.method = MethodName(Method::kAcdc);
  out_ctx.circuit = {};
  out_ctx.seconds = SecondsSince(start);
  out_ctx.normalize = flags.normalize;
  if (cluster != nullptr) {
    out_ctx.model_dir = flags.model_dir;
    out_ctx.processed = !flags.no_processing;
    out_ctx.run = {{"where", "local"}, {"workers", flags.local}};
  } else {
    out_ctx.run = {{"where", "coordinator"}, {"address", address}};
  }
  out_ctx.run["request_id"] = base;
  out_ctx.run["jobs"] = jobs;
  out_ctx.run["first_job_id"] = first_job;
  out_ctx.run["last_job_id"] = last_job;
  return WriteSearchOutput(acdc.values, out_ctx, {}, flags.output, out, nullptr, &acdc.circuit);
}

absl::Status ExecuteRemote(const SearchFlags& flags, const std::string& model_id, std::ostream& out,
                           std::ostream& err) {
  LG_ASSIGN_OR_RETURN(SearchJobRequest request, JobRequestOfFlags(flags, model_id));
  {
    // Bad names: before any cluster. --edges is read once the model's shape is known.
    SearchJobRequest early = request;
    if (!flags.edges_file.empty()) early.circuit.kept_edges = "to be read";
    LG_RETURN_IF_ERROR(MakeSearchJobSpec(early).status());
  }

  std::unique_ptr<LocalCluster> cluster;
  std::string address = flags.coordinator;
  RemoteSearchOptions options;
  options.tty = ::isatty(STDERR_FILENO) == 1;
  options.progress = &err;
  options.request_id = flags.request_id.empty() ? RandomHex128() : flags.request_id;
  options.transport = flags.transport;
  if (flags.local > 0) {
    LG_ASSIGN_OR_RETURN(cluster, LocalCluster::Start({.model_dir = flags.model_dir,
                                                      .workers = static_cast<int>(flags.local),
                                                      .threads_per_worker = flags.threads,
                                                      .no_processing = flags.no_processing,
                                                      .model_id = model_id}));
    address = cluster->address();
    options.transport = cluster->transport();
    options.health = [&cluster] { return cluster->Health(); };
    LG_RETURN_IF_ERROR(cluster->WaitForWorker(model_id, absl::Minutes(10)));
  }
  if (!flags.edges_file.empty()) {
    LG_ASSIGN_OR_RETURN(v1::ModelShape shape,
                        ModelShapeOnCoordinator(address, options.transport, model_id, "--edges"));
    LG_ASSIGN_OR_RETURN(request.circuit.kept_edges,
                        ReadEdgeList(flags.edges_file, GraphOfShape(shape)));
  }
  if (request.method == MethodName(Method::kAcdc)) {
    absl::Status s = ExecuteAcdcRemote(flags, request, address, options, cluster.get(), out, err);
    if (!s.ok() && cluster != nullptr) cluster->KeepLogs();
    return s;
  }
  LG_ASSIGN_OR_RETURN(v1::JobSpec job_spec, MakeSearchJobSpec(request));
  SearchContext names;  // the names only, for the SearchNames the result is read as
  names.method = request.method;
  names.metric = request.metric;
  names.ablation = request.ablation;
  names.circuit = request.circuit;
  LG_ASSIGN_OR_RETURN(SearchNames spec, NamesOfContext(names));
  std::string job_id;
  v1::JobStatus final_status;
  options.job_id = &job_id;
  options.final_status = &final_status;
  auto start = std::chrono::steady_clock::now();
  absl::StatusOr<SearchValues> result = RunOnCoordinator(address, job_spec, spec, options);
  std::optional<SearchValues> detectors;
  std::string detect_job_id;
  if (result.ok() && flags.detectors) {
    SearchJobRequest detect_request = request;
    detect_request.method = "detect-heads";
    detect_request.components_per_shard = 0;  // detectors shard by prompts only
    // The same weights as the main job, whichever worker prepares this one.
    detect_request.weights_sha256 = final_status.spec().weights_sha256();
    LG_ASSIGN_OR_RETURN(v1::JobSpec detect_job, MakeSearchJobSpec(detect_request));
    SearchNames detect = spec;
    detect.method = Method::kDetectHeads;
    RemoteSearchOptions detect_options = options;
    detect_options.job_id = &detect_job_id;
    detect_options.request_id = options.request_id + "/detectors";  // another job
    detect_options.final_status = nullptr;
    absl::StatusOr<SearchValues> d = RunOnCoordinator(address, detect_job, detect, detect_options);
    if (d.ok()) {
      detectors = std::move(*d);
    } else {
      result = d.status();
    }
  }
  absl::StatusOr<SearchContext> job_ctx =
      result.ok() ? ContextFromJobStatus(final_status) : absl::StatusOr<SearchContext>();
  std::optional<CircuitFindings> circuit;
  std::string faithfulness_job_id;
  if (result.ok() && job_ctx.ok()) {
    // eap / eap-ig: the circuit's faithfulness is another job on the same prompts and weights.
    auto run_faithfulness = [&](const CircuitParams& params) -> absl::StatusOr<SearchValues> {
      SearchJobRequest f_request = request;
      f_request.method = MethodName(Method::kCircuitFaithfulness);
      f_request.circuit = params;
      f_request.components_per_shard = 0;
      f_request.weights_sha256 = final_status.spec().weights_sha256();
      LG_ASSIGN_OR_RETURN(v1::JobSpec f_job, MakeSearchJobSpec(f_request));
      SearchNames f_names = spec;
      f_names.method = Method::kCircuitFaithfulness;
      f_names.circuit = params;
      RemoteSearchOptions f_options = options;
      f_options.job_id = &faithfulness_job_id;
      f_options.request_id = options.request_id + "/faith";  // another job
      f_options.final_status = nullptr;
      return RunOnCoordinator(address, f_job, f_names, f_options);
    };
    absl::StatusOr<std::optional<CircuitFindings>> c =
        CircuitOfSearch(*result, *job_ctx, CircuitChoiceOfFlags(flags), run_faithfulness);
    if (c.ok()) {
      circuit = std::move(*c);
    } else {
      result = c.status();
    }
  }
  if (!result.ok() || !job_ctx.ok()) {
    if (cluster != nullptr) cluster->KeepLogs();
    return result.ok() ? job_ctx.status() : result.status();
  }
  SearchContext ctx = std::move(*job_ctx);
  ctx.seconds = SecondsSince(start);
  ctx.normalize = flags.normalize;
  if (cluster != nullptr) {
    ctx.model_dir = flags.model_dir;  // the local workers' dir; this process read none of it
    ctx.processed = !flags.no_processing;
    ctx.run = {{"where", "local"}, {"workers", flags.local}, {"job_id", job_id}};
  } else {
    ctx.run = {{"where", "coordinator"}, {"address", address}, {"job_id", job_id}};
  }
  if (!detect_job_id.empty()) ctx.run["detectors_job_id"] = detect_job_id;
  if (!faithfulness_job_id.empty()) ctx.run["faithfulness_job_id"] = faithfulness_job_id;
  std::vector<AttentionView> views;
  if (!flags.output.empty()) {
    // The job's numbers are in; a report without the viewer beats no output.
    absl::StatusOr<WorkerViews> v = ViewsFromJobWorkers(address, options.transport, final_status,
                                                        HeadsToShow(*result, ctx.n_heads, 4));
    if (v.ok()) {
      views = std::move(v->views);
      if (!ctx.processed.has_value()) ctx.processed = v->processed;
    } else {
      err << "lensgrid search: note: report.html has no attention patterns ("
          << v.status().message() << ")\n";
    }
  }
  return WriteSearchOutput(*result, ctx, views, flags.output, out,
                           detectors ? &*detectors : nullptr, circuit ? &*circuit : nullptr);
}

}  // namespace

CircuitParams CircuitParamsOfFlags(const SearchFlags& flags) {
  CircuitParams p;
  p.ig_steps = flags.ig_steps;
  p.receivers = flags.receivers;
  return p;
}

CircuitChoice CircuitChoiceOfFlags(const SearchFlags& flags) {
  CircuitChoice c;
  c.top_k = flags.top_k;
  if (flags.threshold >= 0) c.threshold = flags.threshold;
  return c;
}

std::string MetricOfFlags(const SearchFlags& flags) {
  if (!flags.metric.empty()) return flags.metric;
  return flags.method == "acdc" ? "kl" : DefaultMetric(flags.dataset);
}

std::string CircuitFlagsError(const SearchFlags& flags) {
  const bool edges = flags.method == "eap" || flags.method == "eap-ig";
  if (flags.method == "acdc") {
    if (flags.threshold < 0) return "--method acdc needs --threshold T (>= 0)";
    if (flags.top_k != 0) return "--top-k is for eap and eap-ig; acdc keeps what --threshold says";
  }
  if (flags.method == "acdc-step") {
    return "acdc-step is one iteration of acdc: run --method acdc";
  }
  if (flags.ig_steps != 0 && flags.method != "eap-ig") return "--ig-steps is for --method eap-ig";
  if (!flags.receivers.empty() && flags.method != "path-patch") {
    return "--receivers is for --method path-patch";
  }
  if ((flags.top_k != 0 || flags.threshold >= 0) && !edges && flags.method != "acdc") {
    return "--top-k and --threshold are for --method eap, eap-ig and acdc";
  }
  if (flags.top_k != 0 && flags.threshold >= 0) return "give --top-k or --threshold, not both";
  if (!flags.edges_file.empty() && flags.method != "circuit-faithfulness") {
    return "--edges is for --method circuit-faithfulness";
  }
  if (flags.edges_file.empty() && flags.method == "circuit-faithfulness") {
    return "--method circuit-faithfulness needs --edges FILE (the circuit: edge names, one a "
           "line)";
  }
  return "";
}

std::string DefaultMetric(const std::string& dataset) {
  if (dataset == "greater-than") return "prob-diff";
  if (dataset == "induction") return "loss";
  return "logit-diff";
}

std::string ModelIdOfFlags(const SearchFlags& flags) {
  return flags.model_id.empty() ? DefaultModelId(flags.model_flag, !flags.no_processing)
                                : flags.model_id;
}

int RunSearchCommand(int argc, char** argv, std::ostream& out, std::ostream& err,
                     const SearchInProcess& in_process) {
  CLI::App app{"Circuit search over a dataset", "lensgrid search"};
  SearchFlags f;
  app.add_option("--model", f.model_dir,
                 "--in-process / --local: model dir, or name (gpt2, ORG/NAME[@REV]: from the "
                 "Hub's cache, pulled if absent); --coordinator: the model id its workers serve "
                 "(lensgrid-worker --model-id; `lensgrid workers` lists them), no file is read");
  bool offline = false;
  app.add_flag("--offline", offline,
               "never download: a model name must be in the cache (also LENSGRID_OFFLINE=1)");
  app.add_option("--dataset", f.dataset,
                 "induction | ioi | gender-bias | greater-than | FILE.jsonl")
      ->required();
  // The names come from the one table (common/search_methods.h).
  app.add_option("--method", f.method, MethodNames())->required();
  app.add_option("--ablation", f.ablation, AblationNames() + " (ablations)");
  app.add_option("--metric", f.metric, MetricNames() + " (default: the dataset's own)");
  app.add_option("--n-prompts", f.n_prompts, "prompts to generate (or to read at most)");
  app.add_option("--seed", f.seed, "dataset seed");
  app.add_option("--seq-len", f.seq_len, "induction: random tokens per half");
  app.add_option("--ig-steps", f.ig_steps,
                 absl::StrCat("eap-ig: integrated-gradient steps (default ", kDefaultIgSteps, ")"))
      ->check(CLI::Range(1, kMaxIgSteps));
  app.add_option("--receivers", f.receivers,
                 "path-patch: the receiving inputs the paths end at, e.g. L1H1.k,MLP2 (default: "
                 "logits)")
      ->delimiter(',');
  app.add_option("--top-k", f.top_k,
                 absl::StrCat("eap, eap-ig: the circuit is the K edges of largest |score| "
                              "(default ",
                              kDefaultTopK, ")"))
      ->check(CLI::PositiveNumber);
  app.add_option("--threshold", f.threshold,
                 "eap, eap-ig: the circuit is every edge with |score| >= T (instead of --top-k)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--edges", f.edges_file,
                 "circuit-faithfulness: the circuit, a file of edge names (\"L0H1 -> L1H1.k\"), "
                 "one a line");
  app.add_flag("--normalize", f.normalize,
               "patching: also (patched - corrupted) / (clean - corrupted)");
  app.add_flag("--detectors", f.detectors,
               "also score every head with the detectors (previous-token, induction, "
               "duplicate-token) on the same prompts");
  app.add_flag("--naive", f.naive, "one full forward per intervention (the reference path)");
  app.add_flag("--no-processing", f.no_processing,
               "Hugging Face weights as they are (--in-process, --local)");
  app.add_flag("--in-process", f.in_process, "run in this process");
  app.add_option("--local", f.local, "run on N local workers (with the coordinator)");
  app.add_option("--coordinator", f.coordinator, "submit to a coordinator at ADDR");
  AddClientTransportFlags(&app, &f.transport);
  if (const char* env = std::getenv("LENSGRID_REQUEST_ID")) f.request_id = env;
  app.add_option("--request-id", f.request_id,
                 "--coordinator: the job's request id (<= 118 printable bytes; default: "
                 "$LENSGRID_REQUEST_ID, else random): a search run again with the same one "
                 "(a retried batch pod) follows the job the first run started");
  app.add_option("--output", f.output, "write result.json and result.safetensors here");
  app.add_option("--threads", f.threads,
                 "CPU threads for matmuls (default: all; --local: per worker, cores / N)");
  app.add_option(
         "--prompts-per-shard", f.prompts_per_shard,
         "--local/--coordinator: prompts in one shard (default: the planner's cost estimate)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--components-per-shard", f.components_per_shard,
                 "--local/--coordinator: heads/layers/positions in one shard (default: the "
                 "planner's)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--model-id", f.model_id,
                 "--local: the id the local workers serve the model under (default: the name "
                 "of the model's dir, or the Hub name; +no-processing with --no-processing); "
                 "--coordinator: the model id, as --model");
  app.add_option("--weights-sha256", f.weights_sha256,
                 "--local/--coordinator: run only on workers whose weights have this identity "
                 "(the sha256 of model.safetensors, or of a sharded checkpoint as README's "
                 "Limits say; 64 hex digits; default: the weights of the worker that prepares "
                 "the job)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e, out, err);
  }
  if (f.request_id.size() > 118) {  // the coordinator's 128, less "/detectors"
    err << "lensgrid search: --request-id (or $LENSGRID_REQUEST_ID) is " << f.request_id.size()
        << " bytes, over the 118-byte limit\n";
    return 2;
  }
  const int where =
      (f.in_process ? 1 : 0) + (f.local > 0 ? 1 : 0) + (f.coordinator.empty() ? 0 : 1);
  if (where != 1) {
    err << "lensgrid search: say where to run, once: --in-process, --local N (N >= 1) or "
           "--coordinator HOST:PORT\n";
    return 2;
  }
  if (const std::string e = CircuitFlagsError(f); !e.empty()) {
    err << "lensgrid search: " << e << "\n";
    return 2;
  }
  if (f.naive && !f.in_process) {
    err << "lensgrid search: --naive is for --in-process (workers always run the fast path)\n";
    return 2;
  }
  if (f.model_dir.empty() && (f.coordinator.empty() || f.model_id.empty())) {
    err << "lensgrid search: --model is required (--coordinator: the model id its workers "
           "serve, see `lensgrid workers`)\n";
    return 2;
  }
  if (!f.coordinator.empty()) {
    // The workers own the model: this process reads no file of it (and resolves no name).
    if (f.no_processing) {
      err << "lensgrid search: --no-processing is for --in-process and --local; with "
             "--coordinator the workers load the weights (lensgrid-worker --no-processing): "
             "name the model id they serve\n";
      return 2;
    }
    std::string model_id = f.model_id.empty() ? f.model_dir : f.model_id;
    std::error_code ec;
    if (f.model_id.empty() && std::filesystem::is_directory(f.model_dir, ec)) {
      // Scripts from before model ids passed the dir: take the id a worker on it serves by
      // default. Nothing in it is read.
      model_id = DefaultModelId(f.model_dir, /*processed=*/true);
      err << "lensgrid search: note: --model " << f.model_dir << " is a dir; submitting model id \""
          << model_id << "\" (the id a worker on it serves by default)\n";
    }
    return ReportCommandStatus("search", ExecuteRemote(f, model_id, out, err), err);
  }
  if (!f.weights_sha256.empty() && f.in_process) {
    err << "lensgrid search: --weights-sha256 is for --local and --coordinator (in-process "
           "runs the weights of --model)\n";
    return 2;
  }
  f.model_flag = f.model_dir;
  if (absl::Status s = hub::ResolveModelFlag(&f.model_dir, offline, &err); !s.ok()) {
    return ReportCommandStatus("search", s, err);
  }
  if (f.in_process) {
    if (!in_process) {
      err << "lensgrid search: --in-process runs in lensgrid-local (the executable with "
             "LibTorch, beside lensgrid)\n";
      return 2;
    }
    return ReportCommandStatus("search", in_process(f, out), err);
  }
  return ReportCommandStatus("search", ExecuteRemote(f, ModelIdOfFlags(f), out, err), err);
}

}  // namespace lensgrid
