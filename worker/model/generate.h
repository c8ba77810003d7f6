// Sampling from a hooked GPT-2, as TransformerLens's model.generate: repeated
// forwards over the whole sequence (no KV cache), reading only the last
// position's logits, one new token per row and step.
//
//   GenerateOptions g;
//   g.max_new_tokens = 20;
//   g.temperature = 0.7;
//   g.top_p = 0.9;
//   g.seed = 42;  // the same seed and prompt give the same tokens
//   g.on_step = [](const GenerateStep& s) { ...; return absl::OkStatus(); };
//   LG_ASSIGN_OR_RETURN(GenerateOutput out,
//                       Generate(*model, LeftPadded({{306, 5, 7}, {306, 9}}, eos), g));
//   out.new_tokens  // int64 [batch, steps]
//
// Sampling: temperature 0 is greedy (argmax); otherwise the logits are divided
// by the temperature, cut to the top_k largest (when top_k > 0), then to the
// smallest set whose probability reaches top_p (nucleus, when 0 < top_p < 1;
// the most likely token always stays), and one token is drawn with a CPU
// torch::Generator seeded with `seed` (a random seed without one), so the
// draws do not depend on the model's device. Unlike TransformerLens, top_k and
// top_p may be combined (top_k first). Rows of different lengths run
// left-padded with an attention mask: padding changes no row's tokens.
#ifndef LENSGRID_WORKER_MODEL_GENERATE_H_
#define LENSGRID_WORKER_MODEL_GENERATE_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/model/hooked_transformer.h"

namespace lensgrid {

// One step's new tokens, handed to GenerateOptions::on_step.
struct GenerateStep {
  int64_t step = 0;             // 0-based
  std::vector<int64_t> tokens;  // one per row; EOS for a row finished earlier
  std::vector<bool> finished;   // per row: EOS reached (stop_at_eos only)
  // Step 0 only: the prompt as run, int64 [batch, pos] on CPU (left-padded
  // with EOS), and its bool mask when rows were padded.
  at::Tensor prompt_tokens, prompt_mask;
};

struct GenerateOptions {
  int64_t max_new_tokens = 0;  // required, > 0; prompt + new tokens <= n_ctx
  double temperature = 0.0;    // >= 0; 0: greedy
  int64_t top_k = 0;           // >= 0; 0: off
  double top_p = 0.0;          // in [0, 1]; 0 or 1: off
  std::optional<uint64_t> seed;
  // A row that produces EOS is finished: it gets EOS from then on, and
  // generation ends early once every row is finished.
  bool stop_at_eos = false;
  std::function<bool()> is_cancelled;  // polled before each step and between blocks
  // Called after each step; an error ends generation with that error.
  std::function<absl::Status(const GenerateStep&)> on_step;
};

struct GenerateOutput {
  at::Tensor prompt_tokens;  // int64 [batch, pos] as run (left-padded with EOS)
  at::Tensor prompt_mask;    // bool [batch, pos]; undefined when no row was padded
  at::Tensor new_tokens;     // int64 [batch, steps], steps <= max_new_tokens
  at::Tensor finished;       // bool [batch]
};

// INVALID_ARGUMENT naming the field (max_new_tokens, temperature, top_k,
// top_p) for a value out of its range.
absl::Status CheckGenerateOptions(const GenerateOptions& options);

// Prompts of any lengths as one batch: EOS-padded on the left, with a mask
// when the lengths differ. Every prompt needs at least one token.
ForwardInput LeftPadded(const std::vector<std::vector<int64_t>>& prompts, int64_t pad_id);

// Generates up to options.max_new_tokens tokens after each row of `prompt`
// (tokens [batch, pos] and an optional attention mask; masked positions are
// dropped and the rows re-padded on the left). INVALID_ARGUMENT for bad
// options, a bad prompt, or prompt + max_new_tokens over the model's n_ctx;
// CANCELLED when is_cancelled says so. No exception leaves it.
absl::StatusOr<GenerateOutput> Generate(const HookedTransformer& model, const ForwardInput& prompt,
                                        const GenerateOptions& options);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_GENERATE_H_
