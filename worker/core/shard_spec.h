// The wire's ShardSpec (proto/lensgrid/v1/search.proto) as the library's
// ShardTask (worker/model/analysis/shard.h): the only place a worker reads a
// shard's fields. Checks beyond the enums happen in PrepareSearchShard.
//
//   LG_ASSIGN_OR_RETURN(ShardTask task, ShardTaskFromProto(lease.shard()));
#ifndef LENSGRID_WORKER_CORE_SHARD_SPEC_H_
#define LENSGRID_WORKER_CORE_SHARD_SPEC_H_

#include "absl/status/statusor.h"
#include "lensgrid/v1/search.pb.h"
#include "worker/model/analysis/shard.h"

namespace lensgrid {

// INVALID_ARGUMENT for an unspecified method or an unknown enum value.
absl::StatusOr<ShardTask> ShardTaskFromProto(const v1::ShardSpec& spec);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_CORE_SHARD_SPEC_H_
