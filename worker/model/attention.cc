#include "worker/model/attention.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>

namespace lensgrid {

AttentionImpl::AttentionImpl(const HookedTransformerConfig& cfg, const BlockWeights& w)
    : n_heads_(cfg.n_heads),
      d_head_(cfg.d_head),
      d_model_(cfg.d_model),
      use_attn_result_(cfg.use_attn_result),
      scale_(1.0 / std::sqrt(static_cast<double>(cfg.d_head))) {
  // [3, head, d_model, d_head] -> [d_model, 3, head, d_head]
  W_QKV_ = register_parameter(
      "W_QKV", torch::stack({w.W_Q, w.W_K, w.W_V}).permute({2, 0, 1, 3}).contiguous());
  b_QKV_ = register_parameter("b_QKV", torch::stack({w.b_Q, w.b_K, w.b_V}).contiguous());
  W_O_ = register_parameter("W_O", w.W_O.clone());
  b_O_ = register_parameter("b_O", w.b_O.clone());
  hook_q_ = register_module("hook_q", HookPoint());
  hook_k_ = register_module("hook_k", HookPoint());
  hook_v_ = register_module("hook_v", HookPoint());
  hook_z_ = register_module("hook_z", HookPoint());
  hook_attn_scores_ = register_module("hook_attn_scores", HookPoint());
  hook_pattern_ = register_module("hook_pattern", HookPoint());
  if (use_attn_result_) hook_result_ = register_module("hook_result", HookPoint());
}

torch::Tensor AttentionImpl::W_Q() const { return W_QKV_.select(1, 0).permute({1, 0, 2}); }
torch::Tensor AttentionImpl::W_K() const { return W_QKV_.select(1, 1).permute({1, 0, 2}); }
torch::Tensor AttentionImpl::W_V() const { return W_QKV_.select(1, 2).permute({1, 0, 2}); }

// Per-head input [batch, pos, head, d_model] -> [batch, pos, head, d_head].
torch::Tensor AttentionImpl::Project(const torch::Tensor& in, int which) const {
  torch::Tensor W = W_QKV_.select(1, which);  // [d_model, head, d_head]
  return torch::einsum("bphd,dhe->bphe", {in, W}) + b_QKV_[which];
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& q_in, const torch::Tensor& k_in,
                                     const torch::Tensor& v_in, const AttentionMask& mask,
                                     const RunContext& ctx) const {
  const int64_t batch = q_in.size(0), pos = q_in.size(1);
  torch::Tensor q, k, v;  // [batch, pos, head, d_head]
  if (q_in.dim() == 3 && q_in.is_same(k_in) && q_in.is_same(v_in)) {
    torch::Tensor qkv = torch::addmm(b_QKV_.view({-1}), q_in.reshape({batch * pos, d_model_}),
                                     W_QKV_.view({d_model_, -1}))
                            .view({batch, pos, 3, n_heads_, d_head_});
    q = qkv.select(2, 0);
    k = qkv.select(2, 1);
    v = qkv.select(2, 2);
  } else {
    auto per_head = [&](const torch::Tensor& in) {
      return in.dim() == 4 ? in : in.unsqueeze(2).expand({batch, pos, n_heads_, d_model_});
    };
    q = Project(per_head(q_in), 0);
    k = Project(per_head(k_in), 1);
    v = Project(per_head(v_in), 2);
  }
  q = hook_q_->forward(q, ctx);
  k = hook_k_->forward(k, ctx);
  v = hook_v_->forward(v, ctx);

  // [batch, head, query_pos, key_pos]
  torch::Tensor scores = torch::matmul(q.permute({0, 2, 1, 3}), k.permute({0, 2, 3, 1})) * scale_;
  scores = scores.masked_fill(mask.blocked, -std::numeric_limits<float>::infinity());
  scores = hook_attn_scores_->forward(scores, ctx);
  torch::Tensor pattern = torch::softmax(scores, -1);
  if (mask.may_have_empty_rows) pattern = torch::nan_to_num(pattern, 0.0);
  pattern = hook_pattern_->forward(pattern, ctx);

  // [batch, head, pos, d_head] -> [batch, pos, head, d_head]
  torch::Tensor z = torch::matmul(pattern, v.permute({0, 2, 1, 3})).permute({0, 2, 1, 3});
  z = hook_z_->forward(z, ctx);
  if (use_attn_result_) {
    torch::Tensor result = torch::einsum("bphe,hed->bphd", {z, W_O_});
    result = hook_result_->forward(result, ctx);  // [batch, pos, head, d_model]
    return result.sum(2) + b_O_;
  }
  return torch::addmm(b_O_, z.reshape({batch * pos, n_heads_ * d_head_}),
                      W_O_.view({n_heads_ * d_head_, d_model_}))
      .view({batch, pos, d_model_});
}

void AttentionImpl::ExportWeights(BlockWeights* out) const {
  out->W_Q = W_Q().detach().contiguous();
  out->W_K = W_K().detach().contiguous();
  out->W_V = W_V().detach().contiguous();
  out->b_Q = b_QKV_[0].detach().clone();
  out->b_K = b_QKV_[1].detach().clone();
  out->b_V = b_QKV_[2].detach().clone();
  out->W_O = W_O_.detach().clone();
  out->b_O = b_O_.detach().clone();
}

}  // namespace lensgrid
