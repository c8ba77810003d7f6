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

absl::StatusOr<SearchRequest> ParseSearchRequest(const std::string& spec_json);
absl::StatusOr<Dataset> MakeRequestDataset(const SearchRequest& request, const ModelConfig& cfg,
                                           const Tokenizer* tokenizer);

// REQUIRES: tokenizer may be null when the dataset needs no text.
// `is_cancelled` (optional) is polled between blocks: CANCELLED when it says so.
absl::StatusOr<NamedTensors> RunSearchShard(const HookedTransformer& model,
                                            const Tokenizer* tokenizer,
                                            const std::string& spec_json,
                                            std::function<bool()> is_cancelled = nullptr);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_ANALYSIS_SHARD_H_
