// WorkerCore::RunShard with the circuit-search library (worker/model/analysis):
// checks the weights hash, then runs the shard and streams its result tensors.
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/model/analysis/shard.h"
#include "worker/wire_tensors.h"
#include "worker/worker_core.h"

namespace lensgrid {

absl::StatusOr<RunResult> WorkerCore::RunShard(
    const v1::RunShardRequest& request, const CancelCheck& cancelled) const {
  if (request.weights_sha256().empty()) {
    return absl::InvalidArgumentError(
        "RunShard needs weights_sha256 (the model the shard is for)");
  }
  LG_RETURN_IF_ERROR(CheckWeights(request.weights_sha256()));
  if (request.spec_json().empty())
    return absl::InvalidArgumentError("RunShard: spec_json is empty");
  ShardLimits limits;
  limits.max_dataset_prompts = options_.max_dataset_prompts;
  limits.max_prompt_tokens = options_.max_tokens;
  limits.max_result_bytes = options_.max_response_bytes;
  try {
    LG_ASSIGN_OR_RETURN(PreparedShard shard,
                        PrepareSearchShard(model_->cfg(), tokenizer_.get(),
                                           request.spec_json(), limits));
    LG_ASSIGN_OR_RETURN(ReplyBudget::Hold hold,
                        ReserveReply(shard.result_bytes, "RunShard"));
    LG_ASSIGN_OR_RETURN(NamedTensors tensors,
                        RunPreparedShard(*model_, shard, cancelled));
    RunResult result;
    result.hold = std::move(hold);
    result.header.set_weights_sha256(info_.weights_sha256());
    for (const auto& [name, t] : tensors) {
      LG_ASSIGN_OR_RETURN(TensorBytes bytes, ToTensorBytes(name, t));
      result.tensors.push_back(std::move(bytes));
    }
    ChunkCursor cursor(result.tensors);
    for (auto& meta : cursor.Metas())
      *result.header.add_tensors() = std::move(meta);
    result.header.set_total_bytes(cursor.total_bytes());
    return result;
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("RunShard: LibTorch: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("RunShard: ", e.what()));
  }
}

}  // namespace lensgrid
