// WorkerCore::RunShard with the circuit-search library (worker/model/analysis):
// checks the weights hash, converts the ShardSpec, then runs the shard and
// streams its result tensors.
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/core/guarded.h"
#include "worker/core/shard_spec.h"
#include "worker/core/wire_tensors.h"
#include "worker/core/worker_core.h"
#include "worker/model/analysis/shard.h"

namespace lensgrid {

absl::StatusOr<RunResult> WorkerCore::RunShard(const v1::RunShardRequest& request,
                                               const CancelCheck& cancelled) const {
  if (request.weights_sha256().empty()) {
    return absl::InvalidArgumentError("RunShard needs weights_sha256 (the model the shard is for)");
  }
  LG_RETURN_IF_ERROR(CheckWeights(request.weights_sha256()));
  if (!request.has_shard()) return absl::InvalidArgumentError("RunShard: no shard");
  ShardLimits limits;
  limits.max_dataset_prompts = options_.max_dataset_prompts;
  limits.max_prompt_tokens = options_.max_tokens;
  limits.max_result_bytes = options_.max_response_bytes;
  return Guarded("RunShard", [&]() -> absl::StatusOr<RunResult> {
    // Counted before any prompt is copied out of the message.
    const int64_t carried = request.shard().prompts_size() + request.shard().mean_prompts_size();
    if (carried > limits.max_dataset_prompts) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the shard carries ", carried, " prompts, over this worker's limit of ",
                       limits.max_dataset_prompts, " (--max-dataset-prompts)"));
    }
    LG_ASSIGN_OR_RETURN(ShardTask task, ShardTaskFromProto(request.shard()));
    LG_ASSIGN_OR_RETURN(PreparedShard shard,
                        PrepareSearchShard(model_->cfg(), std::move(task), limits));
    LG_ASSIGN_OR_RETURN(ReplyBudget::Hold hold, ReserveReply(shard.result_bytes, "RunShard"));
    LG_ASSIGN_OR_RETURN(
        NamedTensors tensors,
        RunPreparedShard(*model_, shard, cancelled, shard_cache_.get(), shard_cache_scope_));
    RunResult result;
    result.hold = std::move(hold);
    result.header.set_weights_sha256(info_.weights_sha256());
    for (const auto& [name, t] : tensors) {
      LG_ASSIGN_OR_RETURN(TensorBytes bytes, ToTensorBytes(name, t));
      result.tensors.push_back(std::move(bytes));
    }
    ChunkCursor cursor(result.tensors);
    for (auto& meta : cursor.Metas()) *result.header.add_tensors() = std::move(meta);
    result.header.set_total_bytes(cursor.total_bytes());
    return result;
  });
}

}  // namespace lensgrid
