// Declarative interventions (v1::Intervention) -> model hooks, and metrics
// read from the final logits (v1::Metric, computed by the library's metrics).
//
//   LG_ASSIGN_OR_RETURN(std::vector<ResolvedIntervention> plan,
//                       ResolveInterventions(request.interventions(), model,
//                       shapes, batch, pos));
//   ... run the patch input, caching PatchHookNames(plan), when there are PATCH
//   ops ... std::vector<NamedHook> hooks = MakeHooks(plan, &patch_cache);
//   LG_ASSIGN_OR_RETURN(std::optional<MetricKind> kind,
//                       RequestedMetric(request.metric()));
//   LG_ASSIGN_OR_RETURN(at::Tensor metric, ComputeMetric(*kind, request.metric(),
//                                                        logits, input, cfg));
#ifndef LENSGRID_WORKER_CORE_INTERVENTIONS_H_
#define LENSGRID_WORKER_CORE_INTERVENTIONS_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lensgrid/v1/worker.pb.h"
#include "worker/hook_shapes.h"
#include "worker/model/activation_edit.h"
#include "worker/model/analysis/metrics.h"
#include "worker/model/hooked_transformer.h"

namespace lensgrid {

// One intervention, checked against the model and the input's [batch, pos]:
// the library's ActivationEdit (worker/model/activation_edit.h) on one hook.
struct ResolvedIntervention {
  std::string hook;  // full name
  ActivationEdit edit;
};

// INVALID_ARGUMENT (NOT_FOUND for an unknown hook) naming interventions[i] and
// what is wrong with it.
absl::StatusOr<std::vector<ResolvedIntervention>> ResolveInterventions(
    const google::protobuf::RepeatedPtrField<v1::Intervention>& interventions,
    const HookedTransformer& model, const std::vector<HookShape>& hook_shapes, int64_t batch,
    int64_t pos);

// Hooks the PATCH interventions need cached from the patch input.
std::vector<std::string> PatchHookNames(const std::vector<ResolvedIntervention>& plan);

// One hook per intervention; `patch_cache` holds PatchHookNames (may be null
// when there are no PATCH ops). Each hook is the library's EditHook and holds
// copies of what it needs.
std::vector<NamedHook> MakeHooks(const std::vector<ResolvedIntervention>& plan,
                                 const ActivationCache* patch_cache);

// The metric a request asks for (`kind`, else the deprecated legacy_kind);
// nullopt for none. INVALID_ARGUMENT for an unknown value or a search-only
// metric (loss, kl).
absl::StatusOr<std::optional<MetricKind>> RequestedMetric(const v1::Metric& metric);

// The metric of each row ([batch], or its mean []) from logits [batch, pos,
// vocab], read at each row's position with the library's ComputeMetric
// (worker/model/analysis/metrics.h: the same code as a search's metric).
// INVALID_ARGUMENT for bad token ids, counts or positions.
absl::StatusOr<at::Tensor> ComputeMetric(MetricKind kind, const v1::Metric& metric,
                                         const at::Tensor& logits, const ForwardInput& input,
                                         const HookedTransformerConfig& cfg);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_CORE_INTERVENTIONS_H_
