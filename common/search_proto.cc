#include "common/search_proto.h"

#include "absl/strings/str_cat.h"

namespace lensgrid {
namespace {

template <typename Cpp, typename Wire>
absl::StatusOr<Cpp> FromWire(Wire value, size_t table_size, const char* what) {
  const int v = static_cast<int>(value);
  if (v < 1 || static_cast<size_t>(v) > table_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " ", v, " is not one this worker or coordinator knows (1..", table_size, ")"));
  }
  return static_cast<Cpp>(v - 1);
}

}  // namespace

v1::SearchMethod ToProto(Method method) {
  return static_cast<v1::SearchMethod>(static_cast<int>(method) + 1);
}
v1::SearchMetric ToProto(MetricKind metric) {
  return static_cast<v1::SearchMetric>(static_cast<int>(metric) + 1);
}
v1::Ablation ToProto(AblationKind ablation) {
  return static_cast<v1::Ablation>(static_cast<int>(ablation) + 1);
}

absl::StatusOr<Method> MethodFromProto(v1::SearchMethod method, const char* field) {
  if (method == v1::SEARCH_METHOD_UNSPECIFIED) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is unspecified (", MethodNames(), ")"));
  }
  return FromWire<Method>(method, AllMethods().size(), field);
}

absl::StatusOr<MetricKind> MetricFromProto(v1::SearchMetric metric, MetricKind dflt) {
  if (metric == v1::SEARCH_METRIC_UNSPECIFIED) return dflt;
  return FromWire<MetricKind>(metric, AllMetrics().size(), "metric");
}

absl::StatusOr<AblationKind> AblationFromProto(v1::Ablation ablation, AblationKind dflt) {
  if (ablation == v1::ABLATION_UNSPECIFIED) return dflt;
  return FromWire<AblationKind>(ablation, AllAblations().size(), "ablation");
}

v1::CircuitOptions ToProto(const CircuitParams& params) {
  v1::CircuitOptions o;
  o.set_ig_steps(params.ig_steps);
  for (const std::string& r : params.receivers) o.add_receivers(r);
  o.set_kept_edges(params.kept_edges);
  return o;
}

CircuitParams CircuitParamsFromProto(const v1::CircuitOptions& options) {
  CircuitParams p;
  p.ig_steps = options.ig_steps();
  p.receivers.assign(options.receivers().begin(), options.receivers().end());
  p.kept_edges = options.kept_edges();
  return p;
}

}  // namespace lensgrid
