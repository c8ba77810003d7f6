// GPT-2 weights in TransformerLens's layout, and the Hugging Face loader.
//
//   LG_ASSIGN_OR_RETURN(HookedTransformerConfig cfg, LoadModelConfig(dir));
//   LoadReport report;
//   LG_ASSIGN_OR_RETURN(GPT2Weights w, LoadHfModelDir(dir, cfg, &report));
//
// Shapes (TransformerLens names): W_Q/W_K/W_V [head, d_model, d_head],
// b_Q/b_K/b_V [head, d_head], W_O [head, d_head, d_model], b_O [d_model],
// W_in [d_model, d_mlp], W_out [d_mlp, d_model], W_E [d_vocab, d_model],
// W_pos [n_ctx, d_model], W_U [d_model, d_vocab], b_U [d_vocab].
#ifndef LENSGRID_WORKER_MODEL_WEIGHTS_H_
#define LENSGRID_WORKER_MODEL_WEIGHTS_H_

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/checkpoint_files.h"
#include "worker/model/config.h"

namespace lensgrid {

// Undefined tensors mean "folded away" (LayerNormPre).
struct LayerNormWeights {
  at::Tensor w;  // [d_model]
  at::Tensor b;  // [d_model]
  bool folded() const { return !w.defined(); }
};

struct BlockWeights {
  LayerNormWeights ln1, ln2;
  at::Tensor W_Q, W_K, W_V, b_Q, b_K, b_V, W_O, b_O;
  at::Tensor W_in, b_in, W_out, b_out;  // undefined for attention-only blocks
};

struct GPT2Weights {
  at::Tensor W_E, W_pos;
  std::vector<BlockWeights> blocks;
  LayerNormWeights ln_final;
  at::Tensor W_U, b_U;
};

struct LoadReport {
  std::vector<std::string> unknown_tensors;  // present in the checkpoint, not used
  bool lm_head_tied = false;                 // lm_head.weight absent: W_U = W_E^T
  bool sharded = false;                      // model.safetensors.index.json and its shards
  std::string weights_sha256;                // the checkpoint's (common/checkpoint_files.h)
};

// Reads a Hugging Face GPT-2 checkpoint: model.safetensors, or the shards a
// model.safetensors.index.json maps each tensor to (keys with or without the
// "transformer." prefix; Conv1D weights [in, out]; F32/F16/BF16 upcast to
// F32). attn.bias / attn.masked_bias buffers are ignored. A missing or
// mis-shaped tensor is INVALID_ARGUMENT naming the tensor and both shapes; a
// tensor the index maps to a shard that lacks it, INVALID_ARGUMENT naming both.
absl::StatusOr<GPT2Weights> LoadHfModelDir(const std::string& model_dir,
                                           const HookedTransformerConfig& cfg, LoadReport* report);
absl::StatusOr<GPT2Weights> LoadHfCheckpoint(const Checkpoint& checkpoint,
                                             const HookedTransformerConfig& cfg,
                                             LoadReport* report);
// One safetensors file, wherever it is.
absl::StatusOr<GPT2Weights> LoadHfWeights(const std::string& safetensors_path,
                                          const HookedTransformerConfig& cfg, LoadReport* report);

// Random weights in the distribution GPT-2 is initialised with (std 0.02,
// LayerNorm 1/0). Deterministic for a seed.
GPT2Weights RandomWeights(const HookedTransformerConfig& cfg, uint64_t seed);

// Writes weights (unprocessed) as a Hugging Face checkpoint dir: config.json
// and model.safetensors with "transformer."-prefixed names, in F32 or F16.
absl::Status SaveHfCheckpoint(const GPT2Weights& weights, const HookedTransformerConfig& cfg,
                              const std::string& dir, bool f16);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_WEIGHTS_H_
