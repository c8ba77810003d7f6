#include "worker/model/analysis/attribution.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace lensgrid {
namespace {

// TransformerLens's detection patterns for one prompt's real tokens [len]:
// each [len, len] (query, key).
std::array<torch::Tensor, 3> DetectionPatterns(const torch::Tensor& tokens) {
  const int64_t len = tokens.size(0);
  torch::Tensor previous = torch::zeros({len, len});
  if (len > 1) previous.diagonal(-1).fill_(1);
  torch::Tensor same = tokens.unsqueeze(1).eq(tokens.unsqueeze(0)).to(torch::kFloat32);
  torch::Tensor duplicate = torch::tril(same, -1);
  // Induction: attend to the token right after an earlier copy of the current one.
  torch::Tensor induction = torch::roll(duplicate, 1, 1);
  induction.select(1, 0).zero_();
  induction = torch::tril(induction);
  return {previous, duplicate, induction};
}

}  // namespace

absl::Status DetectHeads(const HookedTransformer& model, const PromptBatch& batch,
                         MetricKind metric, SearchResult* result) {
  const auto& cfg = model.cfg();
  const int64_t n = static_cast<int64_t>(batch.prompts.size());
  CacheOptions opts;
  opts.regexes = {"hook_pattern$"};
  ActivationCache cache;
  ForwardOptions run;
  if (!MetricNeedsAllPositions(metric)) {
    run.logit_positions = torch::full({n}, batch.pos - 1, torch::kInt64);
  }
  LG_ASSIGN_OR_RETURN(RunOutput out, model.RunWithCache(batch.clean, run, opts, &cache));
  MetricTargets targets = batch.targets;
  targets.clean_log_probs = torch::log_softmax(out.logits.select(1, -1), -1);
  result->baseline = ComputeMetric(metric, out.logits, targets);  // the clean metric
  for (int k = 0; k < 3; ++k) {
    result->outputs[k].per_prompt = torch::zeros({n, cfg.n_layers * cfg.n_heads});
  }
  for (int64_t i = 0; i < n; ++i) {
    const int64_t len = static_cast<int64_t>(batch.prompts[i]->tokens.size());
    const int64_t off = batch.pos - len;
    auto patterns = DetectionPatterns(batch.clean.tokens[i].slice(0, off));
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
      // [head, len, len]: this prompt's real rows and columns.
      torch::Tensor p = cache.Get("pattern", l)->select(0, i).slice(1, off).slice(2, off).cpu();
      torch::Tensor total = p.sum({1, 2});
      for (int k = 0; k < 3; ++k) {
        torch::Tensor score = (p * patterns[k]).sum({1, 2}) / total.clamp_min(1e-12);
        result->outputs[k].per_prompt[i].slice(0, l * cfg.n_heads, (l + 1) * cfg.n_heads) = score;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status DirectLogitAttribution(const HookedTransformer& model, const PromptBatch& batch,
                                    MetricKind metric, SearchResult* result) {
  if (metric != MetricKind::kLogitDiff) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dla attributes the logit difference: use --metric logit-diff, not ", MetricName(metric)));
  }
  const auto& cfg = model.cfg();
  const int64_t n = static_cast<int64_t>(batch.prompts.size()), L = cfg.n_layers, H = cfg.n_heads;
  CacheOptions opts;
  opts.regexes = {"attn.hook_z$", "hook_attn_out$", "^ln_final.hook_scale$"};
  if (!cfg.attn_only) opts.regexes.push_back("hook_mlp_out$");  // none to match otherwise
  opts.positions = PositionSlice{-1, std::nullopt};             // final position only
  ActivationCache cache;
  LG_ASSIGN_OR_RETURN(RunOutput out, model.RunWithCache(batch.clean, {}, opts, &cache));
  // Direction in the residual stream: [n, d_model].
  torch::Tensor diff = (batch.targets.answers - batch.targets.wrongs).to(model.W_U().device());
  torch::Tensor direction = torch::matmul(diff, model.W_U().t());
  LayerNormWeights ln = model.ln_final_weights();
  if (!ln.folded()) direction = direction * ln.w.to(direction.device());
  torch::Tensor scale = cache.Get("ln_final.hook_scale").value().squeeze(1);  // [n, 1]
  // A component's contribution: its centered output / the final scale . direction.
  auto contribution = [&](const torch::Tensor& x) {  // x: [n, ..., d_model]
    torch::Tensor centered = x - x.mean(-1, true);
    std::vector<int64_t> shape(x.dim(), 1);
    shape[0] = n;
    torch::Tensor dir = direction.view({n, 1, cfg.d_model});
    if (x.dim() == 2) dir = direction;
    return (centered / scale.view(shape) * dir).sum(-1);
  };
  torch::Tensor heads = torch::zeros({n, L, H});
  torch::Tensor layers = torch::zeros({n, cfg.attn_only ? 1 : 2, L});
  for (int64_t l = 0; l < L; ++l) {
    torch::Tensor z = cache.Get("z", l)->select(1, 0);  // [n, head, d_head]
    torch::Tensor per_head = torch::einsum("nhe,hed->nhd", {z, model.W_O(l)});
    heads.select(1, l) = contribution(per_head).cpu();
    layers.select(1, 0).select(1, l) =
        contribution(cache.Get(absl::StrCat("blocks.", l, ".hook_attn_out")).value().select(1, 0))
            .cpu();
    if (!cfg.attn_only) {
      layers.select(1, 1).select(1, l) =
          contribution(cache.Get(absl::StrCat("blocks.", l, ".hook_mlp_out")).value().select(1, 0))
              .cpu();
    }
  }
  result->outputs[0].per_prompt = heads.view({n, L * H});
  result->outputs[1].per_prompt = layers.view({n, -1});
  // The baseline is the logit difference itself, for comparison.
  result->baseline = ComputeMetric(MetricKind::kLogitDiff, out.logits, batch.targets);
  return absl::OkStatus();
}

}  // namespace lensgrid
