// The planner: a pure function from a job spec to its shards, each a range of
// prompts x a range of components of the flattened first output grid, sized
// by a cost estimate (token-forwards), and the typed ShardSpec each shard runs
// as on a worker (proto/lensgrid/v1/search.proto).
//
//   LG_ASSIGN_OR_RETURN(JobPlan plan, PlanJob(spec));
//   for (const ShardRange& r : plan.shards) Send(MakeShardSpec(plan, r));
#ifndef LENSGRID_SERVICE_PLANNER_H_
#define LENSGRID_SERVICE_PLANNER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/search_methods.h"
#include "lensgrid/v1/coordinator.pb.h"
#include "lensgrid/v1/search.pb.h"

namespace lensgrid::service {

struct ShardRange {
  int64_t prompt_begin = 0, prompt_end = 0;  // [begin, end)
  int64_t component_begin = 0,
          component_end = 0;  // [begin, end) of the flattened grid
  int64_t num_prompts() const { return prompt_end - prompt_begin; }
  int64_t num_components() const { return component_end - component_begin; }
  bool operator==(const ShardRange& o) const {
    return prompt_begin == o.prompt_begin && prompt_end == o.prompt_end &&
           component_begin == o.component_begin && component_end == o.component_end;
  }
};

// Limits are checked before anything is allocated for the job: a spec over
// one gets RESOURCE_EXHAUSTED (a size) or INVALID_ARGUMENT (a dimension),
// naming the value and the limit.
struct PlannerOptions {
  int64_t batch_tokens = 4096;  // prompt tokens in one shard's batch. Default: 4096
  // token-forwards per shard (GPT-2 small: ~20 s on 2 CPU cores, well under a
  // second on a GPU). Default: 16384
  int64_t shard_cost = 1 << 14;

  // Largest n_layers and n_heads (GPT-2 XL: 48 x 25). Default: 4096
  int64_t max_model_dim = 4096;
  // Longest prompt, in tokens (also bounds answers and wrongs). Default: 65536
  int64_t max_prompt_tokens = 1 << 16;
  // Prompts in one job. Default: 1048576
  int64_t max_prompts = 1 << 20;
  // Shards in one job. Planner-chosen shard sizes grow to fit; sizes given in
  // the spec that exceed it are refused. Default: 100000
  int64_t max_shards = 100000;
  // Bytes of the largest shard's ShardSpec (its own prompts; mean ablation:
  // every prompt of the job): what a worker must receive. Well under the
  // worker's 64 MiB receive limit. Default: 32 MiB
  int64_t max_shard_spec_bytes = int64_t{32} << 20;
  // Bytes of the job's merged result (4 per value per prompt); also bounds
  // every shard's result, which must fit the coordinator's 256 MiB limit on a
  // CompleteShard stream. Default: 256 MiB
  int64_t max_result_bytes = int64_t{256} << 20;
  // model_id, weights_sha256, method_name, metric_name, ablation_name.
  // Default: 256
  int64_t max_name_bytes = 256;
  int64_t max_label_bytes = 1024;            // JobSpec.label. Default: 1 KiB
  int64_t max_client_json_bytes = 64 << 10;  // JobSpec.client_json. Default: 64 KiB
  // JobSpec.dataset.jsonl: the JSONL a worker tokenizes. Default: 64 MiB
  int64_t max_dataset_bytes = int64_t{64} << 20;
  int max_attempts_limit = 100;  // largest JobSpec.max_attempts. Default: 100
};

using Prompts = google::protobuf::RepeatedPtrField<v1::InlinePrompt>;

struct JobPlan {
  Method method = Method::kAblateHeads;
  MetricKind metric = MetricKind::kLogitDiff;
  AblationKind ablation = AblationKind::kZero;
  CircuitParams circuit;  // circuit methods (JobSpec.circuit), checked against the model
  int64_t n_prompts = 0;
  int64_t n_pos = 0;      // the longest prompt's length
  bool patching = false;  // NeedsCorrupted: the result has a "reference"
  std::vector<Grid> grids;
  int64_t n_components = 0;  // of the first grid (the one component ranges cut)
  std::vector<ShardRange> shards;
  int64_t result_bytes = 0;    // of the merged result, as estimated
  int64_t max_spec_bytes = 0;  // of the largest shard's ShardSpec
  // The job's prompts: the one copy a job keeps in memory (shared by copies
  // of the plan); each shard's spec copies its own range.
  std::shared_ptr<const Prompts> prompts;
};

// Checks the spec (INVALID_ARGUMENT naming the field, RESOURCE_EXHAUSTED for a
// size over a limit of `options`) and cuts it into shards covering every
// (prompt, component) exactly once; a plan always has at least one shard.
// Defaults: metric logit-diff, ablation zero; the enums win over the
// deprecated names. Pure: safe to call without any
// lock; sizes are computed with overflow checks before anything is allocated.
absl::StatusOr<JobPlan> PlanJob(const v1::JobSpec& spec, const PlannerOptions& options = {});

// The spec with its documented defaults written in (search.proto): an unset
// metric becomes METRIC_LOGIT_DIFF and an unset ablation ABLATION_ZERO, unless
// a deprecated name is given. The coordinator stores and echoes (JobStatus.spec)
// this form, so a client that leaves a default unset and one that sends it
// submit the same job.
v1::JobSpec WithSpecDefaults(v1::JobSpec spec);

// A spec that lacks its prompts (it has a DatasetRequest), the model's shape
// or a weights pin is prepared on a worker before it is planned.
bool NeedsPreparing(const v1::JobSpec& spec);

// What can be checked of a job to prepare before a worker has built its
// dataset: names, sizes, the method, metric and ablation, the dataset request
// or the inline prompts. The same errors as PlanJob.
absl::Status CheckSpecToPrepare(const v1::JobSpec& spec, const PlannerOptions& options = {});

// The spec to plan once a worker with `weights_sha256` prepared the job:
// `spec` with the prompts it built (or, when the spec has no dataset,
// `inline_prompts`: the job's own), the
// model's shape where the spec had none, the weights pin, and the dataset
// request without its JSONL bytes. INVALID_ARGUMENT when the worker's weights
// are not the pinned ones or it built no prompts.
absl::StatusOr<v1::JobSpec> PreparedSpec(const v1::JobSpec& spec, const Prompts& inline_prompts,
                                         const v1::PreparedDataset& prepared,
                                         const std::string& weights_sha256);

// Every field of `spec` but its prompts (which the plan holds): what a job
// keeps of its spec in memory.
v1::JobSpec SpecWithoutPrompts(const v1::JobSpec& spec);

// The worker's ShardSpec for one range of the plan: that range's prompts, and
// for mean ablation every prompt of the job (mean_prompts).
v1::ShardSpec MakeShardSpec(const JobPlan& plan, const ShardRange& range);

}  // namespace lensgrid::service

#endif  // LENSGRID_SERVICE_PLANNER_H_
