// The JobSpec `lensgrid search --coordinator ADDR | --local N` submits: a model id (and an
// optional weights pin), the method, metric and ablation as enums, and a DatasetRequest the
// service builds on a worker serving the model. The client reads no model files: no prompts,
// no n_layers / n_heads (the coordinator prepares the job on a worker, which reports them).
//
//   SearchJobRequest r;
//   r.model_id = "gpt2"; r.method = "ablate-heads"; r.metric = "logit-diff";
//   r.ablation = "zero"; r.dataset = "ioi"; r.n_prompts = 16;
//   LG_ASSIGN_OR_RETURN(v1::JobSpec spec, MakeSearchJobSpec(r));
//
// No LibTorch, no gRPC.
#ifndef LENSGRID_CLIENT_SEARCH_JOB_H_
#define LENSGRID_CLIENT_SEARCH_JOB_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/search_methods.h"
#include "lensgrid/v1/coordinator.pb.h"

namespace lensgrid {

struct SearchJobRequest {
  std::string model_id;                  // the id workers serve the model under; required
  std::string weights_sha256;            // optional pin: 64 hex digits
  std::string method, metric, ablation;  // names (common/search_methods.h)
  // A built-in dataset's name; or, with `jsonl`, the JSONL file's name (for errors).
  std::string dataset;
  std::string jsonl;       // the JSONL file's bytes; empty for a built-in dataset
  int64_t n_prompts = 16;  // built-ins: prompts to generate; JSONL: read at most
  uint64_t seed = 0;
  int64_t seq_len = 16;                                     // induction: random tokens per half
  int64_t prompts_per_shard = 0, components_per_shard = 0;  // 0: the planner's choice
  CircuitParams circuit;                                    // circuit methods
};

// INVALID_ARGUMENT naming the flag: no model id, a pin that is not 64 hex digits (upper case is
// taken as lower case), an unknown method, metric or ablation, a non-positive n_prompts, an
// empty dataset name, negative shard sizes.
absl::StatusOr<v1::JobSpec> MakeSearchJobSpec(const SearchJobRequest& request);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_SEARCH_JOB_H_
