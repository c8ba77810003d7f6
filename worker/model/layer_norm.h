// LayerNorm with TransformerLens's hooks: hook_scale [..., 1] and
// hook_normalized [..., d_model]. With no weights it is LayerNormPre (the
// weights were folded into the next layer).
#ifndef LENSGRID_WORKER_MODEL_LAYER_NORM_H_
#define LENSGRID_WORKER_MODEL_LAYER_NORM_H_

#include "worker/model/hook_point.h"
#include "worker/model/weights.h"

namespace lensgrid {

class LayerNormImpl : public torch::nn::Module {
 public:
  LayerNormImpl(const LayerNormWeights& weights, double eps);
  // x: [..., d_model] -> [..., d_model]
  torch::Tensor forward(const torch::Tensor& x, const RunContext& ctx) const;
  // Detached copies; undefined when folded.
  LayerNormWeights weights() const;

 private:
  torch::Tensor w_, b_;  // undefined for LayerNormPre
  double eps_;
  HookPoint hook_scale_, hook_normalized_;
};
TORCH_MODULE(LayerNorm);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_LAYER_NORM_H_
