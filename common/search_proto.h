// Conversions between the search table's enums (common/search_methods.h) and
// the wire's (proto/lensgrid/v1/search.proto): the proto values are the C++
// values plus one, UNSPECIFIED = 0.
//
//   LG_ASSIGN_OR_RETURN(Method m, MethodFromProto(spec.method()));
//   shard.set_method(ToProto(m));
#ifndef LENSGRID_COMMON_SEARCH_PROTO_H_
#define LENSGRID_COMMON_SEARCH_PROTO_H_

#include "absl/status/statusor.h"
#include "common/search_methods.h"
#include "lensgrid/v1/search.pb.h"

namespace lensgrid {

v1::SearchMethod ToProto(Method method);
v1::SearchMetric ToProto(MetricKind metric);
v1::Ablation ToProto(AblationKind ablation);

// INVALID_ARGUMENT for UNSPECIFIED (where required) and unknown values;
// `field` names the field in the message.
absl::StatusOr<Method> MethodFromProto(v1::SearchMethod method, const char* field = "method");
// UNSPECIFIED -> `dflt`.
absl::StatusOr<MetricKind> MetricFromProto(v1::SearchMetric metric,
                                           MetricKind dflt = MetricKind::kLogitDiff);
absl::StatusOr<AblationKind> AblationFromProto(v1::Ablation ablation,
                                               AblationKind dflt = AblationKind::kZero);

v1::CircuitOptions ToProto(const CircuitParams& params);
// Field by field; checked against a model by CheckCircuitParams.
CircuitParams CircuitParamsFromProto(const v1::CircuitOptions& options);

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_SEARCH_PROTO_H_
