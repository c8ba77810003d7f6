#include "worker/model/mlp.h"

#include <torch/torch.h>

namespace lensgrid {

MLPImpl::MLPImpl(const BlockWeights& w, Activation act) : act_(act) {
  W_in_ = register_parameter("W_in", w.W_in.clone());     // [d_model, d_mlp]
  b_in_ = register_parameter("b_in", w.b_in.clone());     // [d_mlp]
  W_out_ = register_parameter("W_out", w.W_out.clone());  // [d_mlp, d_model]
  b_out_ = register_parameter("b_out", w.b_out.clone());  // [d_model]
  hook_pre_ = register_module("hook_pre", HookPoint());
  hook_post_ = register_module("hook_post", HookPoint());
}

torch::Tensor MLPImpl::forward(const torch::Tensor& x, const RunContext& ctx) const {
  // [batch * pos, d] GEMMs with the bias fused (addmm), viewed back as [batch, pos, -1].
  auto linear = [](const torch::Tensor& in, const torch::Tensor& W, const torch::Tensor& b) {
    std::vector<int64_t> shape(in.sizes().begin(), in.sizes().end());
    shape.back() = W.size(1);
    return torch::addmm(b, in.reshape({-1, in.size(-1)}), W).view(shape);
  };
  torch::Tensor pre = hook_pre_->forward(linear(x, W_in_, b_in_), ctx);  // [batch, pos, d_mlp]
  torch::Tensor post;
  switch (act_) {
    case Activation::kGeluNew:
      post = torch::gelu(pre, "tanh");
      break;
    case Activation::kGelu:
      post = torch::gelu(pre);
      break;
    case Activation::kRelu:
      post = torch::relu(pre);
      break;
  }
  post = hook_post_->forward(post, ctx);  // [batch, pos, d_mlp]
  return linear(post, W_out_, b_out_);
}

void MLPImpl::ExportWeights(BlockWeights* out) const {
  out->W_in = W_in_.detach().clone();
  out->b_in = b_in_.detach().clone();
  out->W_out = W_out_.detach().clone();
  out->b_out = b_out_.detach().clone();
}

}  // namespace lensgrid
