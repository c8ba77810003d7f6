// The merger: pure functions from shard results to the job's result.
//
// A shard's result (worker/model/analysis/shard.h) is F32 tensors "baseline"
// [n], "reference" [n] (patching only) and one per grid [n, components in
// range], n = the shard's prompts. The job's result: "baseline" and
// "reference" [n_prompts], "<grid>.per_prompt" [n_prompts, n_components] and
// "<grid>" (the mean over prompts, grid-shaped), every value placed by its
// shard's ranges, every (prompt, component) covered exactly once.
//
//   LG_RETURN_IF_ERROR(CheckShardResult(plan, range, tensors));   // on arrival
//   LG_ASSIGN_OR_RETURN(std::vector<Array> result, MergeShards(plan, shards));
#ifndef LENSGRID_SERVICE_MERGER_H_
#define LENSGRID_SERVICE_MERGER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "service/planner.h"

namespace lensgrid::service {

// A named F32 array, row-major.
struct Array {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
};

struct ShardResult {
  ShardRange range;
  std::vector<Array> tensors;
};

// INVALID_ARGUMENT unless `tensors` are exactly what the shard must return,
// with the right shapes and sizes: a malformed result.
absl::Status CheckShardResult(const JobPlan& plan, const ShardRange& range,
                              const std::vector<Array>& tensors);

// Merges checked shard results. INVALID_ARGUMENT if a (prompt, component) is
// covered twice or not at all.
absl::StatusOr<std::vector<Array>> MergeShards(const JobPlan& plan,
                                               const std::vector<ShardResult>& shards);

}  // namespace lensgrid::service

#endif  // LENSGRID_SERVICE_MERGER_H_
