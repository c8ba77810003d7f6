#include "worker/model/layer_norm.h"

#include <torch/torch.h>

namespace lensgrid {

LayerNormImpl::LayerNormImpl(const LayerNormWeights& weights, double eps) : eps_(eps) {
  if (!weights.folded()) {
    w_ = register_parameter("w", weights.w.clone());
    b_ = register_parameter("b", weights.b.clone());
  }
  hook_scale_ = register_module("hook_scale", HookPoint());
  hook_normalized_ = register_module("hook_normalized", HookPoint());
}

torch::Tensor LayerNormImpl::forward(const torch::Tensor& x, const RunContext& ctx) const {
  torch::Tensor centered = x - x.mean(-1, /*keepdim=*/true);
  torch::Tensor scale =
      hook_scale_->forward((centered.pow(2).mean(-1, true) + eps_).sqrt(), ctx);  // [..., 1]
  torch::Tensor normalized = centered / scale;
  if (w_.defined()) normalized = torch::addcmul(b_, normalized, w_);
  return hook_normalized_->forward(normalized, ctx);  // [..., d_model]
}

}  // namespace lensgrid

namespace lensgrid {

LayerNormWeights LayerNormImpl::weights() const {
  if (!w_.defined()) return {};
  return {w_.detach().clone(), b_.detach().clone()};
}

}  // namespace lensgrid
