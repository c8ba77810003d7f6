#include "client/search_command.h"

#include <torch/torch.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <ostream>

#include "absl/strings/str_cat.h"
#include "client/command_status.h"
#include "client/hub/hub_download.h"
#include "client/local_cluster.h"
#include "client/report_views.h"
#include "client/search_output.h"
#include "client/search_remote.h"
#include "common/model_id.h"
#include "common/search_methods.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "worker/model/analysis/search.h"
#include "worker/model/cpu_threads.h"

namespace lensgrid {
namespace {

struct SearchFlags {
  std::string model_dir, dataset, method, ablation = "zero", metric, output;
  int64_t n_prompts = 16, seq_len = 16;
  uint64_t seed = 0;
  bool normalize = false, naive = false, in_process = false, no_processing = false;
  bool detectors = false;
  int64_t local = 0;
  std::string coordinator, model_id;
  int64_t prompts_per_shard = 0, components_per_shard = 0;
  int threads = 0;
};

// The metric a method reads when none is given: what the dataset is about.
std::string DefaultMetric(const std::string& dataset) {
  if (dataset == "greater-than") return "prob-diff";
  if (dataset == "induction") return "loss";
  return "logit-diff";
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The search spec and the context of its output, from the flags and the model.
absl::StatusOr<SearchContext> MakeContext(const SearchFlags& flags, const ModelConfig& cfg,
                                          const std::string& weights_sha256,
                                          const Dataset& dataset) {
  SearchContext ctx;
  ctx.method = flags.method;
  ctx.metric = flags.metric.empty() ? DefaultMetric(flags.dataset) : flags.metric;
  ctx.ablation = flags.ablation;
  ctx.normalize = flags.normalize;
  ctx.model_dir = flags.model_dir;
  ctx.weights_sha256 = weights_sha256;
  ctx.processed = !flags.no_processing;
  ctx.n_layers = cfg.n_layers;
  ctx.n_heads = cfg.n_heads;
  ctx.dataset = dataset.name;
  ctx.n_prompts = static_cast<int64_t>(dataset.prompts.size());
  ctx.seed = flags.seed;
  ctx.seq_len = flags.seq_len;
  ctx.positions = dataset.max_length();
  LG_RETURN_IF_ERROR(SpecOfContext(ctx).status());  // names checked before any work
  return ctx;
}

absl::Status ExecuteInProcess(const SearchFlags& flags, std::ostream& out) {
  ConfigureCpuThreads(flags.threads);
  LoadOptions load;
  if (flags.no_processing) load.processing = ProcessingOptions::None();
  LG_ASSIGN_OR_RETURN(auto model, HookedTransformer::FromPretrained(flags.model_dir, load));
  auto tokenizer = LoadTokenizerForModel(flags.model_dir);
  DatasetSpec ds_spec{flags.dataset, flags.n_prompts, flags.seed, flags.seq_len};
  LG_ASSIGN_OR_RETURN(Dataset dataset, MakeDataset(ds_spec, model->cfg(),
                                                   tokenizer.ok() ? tokenizer->get() : nullptr));
  LG_ASSIGN_OR_RETURN(SearchContext ctx, MakeContext(flags, model->cfg(),
                                                     model->load_report().weights_sha256, dataset));
  LG_ASSIGN_OR_RETURN(SearchSpec spec, SpecOfContext(ctx));
  SearchOptions options;
  options.naive = flags.naive;
  auto start = std::chrono::steady_clock::now();
  LG_ASSIGN_OR_RETURN(SearchResult result, RunSearch(*model, dataset, spec, options));
  std::optional<SearchResult> detectors;
  if (flags.detectors) {
    SearchSpec detect = spec;
    detect.method = Method::kDetectHeads;
    LG_ASSIGN_OR_RETURN(detectors, RunSearch(*model, dataset, detect, options));
  }
  ctx.seconds = SecondsSince(start);
  ctx.run = {{"where", "in-process"}};
  std::vector<AttentionView> views;
  if (!flags.output.empty()) {
    LG_ASSIGN_OR_RETURN(views, TopHeadViews(*model, tokenizer.ok() ? tokenizer->get() : nullptr,
                                            dataset.prompts.front(), result));
  }
  return WriteSearchOutput(result, ctx, views, flags.output, out,
                           detectors ? &*detectors : nullptr);
}

// --coordinator ADDR or --local N: the client builds the dataset (it needs the
// config and tokenizer, not the weights) and sends every prompt inline.
absl::Status ExecuteRemote(const SearchFlags& flags, std::ostream& out, std::ostream& err) {
  LG_ASSIGN_OR_RETURN(ModelConfig cfg, LoadModelConfig(flags.model_dir));
  LG_ASSIGN_OR_RETURN(std::string sha256, Sha256FileHex(flags.model_dir + "/model.safetensors"));
  auto tokenizer = LoadTokenizerForModel(flags.model_dir);
  DatasetSpec ds_spec{flags.dataset, flags.n_prompts, flags.seed, flags.seq_len};
  LG_ASSIGN_OR_RETURN(Dataset dataset,
                      MakeDataset(ds_spec, cfg, tokenizer.ok() ? tokenizer->get() : nullptr));
  LG_ASSIGN_OR_RETURN(SearchContext ctx, MakeContext(flags, cfg, sha256, dataset));
  LG_ASSIGN_OR_RETURN(SearchSpec spec, SpecOfContext(ctx));
  const std::string model_id =
      flags.model_id.empty() ? DefaultModelId(!flags.no_processing) : flags.model_id;

  std::unique_ptr<LocalCluster> cluster;
  std::string address = flags.coordinator;
  ctx.run = {{"where", "coordinator"}, {"address", address}};
  RemoteSearchOptions options;
  options.tty = ::isatty(STDERR_FILENO) == 1;
  options.progress = &err;
  if (flags.local > 0) {
    LG_ASSIGN_OR_RETURN(cluster, LocalCluster::Start({.model_dir = flags.model_dir,
                                                      .workers = static_cast<int>(flags.local),
                                                      .threads_per_worker = flags.threads,
                                                      .no_processing = flags.no_processing,
                                                      .model_id = flags.model_id}));
    address = cluster->address();
    ctx.run = {{"where", "local"}, {"workers", flags.local}};
    options.health = [&cluster] { return cluster->Health(); };
  }
  std::string job_id;
  options.job_id = &job_id;
  auto start = std::chrono::steady_clock::now();
  v1::JobSpec job_spec = MakeJobSpec(dataset, ctx, model_id, cfg.attn_only);
  job_spec.set_prompts_per_shard(flags.prompts_per_shard);
  job_spec.set_components_per_shard(flags.components_per_shard);
  absl::StatusOr<SearchResult> result = RunOnCoordinator(address, job_spec, spec, options);
  std::optional<SearchResult> detectors;
  if (result.ok() && flags.detectors) {
    SearchContext detect_ctx = ctx;
    detect_ctx.method = "detect-heads";
    LG_ASSIGN_OR_RETURN(SearchSpec detect, SpecOfContext(detect_ctx));
    v1::JobSpec detect_job = MakeJobSpec(dataset, detect_ctx, model_id, cfg.attn_only);
    detect_job.set_prompts_per_shard(flags.prompts_per_shard);
    std::string detect_job_id;
    options.job_id = &detect_job_id;
    absl::StatusOr<SearchResult> d = RunOnCoordinator(address, detect_job, detect, options);
    ctx.run["detectors_job_id"] = detect_job_id;
    if (d.ok()) {
      detectors = std::move(*d);
    } else {
      result = d.status();
    }
  }
  if (!result.ok()) {
    if (cluster != nullptr) cluster->KeepLogs();
    return result.status();
  }
  ctx.seconds = SecondsSince(start);
  ctx.run["job_id"] = job_id;
  std::vector<AttentionView> views;
  if (!flags.output.empty()) {
    // The job's numbers are in; a report without the viewer beats no output.
    absl::StatusOr<std::vector<AttentionView>> v =
        ViewsFromModelDir(ctx, *result, &dataset.prompts.front());
    if (v.ok()) {
      views = std::move(*v);
    } else {
      err << "lensgrid search: note: report.html has no attention patterns ("
          << v.status().message() << ")\n";
    }
  }
  return WriteSearchOutput(*result, ctx, views, flags.output, out,
                           detectors ? &*detectors : nullptr);
}

}  // namespace

int RunSearchCommand(int argc, char** argv, std::ostream& out, std::ostream& err) {
  CLI::App app{"Circuit search over a dataset", "lensgrid search"};
  SearchFlags f;
  app.add_option("--model", f.model_dir,
                 "model dir, or name (gpt2, ORG/NAME[@REV]: from the Hub's cache, pulled if "
                 "absent)")
      ->required();
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
  app.add_flag("--normalize", f.normalize,
               "patching: also (patched - corrupted) / (clean - corrupted)");
  app.add_flag("--detectors", f.detectors,
               "also score every head with the detectors (previous-token, induction, "
               "duplicate-token) on the same prompts");
  app.add_flag("--naive", f.naive, "one full forward per intervention (the reference path)");
  app.add_flag("--no-processing", f.no_processing, "Hugging Face weights as they are");
  app.add_flag("--in-process", f.in_process, "run in this process");
  app.add_option("--local", f.local, "run on N local workers (with the coordinator)");
  app.add_option("--coordinator", f.coordinator, "submit to a coordinator at ADDR");
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
                 "--coordinator: the model id workers registered with (default: gpt2, or "
                 "gpt2+no-processing)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e, out, err);
  }
  const int where =
      (f.in_process ? 1 : 0) + (f.local > 0 ? 1 : 0) + (f.coordinator.empty() ? 0 : 1);
  if (where != 1) {
    err << "lensgrid search: say where to run, once: --in-process, --local N (N >= 1) or "
           "--coordinator HOST:PORT\n";
    return 2;
  }
  if (f.naive && !f.in_process) {
    err << "lensgrid search: --naive is for --in-process (workers always run the fast path)\n";
    return 2;
  }
  if (absl::Status s = hub::ResolveModelFlag(&f.model_dir, offline, &err); !s.ok()) {
    return ReportCommandStatus("search", s, err);
  }
  if (f.in_process) return ReportCommandStatus("search", ExecuteInProcess(f, out), err);
  return ReportCommandStatus("search", ExecuteRemote(f, out, err), err);
}

}  // namespace lensgrid
