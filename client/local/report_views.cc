#include "client/local/report_views.h"

#include <torch/torch.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace lensgrid {

absl::StatusOr<std::vector<AttentionView>> TopHeadViews(const HookedTransformer& model,
                                                        const Tokenizer* tokenizer,
                                                        const Prompt& prompt,
                                                        const SearchValues& result, int max_heads) {
  std::vector<std::pair<int, int>> heads = HeadsToShow(result, model.cfg().n_heads, max_heads);
  std::vector<AttentionView> views;
  if (heads.empty() || prompt.tokens.empty()) return views;
  const size_t n = std::min(prompt.tokens.size(), kMaxAttentionTokens);
  std::vector<int64_t> ids(prompt.tokens.begin(), prompt.tokens.begin() + n);
  std::vector<std::string> tokens;
  if (tokenizer != nullptr) {
    LG_ASSIGN_OR_RETURN(tokens, tokenizer->ToStrTokens(ids));
  } else {
    for (int64_t id : ids) tokens.push_back(absl::StrCat("#", id));
  }
  ForwardInput in;
  in.tokens = torch::tensor(ids, torch::kInt64).unsqueeze(0);
  CacheOptions cache_opts;
  for (auto [layer, head] : heads) cache_opts.names.push_back(absl::StrCat("pattern", layer));
  cache_opts.remove_batch_dim = true;
  ActivationCache cache;
  ForwardOptions run;
  run.return_type = ForwardReturn::kNone;
  LG_RETURN_IF_ERROR(model.RunWithCache(in, run, cache_opts, &cache).status());
  for (auto [layer, head] : heads) {
    const std::string hook = absl::StrCat("blocks.", layer, ".attn.hook_pattern");
    LG_ASSIGN_OR_RETURN(at::Tensor pattern, cache.Get(hook));
    at::Tensor p = pattern[head].to(torch::kFloat32).contiguous();  // [q, k]
    AttentionView v{hook, layer, head, tokens, {}};
    v.pattern.assign(p.data_ptr<float>(), p.data_ptr<float>() + p.numel());
    views.push_back(std::move(v));
  }
  return views;
}

absl::StatusOr<std::vector<AttentionView>> ViewsFromModelDir(const SearchContext& ctx,
                                                             const SearchValues& result,
                                                             const Prompt* prompt, int max_heads) {
  LoadOptions load;
  if (!ctx.processed.value_or(true)) load.processing = ProcessingOptions::None();
  LG_ASSIGN_OR_RETURN(auto model, HookedTransformer::FromPretrained(ctx.model_dir, load));
  if (model->load_report().weights_sha256 != ctx.weights_sha256) {
    return absl::FailedPreconditionError(
        absl::StrCat(ctx.model_dir, " holds other weights than the job's"));
  }
  auto tokenizer = LoadTokenizerForModel(ctx.model_dir);
  const Tokenizer* tok = tokenizer.ok() ? tokenizer->get() : nullptr;
  if (prompt != nullptr) return TopHeadViews(*model, tok, *prompt, result, max_heads);
  LG_ASSIGN_OR_RETURN(Dataset dataset,
                      MakeDataset({ctx.dataset, 1, ctx.seed, ctx.seq_len}, model->cfg(), tok));
  if (dataset.prompts.empty()) return std::vector<AttentionView>();
  return TopHeadViews(*model, tok, dataset.prompts.front(), result, max_heads);
}

}  // namespace lensgrid
