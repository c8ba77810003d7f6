// Declarative interventions (v1::Intervention) -> model hooks, and metrics
// read from the final logits (v1::Metric).
//
//   LG_ASSIGN_OR_RETURN(std::vector<ResolvedIntervention> plan,
//                       ResolveInterventions(request.interventions(), model,
//                       shapes, batch, pos));
//   ... run the patch input, caching PatchHookNames(plan), when there are PATCH
//   ops ... std::vector<NamedHook> hooks = MakeHooks(plan, &patch_cache);
//   LG_ASSIGN_OR_RETURN(at::Tensor metric, ComputeMetric(request.metric(),
//   logits, input, cfg));
#ifndef LENSGRID_WORKER_INTERVENTIONS_H_
#define LENSGRID_WORKER_INTERVENTIONS_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lensgrid/v1/worker.pb.h"
#include "worker/hook_shapes.h"
#include "worker/model/hooked_transformer.h"

namespace lensgrid {

// One intervention, checked against the model and the input's [batch, pos].
struct ResolvedIntervention {
  std::string hook;  // full name
  v1::Intervention::Op op = v1::Intervention::ZERO;
  std::optional<int> head_axis;  // set with `head`
  int64_t head = 0;
  std::optional<int>
      pos_axis;          // in the activation, before the head is selected
  at::Tensor positions;  // int64 [n] on the model's device, or undefined = all
  at::Tensor value;      // on the model's device, in its dtype, or undefined
  double scale = 1.0;
};

// INVALID_ARGUMENT (NOT_FOUND for an unknown hook) naming interventions[i] and
// what is wrong with it.
absl::StatusOr<std::vector<ResolvedIntervention>> ResolveInterventions(
    const google::protobuf::RepeatedPtrField<v1::Intervention>& interventions,
    const HookedTransformer& model, const std::vector<HookShape>& hook_shapes,
    int64_t batch, int64_t pos);

// Hooks the PATCH interventions need cached from the patch input.
std::vector<std::string> PatchHookNames(
    const std::vector<ResolvedIntervention>& plan);

// One hook per intervention; `patch_cache` holds PatchHookNames (may be null
// when there are no PATCH ops). The hooks reference `plan` and `patch_cache`,
// which must outlive the run.
std::vector<NamedHook> MakeHooks(const std::vector<ResolvedIntervention>& plan,
                                 const ActivationCache* patch_cache);

// The metric of each row ([batch], or its mean []) from logits [batch, pos,
// vocab]. INVALID_ARGUMENT for bad token ids, counts or positions.
absl::StatusOr<at::Tensor> ComputeMetric(const v1::Metric& metric,
                                         const at::Tensor& logits,
                                         const ModelInput& input,
                                         const ModelConfig& cfg);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_INTERVENTIONS_H_
