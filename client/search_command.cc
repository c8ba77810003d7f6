#include "client/search_command.h"
#include "client/command_status.h"

#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <chrono>
#include <fstream>
#include <iomanip>
#include <ostream>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "worker/model/analysis/search.h"
#include "worker/model/cpu_threads.h"
#include "worker/model/tensor_io.h"

namespace lensgrid {
namespace {

struct SearchFlags {
  std::string model_dir, dataset, method, ablation = "zero", metric, output;
  int64_t n_prompts = 16, seq_len = 16;
  uint64_t seed = 0;
  bool normalize = false, naive = false, in_process = false, no_processing = false;
  int64_t local = 0;
  std::string coordinator;
  int threads = 0;
};

// A tensor as nested JSON lists.
nlohmann::json Nested(const torch::Tensor& t) {
  if (t.dim() == 0) return t.item<double>();
  nlohmann::json arr = nlohmann::json::array();
  for (int64_t i = 0; i < t.size(0); ++i) arr.push_back(Nested(t[i]));
  return arr;
}

// The metric a method reads when none is given: what the dataset is about.
std::string DefaultMetric(const std::string& dataset) {
  if (dataset == "greater-than") return "prob-diff";
  if (dataset == "induction") return "loss";
  return "logit-diff";
}

absl::Status Execute(const SearchFlags& flags, std::ostream& out) {
  ConfigureCpuThreads(flags.threads);
  LoadOptions load;
  if (flags.no_processing) load.processing = ProcessingOptions::None();
  LG_ASSIGN_OR_RETURN(auto model, HookedTransformer::FromPretrained(flags.model_dir, load));
  auto tokenizer = LoadTokenizerForModel(flags.model_dir);
  SearchSpec spec;
  LG_ASSIGN_OR_RETURN(spec.method, ParseMethod(flags.method));
  std::string metric_name = flags.metric.empty() ? DefaultMetric(flags.dataset) : flags.metric;
  LG_ASSIGN_OR_RETURN(spec.metric, ParseMetric(metric_name));
  LG_ASSIGN_OR_RETURN(spec.ablation, ParseAblation(flags.ablation));
  DatasetSpec ds_spec{flags.dataset, flags.n_prompts, flags.seed, flags.seq_len};
  LG_ASSIGN_OR_RETURN(Dataset dataset, MakeDataset(ds_spec, model->cfg(),
                                                   tokenizer.ok() ? tokenizer->get() : nullptr));
  SearchOptions options;
  options.naive = flags.naive;
  auto start = std::chrono::steady_clock::now();
  LG_ASSIGN_OR_RETURN(SearchResult result, RunSearch(*model, dataset, spec, options));
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const bool patching = IsPatching(spec.method);
  const double baseline = result.baseline.mean().item<double>();
  out << "search: " << MethodName(spec.method) << " on " << dataset.name << " ("
      << dataset.prompts.size() << " prompts), metric " << MetricName(spec.metric);
  if (spec.method == Method::kAblateHeads || spec.method == Method::kAblateLayers) {
    out << ", " << AblationName(spec.ablation) << " ablation";
  }
  out << ", " << std::fixed << std::setprecision(2) << seconds << " s\n";
  out << (patching ? "corrupted" : "clean") << " " << MetricName(spec.metric) << ": "
      << std::setprecision(4) << baseline << "\n";
  double reference = 0;
  if (patching) {
    reference = result.reference.mean().item<double>();
    out << "clean " << MetricName(spec.metric) << ": " << reference << "\n";
  }

  nlohmann::ordered_json j;
  j["method"] = MethodName(spec.method);
  j["metric"] = MetricName(spec.metric);
  j["ablation"] = AblationName(spec.ablation);
  j["delta"] = patching ? "metric(patched) - metric(corrupted)"
                        : "metric(intervened) - metric(clean)";
  j["model"] = {{"dir", flags.model_dir},
                {"weights_sha256", model->load_report().weights_sha256},
                {"processed", model->processed()},
                {"n_layers", model->cfg().n_layers},
                {"n_heads", model->cfg().n_heads}};
  j["dataset"] = {{"name", dataset.name}, {"n_prompts", dataset.prompts.size()},
                  {"seed", flags.seed}, {"positions", dataset.max_length()}};
  j["baseline"] = baseline;
  if (patching) j["clean"] = reference;
  NamedTensors tensors;
  for (const SearchOutput& o : result.outputs) {
    nlohmann::ordered_json oj;
    oj["name"] = o.name;
    oj["axes"] = o.axes;
    oj["shape"] = o.shape;
    oj["values"] = Nested(o.mean);
    if (patching && flags.normalize) {
      // (patched - corrupted) / (clean - corrupted), on means over prompts.
      oj["normalized"] = Nested(o.mean / (reference - baseline));
    }
    nlohmann::json ranked = nlohmann::json::array();
    for (auto [idx, value] : RankComponents(o, 1 << 30)) {
      ranked.push_back({{"component", ComponentName(o, idx)}, {"value", value}});
    }
    oj["ranked"] = ranked;
    j["outputs"].push_back(oj);
    out << "top components of " << o.name << " (by |value|):\n";
    for (auto [idx, value] : RankComponents(o, 10)) {
      out << "  " << std::setw(16) << std::left << ComponentName(o, idx) << std::right
          << std::showpos << std::defaultfloat << std::setprecision(4) << value << std::noshowpos
          << std::fixed << "\n";
    }
    tensors.emplace_back(o.name, o.mean.to(torch::kFloat32));
    std::vector<int64_t> pp_shape = {o.per_prompt.size(0)};
    pp_shape.insert(pp_shape.end(), o.shape.begin(), o.shape.end());
    tensors.emplace_back(o.name + ".per_prompt", o.per_prompt.view(pp_shape).to(torch::kFloat32));
  }
  tensors.emplace_back("baseline", result.baseline.to(torch::kFloat32));
  if (patching) tensors.emplace_back("clean", result.reference.to(torch::kFloat32));

  if (!flags.output.empty()) {
    ::mkdir(flags.output.c_str(), 0755);
    std::ofstream json_out(flags.output + "/result.json");
    json_out << j.dump(1) << "\n";
    if (!json_out) return absl::PermissionDeniedError("cannot write " + flags.output + "/result.json");
    LG_RETURN_IF_ERROR(WriteTensorFile(flags.output + "/result.safetensors", tensors,
                                       {{"method", MethodName(spec.method)},
                                        {"metric", MetricName(spec.metric)}}));
    out << "wrote " << flags.output << "/result.json and result.safetensors\n";
  }
  return absl::OkStatus();
}

}  // namespace

int RunSearchCommand(int argc, char** argv, std::ostream& out, std::ostream& err) {
  CLI::App app{"Circuit search over a dataset", "lensgrid search"};
  SearchFlags f;
  app.add_option("--model", f.model_dir, "model dir")->required();
  app.add_option("--dataset", f.dataset, "induction | ioi | gender-bias | greater-than | FILE.jsonl")
      ->required();
  app.add_option("--method", f.method,
                 "ablate-heads | ablate-layers | patch-resid | patch-attn-out | patch-mlp-out | "
                 "patch-heads | patch-heads-by-pos | patch-pattern | detect-heads | dla")
      ->required();
  app.add_option("--ablation", f.ablation, "zero | mean | resample (ablations)");
  app.add_option("--metric", f.metric,
                 "logit-diff | prob | prob-diff | loss | kl (default: the dataset's own)");
  app.add_option("--n-prompts", f.n_prompts, "prompts to generate (or to read at most)");
  app.add_option("--seed", f.seed, "dataset seed");
  app.add_option("--seq-len", f.seq_len, "induction: random tokens per half");
  app.add_flag("--normalize", f.normalize, "patching: also (patched - corrupted) / (clean - corrupted)");
  app.add_flag("--naive", f.naive, "one full forward per intervention (the reference path)");
  app.add_flag("--no-processing", f.no_processing, "Hugging Face weights as they are");
  app.add_flag("--in-process", f.in_process, "run in this process");
  app.add_option("--local", f.local, "run on N local workers (with the coordinator)");
  app.add_option("--coordinator", f.coordinator, "submit to a coordinator at ADDR");
  app.add_option("--output", f.output, "write result.json and result.safetensors here");
  app.add_option("--threads", f.threads, "CPU threads for matmuls (default: all)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e, out, err);
  }
  if (f.local > 0 || !f.coordinator.empty()) {
    err << "lensgrid search: --local and --coordinator need the coordinator, which this build "
           "does not have yet; use --in-process\n";
    return 2;
  }
  if (!f.in_process) {
    err << "lensgrid search: say where to run: --in-process\n";
    return 2;
  }
  return ReportCommandStatus("search", Execute(f, out), err);
}

}  // namespace lensgrid
