#include "client/local/search_in_process.h"

#include <torch/torch.h>

#include <chrono>
#include <iostream>
#include <optional>
#include <ostream>

#include "client/acdc_search.h"
#include "client/circuit_output.h"
#include "client/local/report_views.h"
#include "client/local/torch_convert.h"
#include "client/search_context.h"
#include "client/search_output.h"
#include "client/search_values.h"
#include "common/status_macros.h"
#include "worker/model/analysis/circuit.h"
#include "worker/model/analysis/search.h"
#include "worker/model/cpu_threads.h"

namespace lensgrid {
namespace {

// The search spec and the context of its output, from the flags and the model.
absl::StatusOr<SearchContext> MakeContext(const SearchFlags& flags,
                                          const HookedTransformerConfig& cfg,
                                          const std::string& weights_sha256,
                                          const Dataset& dataset) {
  SearchContext ctx;
  ctx.method = flags.method;
  ctx.metric = MetricOfFlags(flags);
  ctx.ablation = flags.ablation;
  ctx.circuit = CircuitParamsOfFlags(flags);
  if (!flags.edges_file.empty()) {
    LG_ASSIGN_OR_RETURN(ctx.circuit.kept_edges,
                        ReadEdgeList(flags.edges_file, CircuitGraphOf(cfg)));
  }
  ctx.normalize = flags.normalize;
  ctx.model_id = ModelIdOfFlags(flags);  // what workers on this model serve it as
  ctx.model_dir = flags.model_dir;
  ctx.weights_sha256 = weights_sha256;
  ctx.processed = !flags.no_processing;
  ctx.n_layers = cfg.n_layers;
  ctx.n_heads = cfg.n_heads;
  ctx.attn_only = cfg.attn_only;
  ctx.dataset = dataset.name;
  ctx.n_prompts = static_cast<int64_t>(dataset.prompts.size());
  ctx.seed = flags.seed;
  ctx.seq_len = flags.seq_len;
  ctx.positions = dataset.max_length();
  LG_RETURN_IF_ERROR(NamesOfContext(ctx).status());  // names checked before any work
  return ctx;
}

}  // namespace

absl::Status SearchInThisProcess(const SearchFlags& flags, std::ostream& out) {
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
  LG_ASSIGN_OR_RETURN(SearchNames names, NamesOfContext(ctx));
  SearchSpec spec{names.method, names.metric, names.ablation, names.circuit};
  SearchOptions options;
  options.naive = flags.naive;
  auto start = std::chrono::steady_clock::now();
  auto run_faithfulness = [&](const CircuitParams& params) -> absl::StatusOr<SearchValues> {
    SearchSpec f = spec;
    f.method = Method::kCircuitFaithfulness;
    f.circuit = params;
    LG_ASSIGN_OR_RETURN(SearchResult r, RunSearch(*model, dataset, f, options));
    return ValuesOfResult(r);
  };
  SearchValues values;
  std::optional<CircuitFindings> circuit;
  if (names.method == Method::kAcdc) {
    auto run_step = [&](int, const CircuitParams& params) -> absl::StatusOr<SearchValues> {
      SearchSpec s = spec;
      s.method = Method::kAcdcStep;
      s.circuit = params;
      LG_ASSIGN_OR_RETURN(SearchResult r, RunSearch(*model, dataset, s, options));
      return ValuesOfResult(r);
    };
    LG_ASSIGN_OR_RETURN(AcdcSearch acdc, RunAcdcSearch(ctx, flags.threshold, run_step,
                                                       run_faithfulness, &std::cerr));
    values = std::move(acdc.values);
    circuit = std::move(acdc.circuit);
  } else {
    LG_ASSIGN_OR_RETURN(SearchResult result, RunSearch(*model, dataset, spec, options));
    values = ValuesOfResult(result);
    LG_ASSIGN_OR_RETURN(
        circuit, CircuitOfSearch(values, ctx, CircuitChoiceOfFlags(flags), run_faithfulness));
  }
  std::optional<SearchValues> detectors;
  if (flags.detectors) {
    SearchSpec detect = spec;
    detect.method = Method::kDetectHeads;
    LG_ASSIGN_OR_RETURN(SearchResult d, RunSearch(*model, dataset, detect, options));
    detectors = ValuesOfResult(d);
  }
  ctx.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ctx.run = {{"where", "in-process"}};
  std::vector<AttentionView> views;
  if (!flags.output.empty()) {
    LG_ASSIGN_OR_RETURN(views, TopHeadViews(*model, tokenizer.ok() ? tokenizer->get() : nullptr,
                                            dataset.prompts.front(), values));
  }
  return WriteSearchOutput(values, ctx, views, flags.output, out, detectors ? &*detectors : nullptr,
                           circuit ? &*circuit : nullptr);
}

}  // namespace lensgrid
