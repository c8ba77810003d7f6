#include "worker/model/analysis/prompt_batch.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"

namespace lensgrid {
namespace {

ModelInput LeftPad(const std::vector<std::vector<int64_t>>& rows, int64_t pos, int64_t pad_id) {
  const int64_t n = static_cast<int64_t>(rows.size());
  torch::Tensor tokens = torch::full({n, pos}, pad_id, torch::kInt64);
  torch::Tensor mask = torch::zeros({n, pos}, torch::kInt64);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t len = static_cast<int64_t>(rows[i].size());
    tokens[i].slice(0, pos - len) = torch::tensor(rows[i], torch::kInt64);
    mask[i].slice(0, pos - len) = 1;
  }
  ModelInput in;
  in.tokens = tokens;
  in.attention_mask = mask;
  return in;
}

}  // namespace

absl::StatusOr<PromptBatch> MakePromptBatch(const Dataset& dataset, int64_t begin, int64_t end,
                                            bool need_corrupted, int64_t d_vocab,
                                            int64_t pad_id) {
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
  b.clean = LeftPad(clean, b.pos, pad_id);
  if (need_corrupted) b.corrupted = LeftPad(corrupted, b.pos, pad_id);
  b.targets = MakeMetricTargets(b.prompts, b.pos, d_vocab, b.clean.tokens, b.clean.attention_mask);
  return b;
}

}  // namespace lensgrid
