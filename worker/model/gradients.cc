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

  // An activation already in the graph (it depends on a weight that requires
  // grad, or on an earlier requested hook) is read as it passes; autograd
  // differentiates with respect to it in place. One that is not (frozen
  // weights, or no requested hook upstream) becomes a leaf: detaching it cuts
  // nothing. Never detach one that is in the graph: the hook ids are not in
  // execution order (attn.hook_z is registered before attn.hook_pattern, as in
  // TransformerLens), and a leaf made at hook_z would cut hook_pattern's
  // gradient to zero.
  // The same as the activation arrives, before the caller's hooks there, so
  // what they compute from it (a program's saved objective) is in the graph.
  auto captured = std::make_shared<std::vector<at::Tensor>>(ids.size());
  std::vector<NamedHook> all;
  for (int id : ids) {
    all.push_back({model.hook_names()[id],
                   [](const at::Tensor& act, const HookPointImpl&) -> std::optional<at::Tensor> {
                     if (act.requires_grad()) return std::nullopt;
                     return act.detach().requires_grad_(true);
                   }});
  }
  all.insert(all.end(), hooks.begin(), hooks.end());
  for (size_t i = 0; i < ids.size(); ++i) {
    all.push_back(
        {model.hook_names()[ids[i]],
         [captured, i](const at::Tensor& act, const HookPointImpl&) -> std::optional<at::Tensor> {
           if (act.requires_grad()) {
             (*captured)[i] = act;
             return std::nullopt;
           }
           at::Tensor x = act.detach().requires_grad_(true);
           (*captured)[i] = x;
           return x;
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
