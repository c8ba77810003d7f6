#include "worker/model/gradients.h"

#include <torch/torch.h>

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace lensgrid {

absl::StatusOr<RunOutput> RunWithGradients(const HookedTransformer& model,
                                           const ForwardInput& input, ForwardOptions options,
                                           const GradientRequest& request, ActivationCache* grads,
                                           ActivationCache* activations,
                                           const std::vector<NamedHook>& hooks,
                                           const CacheOptions* cache_options,
                                           ActivationCache* cache) {
  if (request.hooks.empty()) {
    return absl::InvalidArgumentError("gradients: name at least one hook");
  }
  if (!request.objective) return absl::InvalidArgumentError("gradients: no objective");
  std::vector<int> ids;
  for (const std::string& name : request.hooks) {
    LG_ASSIGN_OR_RETURN(int id, model.HookId(name));
    ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());

  // Each requested activation gets its own node in the graph as it arrives, before the
  // caller's hooks there: a fresh alias when it is already in the graph (one tensor may flow
  // through several hook points: a block hands the same attn_in to hook_q_input, hook_k_input
  // and hook_v_input, and each must get the gradient of its own uses only), a leaf when it is
  // not (frozen weights, nothing requested upstream; that cuts nothing). Never detach one that
  // is in the graph: hook ids are not in execution order (attn.hook_z is registered before
  // attn.hook_pattern), and a leaf made at hook_z would cut hook_pattern's gradient to zero.
  // The gradient is taken at the value that leaves the hook: that node when the caller's hooks
  // only read it (so a program's saved objective computed there counts), else an alias of
  // their replacement.
  auto own_node = [](const at::Tensor& act) {
    return act.requires_grad() ? act.view_as(act) : act.detach().requires_grad_(true);
  };
  auto arrived = std::make_shared<std::vector<at::Tensor>>(ids.size());
  auto captured = std::make_shared<std::vector<at::Tensor>>(ids.size());
  std::vector<NamedHook> all;
  for (size_t i = 0; i < ids.size(); ++i) {
    all.push_back({model.hook_names()[ids[i]],
                   [arrived, i, own_node](const at::Tensor& act,
                                          const HookPointImpl&) -> std::optional<at::Tensor> {
                     (*arrived)[i] = own_node(act);
                     return (*arrived)[i];
                   }});
  }
  all.insert(all.end(), hooks.begin(), hooks.end());
  for (size_t i = 0; i < ids.size(); ++i) {
    all.push_back({model.hook_names()[ids[i]],
                   [arrived, captured, i, own_node](
                       const at::Tensor& act, const HookPointImpl&) -> std::optional<at::Tensor> {
                     if (act.is_same((*arrived)[i])) {
                       (*captured)[i] = act;
                       return std::nullopt;
                     }
                     (*captured)[i] = own_node(act);
                     return (*captured)[i];
                   }});
  }
  // Autograd on whatever the caller's mode: enable_grad only spares the run
  // its own NoGradGuard, and a caller inside one (a search) would otherwise
  // get a graph-less objective and zeros for every gradient.
  torch::AutoGradMode grad_mode(true);
  options.enable_grad = true;
  RunOutput out;
  if (cache_options != nullptr && cache != nullptr) {
    LG_ASSIGN_OR_RETURN(out, model.RunWithCache(input, options, *cache_options, cache, all));
  } else {
    LG_ASSIGN_OR_RETURN(out, model.Run(input, options, all));
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!(*captured)[i].defined()) {
      return absl::InvalidArgumentError(absl::StrCat("gradients: the run never reached ",
                                                     model.hook_names()[ids[i]],
                                                     " (is it past stop_at_layer?)"));
    }
  }
  LG_ASSIGN_OR_RETURN(at::Tensor objective, request.objective(out));
  if (!objective.defined() || objective.numel() != 1 ||
      !at::isFloatingType(objective.scalar_type())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gradients: the objective must be one floating-point number, got ",
        objective.defined()
            ? absl::StrCat(c10::toString(objective.scalar_type()), " ", c10::str(objective.sizes()))
            : std::string("nothing")));
  }
  std::vector<at::Tensor> result(ids.size());
  if (objective.requires_grad()) {
    try {
      result = torch::autograd::grad({objective.reshape({})}, *captured, /*grad_outputs=*/{},
                                     /*retain_graph=*/false, /*create_graph=*/false,
                                     /*allow_unused=*/true);
    } catch (const c10::Error& e) {
      return absl::InternalError(
          absl::StrCat("gradients: backward failed: ", e.what_without_backtrace()));
    }
  }
  *grads = ActivationCache(static_cast<int>(model.cfg().n_layers));
  if (activations != nullptr)
    *activations = ActivationCache(static_cast<int>(model.cfg().n_layers));
  for (size_t i = 0; i < ids.size(); ++i) {
    const at::Tensor& act = (*captured)[i];
    const std::string& name = model.hook_names()[ids[i]];
    grads->Put(name, result[i].defined() ? result[i].detach() : torch::zeros_like(act.detach()));
    if (activations != nullptr) activations->Put(name, act.detach());
  }
  out.logits = out.logits.defined() ? out.logits.detach() : out.logits;
  out.loss = out.loss.defined() ? out.loss.detach() : out.loss;
  out.residual = out.residual.defined() ? out.residual.detach() : out.residual;
  return out;
}

}  // namespace lensgrid
