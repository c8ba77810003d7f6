// Circuit searches over a dataset: head/layer ablation sweeps, activation
// patching and its gradient estimate (attribution patching), head detectors
// and direct logit attribution.
//
// Every result is per prompt and per component, so a search cuts into shards
// (a range of components x a range of prompts) whose results merge exactly:
//
//   SearchSpec spec{Method::kAblateHeads, MetricKind::kLogitDiff, AblationKind::kMean};
//   LG_ASSIGN_OR_RETURN(SearchResult r, RunSearch(*model, dataset, spec));
//   r.outputs[0].mean   // [layer, head]: mean over prompts of
//                       // delta = metric(intervened) - metric(unintervened)
//
// The unintervened run is the clean prompt for ablations, detectors and DLA,
// and the corrupted prompt for activation patching (clean activations are
// patched into the corrupted run, TransformerLens's convention).
//
// Attribution patching (attribute-*, MethodKind::kAttribution) estimates each
// cell of the patch-* method of the same grid to first order: score =
// (clean - corrupted) . d metric / d activation, the gradient taken at the
// corrupted run, summed over the component's elements (the same hook and
// region the exact method patches), per prompt. One clean forward, one
// corrupted forward and one backward per batch of prompts, for every component
// at once; so these methods shard by prompts only.
//
// Fast path (default): an intervention at layer L starts from the cached
// resid_pre of layer L, many interventions share one batched forward, and only
// the positions a metric reads are unembedded. SearchOptions::naive runs one
// full forward per intervention instead; both agree within 1e-4.
#ifndef LENSGRID_WORKER_MODEL_ANALYSIS_SEARCH_H_
#define LENSGRID_WORKER_MODEL_ANALYSIS_SEARCH_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/search_methods.h"
#include "worker/model/analysis/base_run_cache.h"
#include "worker/model/analysis/dataset.h"
#include "worker/model/analysis/metrics.h"
#include "worker/model/hooked_transformer.h"

namespace lensgrid {

// Method, MetricKind, AblationKind and their names: common/search_methods.h.

struct SearchSpec {
  Method method = Method::kAblateHeads;
  MetricKind metric = MetricKind::kLogitDiff;
  AblationKind ablation = AblationKind::kZero;  // ablations only
  CircuitParams circuit;                        // circuit methods (circuit_search.h)
};

struct SearchOptions {
  bool naive = false;  // one full forward per intervention
  // Bound on batch x pos of one packed forward (attribution: of one forward
  // and backward over a batch of prompts).
  int64_t max_batch_tokens = 16384;
  // A shard: components [component_begin, component_end) of the flattened
  // output grid and prompts [prompt_begin, prompt_end); -1 = to the end.
  int64_t component_begin = 0, component_end = -1;
  int64_t prompt_begin = 0, prompt_end = -1;
  // Mean ablation: the prompts whose mean replaces a component, padded like
  // the dataset. Default (null): the dataset itself. A shard that holds only
  // its own prompts passes the job's.
  const Dataset* mean_dataset = nullptr;
  std::function<bool()> is_cancelled;
  // Ablations and activation patching: base runs made before (the clean and
  // corrupted forwards of the same prompts, their resid_pre, sources and
  // baseline) are taken from this cache instead of run again, and new ones
  // are stored in it (base_run_cache.h). Used only with a non-empty scope,
  // which names the model that runs them (a worker's weights sha256 and
  // processing). Default: none.
  BaseRunCache* base_run_cache = nullptr;
  std::string base_run_scope;
};

struct SearchOutput {
  std::string name;               // "delta", "previous_token", "heads", ...
  std::vector<std::string> axes;  // e.g. {"layer", "head"}
  std::vector<int64_t> shape;     // grid shape
  at::Tensor per_prompt;          // [n_prompts, n_components] (of this shard)
  at::Tensor mean;                // grid shape (whole searches only)
};

// What a search ran, for benchmarks and logs. A forward is one batched call
// of the model (a packed forward resumed at layer L counts once); block_rows
// sums rows x blocks over them (the work, in units of one prompt through one
// block).
struct SearchCounts {
  int64_t forwards = 0;
  int64_t backwards = 0;
  int64_t block_rows = 0;
  // Base runs taken from SearchOptions::base_run_cache (their forwards are
  // not counted above: they did not run).
  int64_t base_runs_reused = 0;
  // Mean ablation's dataset means taken from that cache (a base run of
  // another prompt range of the same job computed them).
  int64_t means_reused = 0;
};

struct SearchResult {
  SearchSpec spec;
  std::vector<SearchOutput> outputs;
  at::Tensor baseline;                            // [n_prompts] metric of the unintervened run
  at::Tensor reference;                           // patching: [n_prompts] metric of the clean run
  int64_t prompt_begin = 0, component_begin = 0;  // where this shard sits
  SearchCounts counts;                            // merged: the sum over shards
};

// The outputs a search produces (names, axes, grid shapes: MethodGrids of
// common/search_methods.h) for a dataset.
std::vector<SearchOutput> SearchOutputs(const SearchSpec& spec, const HookedTransformerConfig& cfg,
                                        int64_t n_pos);

// Whether a search keeps its base runs in options.base_run_cache and reuses
// them: a cache with a budget, and a scope naming the model.
bool CachesBaseRuns(const SearchOptions& options);

// Bytes of memory `tensors` keep alive, each storage counted once (undefined
// ones: none): what a value stored in the BaseRunCache costs its budget.
int64_t StorageBytes(const std::vector<at::Tensor>& tensors);

absl::StatusOr<SearchResult> RunSearch(const HookedTransformer& model, const Dataset& dataset,
                                       const SearchSpec& spec, const SearchOptions& options = {});

// Combines shards covering every (prompt, component) exactly once into the
// whole result, with means over prompts. INVALID_ARGUMENT on gaps or overlaps.
absl::StatusOr<SearchResult> MergeSearchShards(const std::vector<SearchResult>& shards,
                                               int64_t n_prompts,
                                               const HookedTransformerConfig& cfg, int64_t n_pos);

// Components ranked by |mean| of the first output, largest first: (flat index,
// value), at most `k`.
std::vector<std::pair<int64_t, double>> RankComponents(const SearchOutput& output, int64_t k);
// "L3H7", "L2 pos 5", "attn L1" ... for a flat index of `output`.
std::string ComponentName(const SearchOutput& output, int64_t flat_index);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_ANALYSIS_SEARCH_H_
