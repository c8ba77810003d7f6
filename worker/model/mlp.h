// The MLP: post = act(x @ W_in + b_in), out = post @ W_out + b_out.
// Hooks: hook_pre, hook_post [batch, pos, d_mlp].
#ifndef LENSGRID_WORKER_MODEL_MLP_H_
#define LENSGRID_WORKER_MODEL_MLP_H_

#include "worker/model/config.h"
#include "worker/model/hook_point.h"
#include "worker/model/weights.h"

namespace lensgrid {

class MLPImpl : public torch::nn::Module {
 public:
  MLPImpl(const BlockWeights& weights, Activation act);
  // x: [batch, pos, d_model] -> [batch, pos, d_model]
  torch::Tensor forward(const torch::Tensor& x, const RunContext& ctx) const;
  void ExportWeights(BlockWeights* out) const;

 private:
  Activation act_;
  torch::Tensor W_in_, b_in_, W_out_, b_out_;
  HookPoint hook_pre_, hook_post_;
};
TORCH_MODULE(MLP);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_MLP_H_
