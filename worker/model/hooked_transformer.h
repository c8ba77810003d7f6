// A TransformerLens-style hooked GPT-2: every intermediate activation can be
// cached, read and replaced by its TransformerLens name.
//
//   LG_ASSIGN_OR_RETURN(auto model, HookedTransformer::FromPretrained("models/tiny"));
//   ForwardInput in;
//   in.tokens = tokens;                           // int64 [batch, pos]
//   CacheOptions cache_opts;
//   cache_opts.names = {"pattern0", "blocks.1.hook_resid_post"};
//   ActivationCache cache;
//   LG_ASSIGN_OR_RETURN(RunOutput out, model->RunWithCache(in, {}, cache_opts, &cache));
//
// All runs are const and keep their hooks in a per-run context: one model can
// serve concurrent runs. No exception crosses this API.
#ifndef LENSGRID_WORKER_MODEL_HOOKED_TRANSFORMER_H_
#define LENSGRID_WORKER_MODEL_HOOKED_TRANSFORMER_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/activation_cache.h"
#include "worker/model/processing.h"
#include "worker/model/transformer_block.h"

namespace lensgrid {

enum class ForwardReturn { kLogits, kLoss, kBoth, kNone };

struct ForwardInput {
  at::Tensor tokens;          // int64 [batch, pos]; needed unless start_at_layer
  at::Tensor attention_mask;  // optional [batch, pos]; nonzero = real token
  at::Tensor residual;        // [batch, pos, d_model], with start_at_layer
};

struct ForwardOptions {
  ForwardReturn return_type = ForwardReturn::kLogits;  // Default: logits
  bool per_token_loss = false;                         // loss [batch, pos - 1] instead of the mean
  std::optional<int> start_at_layer;                   // residual enters blocks.N.hook_resid_pre
  std::optional<int> stop_at_layer;  // run blocks [start, N); negative counts from the end
  // Optional int64 [batch]: unembed only this position of each sequence;
  // logits are then [batch, 1, d_vocab]. Not with a loss.
  at::Tensor logit_positions;
  bool enable_grad = false;            // Default: inference without autograd
  std::function<bool()> is_cancelled;  // polled between blocks
};

struct RunOutput {
  at::Tensor logits;    // [batch, pos, d_vocab]
  at::Tensor loss;      // [] or [batch, pos - 1]
  at::Tensor residual;  // with stop_at_layer: that layer's resid_pre
};

// A half-open slice of positions, Python-style (negative from the end).
struct PositionSlice {
  std::optional<int64_t> start, stop;
};

struct CacheOptions {
  // Which activations to record. Names may be exact or TransformerLens
  // shorthand ("pattern0", "k6"); regexes match full names; the predicate sees
  // full names. All empty: cache everything, as TransformerLens.
  std::vector<std::string> names;
  std::vector<std::string> regexes;
  std::function<bool(const std::string&)> predicate;
  std::optional<PositionSlice> positions;  // applied to the pos (query_pos) axis
  bool remove_batch_dim = false;           // REQUIRES batch == 1
  bool detach = true;                      // false keeps the autograd graph
};

struct NamedHook {
  std::string name;  // exact or shorthand
  HookFn fn;
};

struct LoadOptions {
  ProcessingOptions processing;  // Default: TransformerLens's from_pretrained
  std::string device = "cpu";    // "cpu" | "cuda" | "cuda:N"
  // Optional hook points (see HookedTransformerConfig).
  bool use_attn_result = false;
  bool use_split_qkv_input = false;
  bool use_attn_in = false;
  bool use_hook_mlp_in = false;
};

class HookedTransformer : public torch::nn::Module {
 public:
  // Reads DIR/config.json and DIR/model.safetensors, processes, moves to device.
  static absl::StatusOr<std::shared_ptr<HookedTransformer>> FromPretrained(
      const std::string& model_dir, const LoadOptions& options = {});
  // Builds from weights already in memory (already processed or not).
  static absl::StatusOr<std::shared_ptr<HookedTransformer>> FromWeights(
      const HookedTransformerConfig& cfg, const GPT2Weights& weights,
      const std::string& device = "cpu");

  const HookedTransformerConfig& cfg() const { return cfg_; }
  const LoadReport& load_report() const { return load_report_; }
  bool processed() const { return processed_; }
  torch::Device device() const { return device_; }

  // Every hook point, in forward order.
  const std::vector<std::string>& hook_names() const { return hook_names_; }
  // Where a hook point comes in the order a forward pass reaches them (ids
  // follow registration, which differs: attn.hook_z is registered before
  // attn.hook_pattern but runs after it). Hooks a forward never reaches rank
  // last.
  int ExecutionRank(int hook_id) const { return execution_rank_.at(hook_id); }
  // Exact name or shorthand -> id. NOT_FOUND with suggestions.
  absl::StatusOr<int> HookId(absl::string_view name) const;
  absl::StatusOr<std::string> ResolveHookName(absl::string_view name) const;
  absl::StatusOr<std::vector<std::string>> SelectHookNames(const CacheOptions& options) const;

  absl::StatusOr<RunOutput> Run(const ForwardInput& input, const ForwardOptions& options,
                                const std::vector<NamedHook>& hooks = {}) const;
  // Like Run, recording the selected activations into *cache.
  absl::StatusOr<RunOutput> RunWithCache(const ForwardInput& input, const ForwardOptions& options,
                                         const CacheOptions& cache_options, ActivationCache* cache,
                                         const std::vector<NamedHook>& hooks = {}) const;

  // The current weights in TransformerLens layout (on CPU).
  GPT2Weights ExportWeights() const;
  // Views of the live parameters (no copy), for analyses.
  const at::Tensor& W_U() const { return W_U_; }  // [d_model, d_vocab]
  const at::Tensor& W_O(int layer) const;         // [head, d_head, d_model]
  LayerNormWeights ln_final_weights() const { return ln_final_->weights(); }
  // A weight by TransformerLens name, on the model's device: "W_E", "W_pos",
  // "W_U", "b_U", "ln_final.w" / ".b", "blocks.L.attn.W_Q" (W_K, W_V, W_O,
  // b_Q, b_K, b_V, b_O), "blocks.L.mlp.W_in" (b_in, W_out, b_out),
  // "blocks.L.ln1.w" (ln1.b, ln2.w, ln2.b; negative L counts from the end),
  // or a per-block name alone ("W_Q", "b_in", ...) for all layers stacked
  // [n_layers, ...], as TransformerLens's model.W_Q. NOT_FOUND for an unknown
  // name; FAILED_PRECONDITION for a LayerNorm weight folded away.
  absl::StatusOr<at::Tensor> Weight(absl::string_view name) const;

 private:
  HookedTransformer(const HookedTransformerConfig& cfg, const GPT2Weights& weights);
  void BindHookPoints();
  absl::Status ValidateInput(const ForwardInput& input, const ForwardOptions& options, int* start,
                             int* stop) const;
  RunOutput Forward(const ForwardInput& input, const ForwardOptions& options, int start, int stop,
                    const RunContext& ctx) const;
  at::Tensor Loss(const at::Tensor& logits, const ForwardInput& input, bool per_token) const;

  HookedTransformerConfig cfg_;
  LoadReport load_report_;
  bool processed_ = false;
  torch::Device device_ = torch::kCPU;
  at::Tensor W_E_, W_pos_, W_U_, b_U_;
  HookPoint hook_embed_, hook_pos_embed_;
  torch::nn::ModuleList blocks_;                 // for named_modules(): "blocks.N...."
  std::vector<TransformerBlock> block_modules_;  // the same blocks, typed
  LayerNorm ln_final_{nullptr};
  std::vector<std::string> hook_names_;
  std::vector<HookPointImpl*> hook_points_;
  std::vector<int> execution_rank_;  // by hook id
};

// Parses "cpu", "cuda", "cuda:N". A CUDA device from a LibTorch built without
// CUDA (or with no such GPU) is FAILED_PRECONDITION.
absl::StatusOr<torch::Device> ParseDevice(const std::string& device);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_HOOKED_TRANSFORMER_H_
