// Weight processing as TransformerLens's from_pretrained does by default.
// Each step changes the logits only by a per-position constant (or not at all),
// so log-probabilities are unchanged; the activations become easier to read.
//
//   ProcessWeights(ProcessingOptions{}, cfg, &weights);  // all four steps
//   ProcessWeights(ProcessingOptions::None(), cfg, &weights);  // HF-equal
#ifndef LENSGRID_WORKER_MODEL_PROCESSING_H_
#define LENSGRID_WORKER_MODEL_PROCESSING_H_

#include "worker/model/config.h"
#include "worker/model/weights.h"

namespace lensgrid {

struct ProcessingOptions {
  bool fold_ln = true;                 // LayerNorm w, b into the next weights
  bool center_writing_weights = true;  // writes to the residual have zero mean
  bool center_unembed = true;          // W_U, b_U have zero mean over vocab
  bool fold_value_biases = true;       // b_V folded into b_O
  static ProcessingOptions None() { return {false, false, false, false}; }
};

void ProcessWeights(const ProcessingOptions& options, const HookedTransformerConfig& cfg,
                    GPT2Weights* weights);

// The individual steps, in the order ProcessWeights applies them.
void FoldLayerNorm(GPT2Weights* w);
void CenterWritingWeights(GPT2Weights* w);
void CenterUnembed(GPT2Weights* w);
void FoldValueBiases(GPT2Weights* w);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_PROCESSING_H_
