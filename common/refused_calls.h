// Callback-API calls answered at once with a status: a unary call, or a
// stream refused before it started (a failed authorization check, a bad
// first message). One copy for every lensgrid gRPC service.
//
//   if (!caller.ok()) return FinishUnary(ctx, caller.status());
//   if (!caller.ok()) return new RefusedWrite<v1::JobEvent>(caller.status());
#ifndef LENSGRID_COMMON_REFUSED_CALLS_H_
#define LENSGRID_COMMON_REFUSED_CALLS_H_

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "common/grpc_status.h"

namespace lensgrid {

inline grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* ctx,
                                             const absl::Status& status) {
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  r->Finish(ToGrpcStatus(status));
  return r;
}

// A server-streaming call that ends with `why` before writing anything.
template <typename Message>
class RefusedWrite final : public grpc::ServerWriteReactor<Message> {
 public:
  explicit RefusedWrite(const absl::Status& why) { this->Finish(ToGrpcStatus(why)); }
  void OnDone() override { delete this; }
};

// A client-streaming call that ends with `why` before reading anything.
template <typename Message>
class RefusedRead final : public grpc::ServerReadReactor<Message> {
 public:
  explicit RefusedRead(const absl::Status& why) { this->Finish(ToGrpcStatus(why)); }
  void OnDone() override { delete this; }
};

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_REFUSED_CALLS_H_
