// One circuit-search shard: the unit a worker runs for the coordinator, in
// library types. The worker fills a ShardTask from the wire's v1::ShardSpec
// (proto/lensgrid/v1/search.proto documents every field); this library links
// no protobuf.
//
//   ShardTask task;
//   task.spec = {Method::kAblateHeads, MetricKind::kLogitDiff, AblationKind::kZero};
//   task.n_prompts = 64; task.n_pos = 16;             // the job's
//   task.prompt_begin = 16; task.prompt_end = 32;     // this shard's prompts
//   task.component_begin = 0; task.component_end = 48;
//   task.prompts = ...;                               // the job's prompts [16, 32)
//   LG_ASSIGN_OR_RETURN(PreparedShard shard, PrepareSearchShard(cfg, std::move(task)));
//   LG_ASSIGN_OR_RETURN(NamedTensors result, RunPreparedShard(*model, shard));
//
// The result tensors: "baseline" [n], "reference" [n] (patching only), and
// each output's per-prompt values under its name, [n, components in range];
// n = prompt_end - prompt_begin.
#ifndef LENSGRID_WORKER_MODEL_ANALYSIS_SHARD_H_
#define LENSGRID_WORKER_MODEL_ANALYSIS_SHARD_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/analysis/search.h"
#include "worker/model/tensor_io.h"

namespace lensgrid {

struct ShardTask {
  SearchSpec spec;
  int64_t n_prompts = 0;  // in the whole job
  int64_t n_pos = 0;      // the job's longest prompt; 0 = the longest prompt carried
  int64_t prompt_begin = 0, prompt_end = 0;        // 0 = n_prompts
  int64_t component_begin = 0, component_end = 0;  // of the first grid; 0 = all
  std::vector<Prompt> prompts;                     // the job's prompts [prompt_begin, prompt_end)
  std::vector<Prompt> mean_prompts;                // mean ablation: all n_prompts; else empty
};

// True when the task's method reads the whole dataset (mean ablation).
bool NeedsMeanPrompts(const SearchSpec& spec);

// What one shard may ask of the process that runs it, checked before any
// model run (RESOURCE_EXHAUSTED naming the limit).
struct ShardLimits {
  // Prompts a shard carries (its own and mean_prompts). Default: 1M
  int64_t max_dataset_prompts = int64_t{1} << 20;
  // Prompts in the shard's range x n_pos. Default: 16384
  int64_t max_prompt_tokens = 16384;
  // The shard's result tensors. Default: 1 GiB
  int64_t max_result_bytes = int64_t{1} << 30;
};

// A shard checked against the model and the limits, ready to run.
struct PreparedShard {
  SearchSpec spec;
  Dataset dataset;       // the shard's prompts, padded to the job's n_pos
  Dataset mean_dataset;  // mean ablation: every prompt of the job
  int64_t component_begin = 0, component_end = 0;
  int64_t result_bytes = 0;  // of the tensors RunPreparedShard returns
};

// INVALID_ARGUMENT for a task that does not fit the model or itself (ranges,
// ids outside the vocabulary, prompts longer than n_pos or n_ctx, missing
// mean prompts), RESOURCE_EXHAUSTED over a limit; the message names the
// field or the limit.
absl::StatusOr<PreparedShard> PrepareSearchShard(const HookedTransformerConfig& cfg, ShardTask task,
                                                 const ShardLimits& limits = {});
// `is_cancelled` (optional) is polled between blocks: CANCELLED when it says so.
// `base_runs` (optional) keeps the base runs of the prompt ranges this process
// ran, so that the other component shards of a range reuse them; `scope`
// names the model (SearchOptions::base_run_scope; empty: no reuse). The
// tensors are the same bits with or without it.
absl::StatusOr<NamedTensors> RunPreparedShard(const HookedTransformer& model,
                                              const PreparedShard& shard,
                                              std::function<bool()> is_cancelled = nullptr,
                                              BaseRunCache* base_runs = nullptr,
                                              const std::string& scope = "");

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_ANALYSIS_SHARD_H_
