#include "worker/model/processing.h"

#include <torch/torch.h>

namespace lensgrid {
namespace {

// Folds LayerNorm (w, b) into a reading weight W [..., d_model, out] and its
// bias [..., out]; then centers W over d_model, since LayerNormPre's output
// is already centered (TransformerLens's fold_layer_norm with center_weights).
void FoldInto(const LayerNormWeights& ln, torch::Tensor* W, torch::Tensor* b) {
  // W: [..., d_model, out]; ln.w/ln.b: [d_model]
  *b = *b + (*W * ln.b.unsqueeze(-1)).sum(-2);
  *W = *W * ln.w.unsqueeze(-1);
  *W = *W - W->mean(-2, /*keepdim=*/true);
}

}  // namespace

void FoldLayerNorm(GPT2Weights* w) {
  for (BlockWeights& b : w->blocks) {
    FoldInto(b.ln1, &b.W_Q, &b.b_Q);
    FoldInto(b.ln1, &b.W_K, &b.b_K);
    FoldInto(b.ln1, &b.W_V, &b.b_V);
    b.ln1 = LayerNormWeights{};
    if (b.W_in.defined()) {
      FoldInto(b.ln2, &b.W_in, &b.b_in);
      b.ln2 = LayerNormWeights{};
    }
  }
  FoldInto(w->ln_final, &w->W_U, &w->b_U);
  w->ln_final = LayerNormWeights{};
}

void CenterWritingWeights(GPT2Weights* w) {
  auto center_last = [](torch::Tensor* t) { *t = *t - t->mean(-1, true); };
  center_last(&w->W_E);
  center_last(&w->W_pos);
  for (BlockWeights& b : w->blocks) {
    center_last(&b.W_O);
    center_last(&b.b_O);
    if (b.W_out.defined()) {
      center_last(&b.W_out);
      center_last(&b.b_out);
    }
  }
}

void CenterUnembed(GPT2Weights* w) {
  w->W_U = w->W_U - w->W_U.mean(-1, true);
  w->b_U = w->b_U - w->b_U.mean();
}

void FoldValueBiases(GPT2Weights* w) {
  for (BlockWeights& b : w->blocks) {
    // Each position's pattern sums to 1, so b_V contributes b_V @ W_O always.
    b.b_O = b.b_O + (b.b_V.unsqueeze(-1) * b.W_O).sum(at::IntArrayRef{0, 1});
    b.b_V = torch::zeros_like(b.b_V);
  }
}

void ProcessWeights(const ProcessingOptions& options, const HookedTransformerConfig& cfg,
                    GPT2Weights* weights) {
  torch::NoGradGuard no_grad;
  if (options.fold_ln) FoldLayerNorm(weights);
  if (options.center_writing_weights) CenterWritingWeights(weights);
  if (options.center_unembed) CenterUnembed(weights);
  if (options.fold_value_biases) FoldValueBiases(weights);
}

}  // namespace lensgrid
