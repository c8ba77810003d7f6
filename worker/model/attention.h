// Multi-head causal self-attention with TransformerLens's hooks:
// hook_q, hook_k, hook_v, hook_z [batch, pos, head, d_head];
// hook_attn_scores (masked, -inf) and hook_pattern [batch, head, query_pos, key_pos];
// hook_result [batch, pos, head, d_model] when cfg.use_attn_result.
//
// Q, K and V weights are stored fused, [d_model, 3, head, d_head], so the
// common case is one GEMM; W_Q() etc. are views in TransformerLens's shape.
#ifndef LENSGRID_WORKER_MODEL_ATTENTION_H_
#define LENSGRID_WORKER_MODEL_ATTENTION_H_

#include "worker/model/config.h"
#include "worker/model/hook_point.h"
#include "worker/model/weights.h"

namespace lensgrid {

// Which (query, key) pairs may attend, shared by all layers of one run.
struct AttentionMask {
  torch::Tensor blocked;     // bool [batch or 1, 1, pos, pos]; true = masked
  bool may_have_empty_rows;  // padding can leave a query with no key
};

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const HookedTransformerConfig& cfg, const BlockWeights& weights);

  // Inputs are [batch, pos, d_model], or [batch, pos, head, d_model] when the
  // block feeds each head its own input (use_split_qkv_input / use_attn_in).
  // Returns [batch, pos, d_model].
  torch::Tensor forward(const torch::Tensor& q_in, const torch::Tensor& k_in,
                        const torch::Tensor& v_in, const AttentionMask& mask,
                        const RunContext& ctx) const;

  torch::Tensor W_Q() const;  // [head, d_model, d_head] (views)
  torch::Tensor W_K() const;
  torch::Tensor W_V() const;
  const torch::Tensor& W_O() const { return W_O_; }  // [head, d_head, d_model]
  void ExportWeights(BlockWeights* out) const;

 private:
  torch::Tensor Project(const torch::Tensor& in, int which) const;

  int64_t n_heads_, d_head_, d_model_;
  bool use_attn_result_;
  double scale_;
  torch::Tensor W_QKV_;  // [d_model, 3, head, d_head]
  torch::Tensor b_QKV_;  // [3, head, d_head]
  torch::Tensor W_O_;    // [head, d_head, d_model]
  torch::Tensor b_O_;    // [d_model]
  HookPoint hook_q_, hook_k_, hook_v_, hook_z_, hook_attn_scores_, hook_pattern_, hook_result_;
};
TORCH_MODULE(Attention);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_ATTENTION_H_
