// The one place where absl::Status and grpc::Status convert into each other.
//
// Both use the google.rpc.Code numbering, so codes map one to one and the
// message is kept as it is. Details attached with common/error_details.h
// travel as a google.rpc.Status in the grpc-status-details-bin trailer
// (ErrorInfo, BadRequest, QuotaFailure) and come back on the client's side.
//
//   reactor->Finish(ToGrpcStatus(result.status()));
//   absl::Status s = FromGrpcStatus(stub->GetModelInfo(&ctx, req, &info));
#ifndef LENSGRID_COMMON_GRPC_STATUS_H_
#define LENSGRID_COMMON_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace lensgrid {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_GRPC_STATUS_H_
