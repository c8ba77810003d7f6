#include "worker/model/analysis/prompt_batch.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "worker/model/token_batch.h"

namespace lensgrid {

absl::StatusOr<PromptBatch> MakePromptBatch(const Dataset& dataset, int64_t begin, int64_t end,
                                            bool need_corrupted, int64_t d_vocab, int64_t pad_id) {
  PromptBatch b;
  b.pos = dataset.max_length();
  std::vector<std::vector<int64_t>> clean, corrupted;
  for (int64_t i = begin; i < end; ++i) {
    const Prompt& p = dataset.prompts[i];
    if (need_corrupted && p.corrupted_tokens.size() != p.tokens.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          p.origin, ": this method needs a corrupted prompt with the same number of tokens (",
          p.tokens.size(), "), got ",
          p.corrupted_tokens.empty() ? std::string("none")
                                     : absl::StrCat(p.corrupted_tokens.size())));
    }
    b.prompts.push_back(&p);
    clean.push_back(p.tokens);
    if (need_corrupted) corrupted.push_back(p.corrupted_tokens);
  }
  BatchOptions opts;
  opts.padding = Padding::kLeft;
  opts.pad_token_id = pad_id;
  opts.length = b.pos;
  b.clean = MakeTokenBatch(clean, opts);
  if (need_corrupted) b.corrupted = MakeTokenBatch(corrupted, opts);
  // Searches always carry a mask (all ones when nothing is padded).
  for (ForwardInput* in : {&b.clean, &b.corrupted}) {
    if (in->tokens.defined() && !in->attention_mask.defined()) {
      in->attention_mask = torch::ones_like(in->tokens);
    }
  }
  b.targets = MakeMetricTargets(b.prompts, b.pos, d_vocab, b.clean.tokens);
  return b;
}

}  // namespace lensgrid
