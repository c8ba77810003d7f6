// One circuit-search shard from a JSON spec: the unit a worker runs for the
// coordinator (and the spec format of `lensgrid search`'s jobs).
//
//   {"method": "ablate-heads", "metric": "logit-diff", "ablation": "mean",
//    "dataset": {"name": "ioi", "n_prompts": 64, "seed": 0, "seq_len": 16}
//               | {"prompts": [<JSONL objects, as in dataset.h>]},
//    "prompt_begin": 0, "prompt_end": 16, "component_begin": 0, "component_end": 48}
//
// Ranges are optional (default: everything). The result tensors: "baseline"
// [n], "reference" [n] (patching only), and each output's per-prompt values
// under its name, [n, components in range].
#ifndef LENSGRID_WORKER_MODEL_ANALYSIS_SHARD_H_
#define LENSGRID_WORKER_MODEL_ANALYSIS_SHARD_H_

#include <string>

#include "absl/status/statusor.h"
#include "worker/model/analysis/search.h"
#include "worker/model/tensor_io.h"
#include "worker/model/tokenizer/tokenizer.h"

namespace lensgrid {

struct SearchRequest {
  SearchSpec spec;
  DatasetSpec dataset;
  std::string inline_prompts_jsonl;  // when the dataset is given inline
  SearchOptions options;             // ranges only
};

// What one shard may ask of the process that runs it, checked before any
// dataset is built or model run (RESOURCE_EXHAUSTED naming the limit).
struct ShardLimits {
  int64_t max_dataset_prompts = int64_t{1} << 20;  // Default: 1M
  // Prompts in the shard's range x the longest prompt. Default: 16384
  int64_t max_prompt_tokens = 16384;
  // The shard's result tensors. Default: 1 GiB
  int64_t max_result_bytes = int64_t{1} << 30;
};

absl::StatusOr<SearchRequest> ParseSearchRequest(const std::string& spec_json);
absl::StatusOr<Dataset> MakeRequestDataset(const SearchRequest& request, const ModelConfig& cfg,
                                           const Tokenizer* tokenizer);

// A shard parsed, checked against the limits, with its dataset built.
struct PreparedShard {
  SearchRequest request;
  Dataset dataset;
  int64_t result_bytes = 0;  // of the tensors RunPreparedShard returns
};
// REQUIRES: tokenizer may be null when the dataset needs no text.
absl::StatusOr<PreparedShard> PrepareSearchShard(const ModelConfig& cfg,
                                                 const Tokenizer* tokenizer,
                                                 const std::string& spec_json,
                                                 const ShardLimits& limits = {});
// `is_cancelled` (optional) is polled between blocks: CANCELLED when it says so.
absl::StatusOr<NamedTensors> RunPreparedShard(const HookedTransformer& model,
                                              const PreparedShard& shard,
                                              std::function<bool()> is_cancelled = nullptr);

// PrepareSearchShard, then RunPreparedShard.
absl::StatusOr<NamedTensors> RunSearchShard(const HookedTransformer& model,
                                            const Tokenizer* tokenizer,
                                            const std::string& spec_json,
                                            std::function<bool()> is_cancelled = nullptr,
                                            const ShardLimits& limits = {});

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_ANALYSIS_SHARD_H_
