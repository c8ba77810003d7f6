// Gradients of a scalar objective with respect to hook activations, from one
// forward and one backward: what TransformerLens users get from backward
// hooks, and what attribution patching needs.
//
//   GradientRequest g;
//   g.hooks = {"blocks.0.attn.hook_z", "blocks.1.hook_resid_post"};
//   g.objective = [&](const RunOutput& out) -> absl::StatusOr<at::Tensor> {
//     return out.logits.index({0, -1, answer}) - out.logits.index({0, -1, wrong});
//   };
//   ActivationCache grads, acts;
//   LG_ASSIGN_OR_RETURN(RunOutput out, RunWithGradients(*model, in, {}, g, &grads, &acts));
//   grads.Get("blocks.0.attn.hook_z")  // d objective / d z, shaped like z
//
// The gradient at a hook is taken with respect to the activation as it leaves
// the hook point (after the run's own hooks there have edited it), which is
// the value everything downstream reads; the run's hooks that only read it there
// (a program computing the objective) count among its uses. Each hook point is
// its own node, even where one tensor flows through several (hook_q_input,
// hook_k_input and hook_v_input of a block). A hook the objective does not
// depend on gets zeros.
#ifndef LENSGRID_WORKER_MODEL_GRADIENTS_H_
#define LENSGRID_WORKER_MODEL_GRADIENTS_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/activation_cache.h"
#include "worker/model/hooked_transformer.h"

namespace lensgrid {

struct GradientRequest {
  std::vector<std::string> hooks;  // exact or shorthand; at least one
  // The objective, a tensor with one element, computed from the run's output
  // (and from anything the run's hooks recorded). Errors pass through.
  std::function<absl::StatusOr<at::Tensor>(const RunOutput&)> objective;
};

// Runs `input` with autograd on (options.enable_grad is forced), the caller's
// `hooks` first at every hook point, then computes the objective and its
// gradient with respect to each requested hook. `grads` receives one entry per
// requested hook (full name, forward order), detached and shaped like the
// activation; `activations` (optional) the activations themselves, detached;
// with `cache_options` and `cache`, the run records its cache as RunWithCache.
// INVALID_ARGUMENT for an unknown hook, a hook the run does not reach (e.g.
// past stop_at_layer) or an objective that is not one element of floating
// point; CANCELLED as the run.
absl::StatusOr<RunOutput> RunWithGradients(const HookedTransformer& model,
                                           const ForwardInput& input, ForwardOptions options,
                                           const GradientRequest& request, ActivationCache* grads,
                                           ActivationCache* activations = nullptr,
                                           const std::vector<NamedHook>& hooks = {},
                                           const CacheOptions* cache_options = nullptr,
                                           ActivationCache* cache = nullptr);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_GRADIENTS_H_
