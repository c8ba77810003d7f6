// The planner: a pure function from a job spec to its shards, each a range of
// prompts x a range of components of the flattened output grid, sized by a
// cost estimate (token-forwards), and the JSON each shard runs as on a worker
// (the format of worker/model/analysis/shard.h).
//
//   LG_ASSIGN_OR_RETURN(JobPlan plan, PlanJob(spec));
//   for (const ShardRange& r : plan.shards) Send(ShardSpecJson(plan, r));
#ifndef LENSGRID_SERVICE_PLANNER_H_
#define LENSGRID_SERVICE_PLANNER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lensgrid/v1/coordinator.pb.h"
#include "service/grids.h"

namespace lensgrid::service {

struct ShardRange {
  int64_t prompt_begin = 0, prompt_end = 0;  // [begin, end)
  int64_t component_begin = 0,
          component_end = 0;  // [begin, end) of the flattened grid
  int64_t num_prompts() const { return prompt_end - prompt_begin; }
  int64_t num_components() const { return component_end - component_begin; }
  bool operator==(const ShardRange& o) const {
    return prompt_begin == o.prompt_begin && prompt_end == o.prompt_end &&
           component_begin == o.component_begin &&
           component_end == o.component_end;
  }
};

struct PlannerOptions {
  int64_t batch_tokens =
      4096;  // prompt tokens in one shard's batch. Default: 4096
  // token-forwards per shard (GPT-2 small: ~20 s on 2 CPU cores, well under a
  // second on a GPU). Default: 16384
  int64_t shard_cost = 1 << 14;
};

struct JobPlan {
  std::string method, metric, ablation;
  int64_t n_prompts = 0;
  int64_t n_pos = 0;  // the longest prompt's length
  bool patching = false;
  std::vector<Grid> grids;
  int64_t n_components = 0;  // of the first grid (the one component ranges cut)
  std::vector<ShardRange> shards;
  std::string dataset_json;  // {"prompts":[...]} shared by every shard's spec
};

// Checks the spec (INVALID_ARGUMENT naming the field) and cuts it into shards
// covering every (prompt, component) exactly once. Defaults: metric
// logit-diff, ablation zero.
absl::StatusOr<JobPlan> PlanJob(const v1::JobSpec& spec,
                                const PlannerOptions& options = {});

// The worker's shard spec (shard.h's JSON) for one range of the plan.
std::string ShardSpecJson(const JobPlan& plan, const ShardRange& range);

}  // namespace lensgrid::service

#endif  // LENSGRID_SERVICE_PLANNER_H_
