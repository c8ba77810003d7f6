// WorkerCore::RunShard for builds without the circuit-search library.
#include "worker/worker_core.h"

namespace lensgrid {

absl::StatusOr<RunResult> WorkerCore::RunShard(
    const v1::RunShardRequest& request, const CancelCheck& cancelled) const {
  return absl::UnimplementedError("RunShard needs the circuit-search library");
}

}  // namespace lensgrid
