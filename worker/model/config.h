// The shape of a GPT-2-family model, read from a Hugging Face config.json.
//
//   LG_ASSIGN_OR_RETURN(HookedTransformerConfig cfg, LoadModelConfig("models/tiny"));
//   LG_ASSIGN_OR_RETURN(HookedTransformerConfig small, ModelConfigPreset("gpt2"));
//
// Field names follow TransformerLens's HookedTransformerConfig. No LibTorch here.
#ifndef LENSGRID_WORKER_MODEL_CONFIG_H_
#define LENSGRID_WORKER_MODEL_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace lensgrid {

enum class Activation { kGeluNew, kGelu, kRelu };

struct HookedTransformerConfig {
  int64_t n_layers = 12;
  int64_t n_heads = 12;
  int64_t d_model = 768;
  int64_t d_head = 64;   // d_model / n_heads
  int64_t d_mlp = 3072;  // n_inner, default 4 * d_model
  int64_t n_ctx = 1024;  // n_positions
  int64_t d_vocab = 50257;
  double eps = 1e-5;  // layer_norm_epsilon
  Activation act_fn = Activation::kGeluNew;
  int64_t bos_token_id = 50256;
  int64_t eos_token_id = 50256;
  bool attn_only = false;  // blocks without MLPs (lensgrid extension)

  // Optional hook points, off by default as in TransformerLens.
  bool use_attn_result = false;      // attn.hook_result [batch, pos, head, d_model]
  bool use_split_qkv_input = false;  // hook_q_input / hook_k_input / hook_v_input
  bool use_attn_in = false;          // hook_attn_in [batch, pos, head, d_model]
  bool use_hook_mlp_in = false;      // hook_mlp_in [batch, pos, d_model]
};

absl::string_view ActivationName(Activation act);

// Parses the fields of a Hugging Face GPT2Config JSON document. `source` names
// the file in errors. Missing required fields are errors naming the field.
absl::StatusOr<HookedTransformerConfig> ParseHfConfig(absl::string_view json_text,
                                                      absl::string_view source);

// Reads DIR/config.json.
absl::StatusOr<HookedTransformerConfig> LoadModelConfig(const std::string& model_dir);

// "gpt2" (= "gpt2-small"), "gpt2-medium", "gpt2-large", "gpt2-xl".
absl::StatusOr<HookedTransformerConfig> ModelConfigPreset(absl::string_view name);

// Serializes to a Hugging Face config.json (for checkpoints lensgrid writes).
std::string ModelConfigToHfJson(const HookedTransformerConfig& cfg);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_CONFIG_H_
