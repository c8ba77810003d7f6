// One GPT-2 block, with TransformerLens's residual hooks:
//   resid_mid  = resid_pre + attn(ln1(resid_pre))
//   resid_post = resid_mid + mlp(ln2(resid_mid))
// Hooks: hook_resid_pre, hook_attn_out, hook_resid_mid, hook_mlp_out,
// hook_resid_post [batch, pos, d_model]; optional hook_attn_in, hook_q_input,
// hook_k_input, hook_v_input [batch, pos, head, d_model], hook_mlp_in.
// Attention-only blocks have no ln2/mlp: resid_post = resid_pre + attn_out.
#ifndef LENSGRID_WORKER_MODEL_TRANSFORMER_BLOCK_H_
#define LENSGRID_WORKER_MODEL_TRANSFORMER_BLOCK_H_

#include "worker/model/attention.h"
#include "worker/model/layer_norm.h"
#include "worker/model/mlp.h"

namespace lensgrid {

class TransformerBlockImpl : public torch::nn::Module {
 public:
  TransformerBlockImpl(const HookedTransformerConfig& cfg, const BlockWeights& weights);
  // resid_pre: [batch, pos, d_model] -> resid_post [batch, pos, d_model]
  torch::Tensor forward(const torch::Tensor& resid_pre, const AttentionMask& mask,
                        const RunContext& ctx) const;
  BlockWeights ExportWeights() const;
  const Attention& attn() const { return attn_; }

 private:
  HookedTransformerConfig cfg_;
  LayerNorm ln1_{nullptr}, ln2_{nullptr};
  Attention attn_{nullptr};
  MLP mlp_{nullptr};
  HookPoint hook_resid_pre_, hook_attn_in_, hook_q_input_, hook_k_input_, hook_v_input_,
      hook_attn_out_, hook_resid_mid_, hook_mlp_in_, hook_mlp_out_, hook_resid_post_;
};
TORCH_MODULE(TransformerBlock);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_TRANSFORMER_BLOCK_H_
