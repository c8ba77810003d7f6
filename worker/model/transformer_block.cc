#include "worker/model/transformer_block.h"

#include <torch/torch.h>

namespace lensgrid {

TransformerBlockImpl::TransformerBlockImpl(const HookedTransformerConfig& cfg,
                                           const BlockWeights& w)
    : cfg_(cfg) {
  // Registration order is the order of named_modules(): keep it the order of
  // the forward pass, so hook names list like TransformerLens's.
  hook_resid_pre_ = register_module("hook_resid_pre", HookPoint());
  ln1_ = register_module("ln1", LayerNorm(w.ln1, cfg.eps));
  if (cfg.use_attn_in) hook_attn_in_ = register_module("hook_attn_in", HookPoint());
  if (cfg.use_split_qkv_input) {
    hook_q_input_ = register_module("hook_q_input", HookPoint());
    hook_k_input_ = register_module("hook_k_input", HookPoint());
    hook_v_input_ = register_module("hook_v_input", HookPoint());
  }
  attn_ = register_module("attn", Attention(cfg, w));
  hook_attn_out_ = register_module("hook_attn_out", HookPoint());
  if (!cfg.attn_only) {
    hook_resid_mid_ = register_module("hook_resid_mid", HookPoint());
    if (cfg.use_hook_mlp_in) hook_mlp_in_ = register_module("hook_mlp_in", HookPoint());
    ln2_ = register_module("ln2", LayerNorm(w.ln2, cfg.eps));
    mlp_ = register_module("mlp", MLP(w, cfg.act_fn));
    hook_mlp_out_ = register_module("hook_mlp_out", HookPoint());
  }
  hook_resid_post_ = register_module("hook_resid_post", HookPoint());
}

torch::Tensor TransformerBlockImpl::forward(const torch::Tensor& resid_pre_in,
                                            const AttentionMask& mask,
                                            const RunContext& ctx) const {
  torch::Tensor resid_pre = hook_resid_pre_->forward(resid_pre_in, ctx);
  torch::Tensor attn_out;
  if (cfg_.use_attn_in || cfg_.use_split_qkv_input) {
    // Each head gets its own copy of the residual stream: [batch, pos, head, d_model]
    torch::Tensor attn_in = resid_pre.unsqueeze(2).expand(
        {resid_pre.size(0), resid_pre.size(1), cfg_.n_heads, cfg_.d_model});
    if (cfg_.use_attn_in) attn_in = hook_attn_in_->forward(attn_in, ctx);
    torch::Tensor q_in = attn_in, k_in = attn_in, v_in = attn_in;
    if (cfg_.use_split_qkv_input) {
      q_in = hook_q_input_->forward(attn_in, ctx);
      k_in = hook_k_input_->forward(attn_in, ctx);
      v_in = hook_v_input_->forward(attn_in, ctx);
      attn_out = attn_->forward(ln1_->forward(q_in, ctx), ln1_->forward(k_in, ctx),
                                ln1_->forward(v_in, ctx), mask, ctx);
    } else {
      torch::Tensor normalized = ln1_->forward(attn_in, ctx);
      attn_out = attn_->forward(normalized, normalized, normalized, mask, ctx);
    }
  } else {
    torch::Tensor normalized = ln1_->forward(resid_pre, ctx);
    attn_out = attn_->forward(normalized, normalized, normalized, mask, ctx);
  }
  attn_out = hook_attn_out_->forward(attn_out, ctx);
  if (cfg_.attn_only) return hook_resid_post_->forward(resid_pre + attn_out, ctx);

  torch::Tensor resid_mid = hook_resid_mid_->forward(resid_pre + attn_out, ctx);
  torch::Tensor mlp_in = cfg_.use_hook_mlp_in ? hook_mlp_in_->forward(resid_mid, ctx) : resid_mid;
  torch::Tensor mlp_out =
      hook_mlp_out_->forward(mlp_->forward(ln2_->forward(mlp_in, ctx), ctx), ctx);
  return hook_resid_post_->forward(resid_mid + mlp_out, ctx);
}

BlockWeights TransformerBlockImpl::ExportWeights() const {
  BlockWeights w;
  w.ln1 = ln1_->weights();
  attn_->ExportWeights(&w);
  if (!cfg_.attn_only) {
    w.ln2 = ln2_->weights();
    mlp_->ExportWeights(&w);
  }
  return w;
}

}  // namespace lensgrid
