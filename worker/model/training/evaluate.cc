#include "worker/model/training/evaluate.h"

#include <torch/torch.h>

#include <iomanip>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/model/analysis/search.h"

namespace lensgrid {
namespace {

HeadRef ArgMax(const torch::Tensor& scores) {  // [layer, head]
  HeadRef ref;
  const int64_t flat = scores.flatten().argmax().item<int64_t>();
  ref.layer = flat / scores.size(1);
  ref.head = flat % scores.size(1);
  ref.score = scores[ref.layer][ref.head].item<double>();
  return ref;
}

}  // namespace

std::string HeadRef::name() const { return absl::StrCat("L", layer, "H", head); }

absl::StatusOr<IoiScore> ScoreIoi(const HookedTransformer& model,
                                  const std::vector<Prompt>& prompts) {
  IoiScore score;
  double correct = 0, diff_sum = 0;
  for (const Prompt& p : prompts) {
    if (p.answers.empty() || p.wrongs.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(p.origin, ": no answer or wrong token"));
    }
    ForwardInput in;
    in.tokens = torch::tensor(p.tokens, torch::kInt64).view({1, -1});
    ForwardOptions run;
    run.logit_positions = torch::full({1}, in.tokens.size(1) - 1, torch::kInt64);
    LG_ASSIGN_OR_RETURN(RunOutput out, model.Run(in, run));
    torch::Tensor logits = out.logits.view({-1}).cpu();
    const double diff = logits[p.answers[0]].item<double>() - logits[p.wrongs[0]].item<double>();
    diff_sum += diff;
    correct += diff > 0 ? 1 : 0;
    ++score.n;
  }
  if (score.n > 0) {
    score.accuracy = correct / score.n;
    score.mean_logit_diff = diff_sum / score.n;
  }
  return score;
}

absl::StatusOr<ModelFacts> MeasureModelFacts(const HookedTransformer& model,
                                             const FactsOptions& options) {
  const HookedTransformerConfig& cfg = model.cfg();
  ModelFacts facts;
  LG_ASSIGN_OR_RETURN(
      Dataset ds,
      MakeDataset({"induction", options.n_prompts, options.seed, options.seq_len}, cfg, nullptr));
  SearchSpec detect{Method::kDetectHeads, MetricKind::kLoss, AblationKind::kZero};
  LG_ASSIGN_OR_RETURN(SearchResult detected, RunSearch(model, ds, detect));
  facts.previous_token = detected.outputs[0].mean;
  facts.duplicate_token = detected.outputs[1].mean;
  facts.induction = detected.outputs[2].mean;

  SearchSpec ablate{Method::kAblateHeads, MetricKind::kLoss, AblationKind::kZero};
  LG_ASSIGN_OR_RETURN(SearchResult ablated, RunSearch(model, ds, ablate));
  facts.ablation_delta = ablated.outputs[0].mean;
  facts.clean_loss = ablated.baseline.mean().item<double>();

  // BOS + x + x: the dataset's prompts with their answers appended.
  const int64_t n = options.seq_len;
  std::vector<int64_t> ids;
  for (const Prompt& p : ds.prompts) {
    ids.insert(ids.end(), p.tokens.begin(), p.tokens.end());
    ids.push_back(p.answers[0]);
  }
  ForwardInput in;
  in.tokens = torch::tensor(ids, torch::kInt64).view({options.n_prompts, 2 * n + 1});
  CacheOptions cache_opts;
  cache_opts.regexes = {"hook_pattern$"};
  ActivationCache cache;
  ForwardOptions run;
  run.return_type = ForwardReturn::kNone;
  LG_ASSIGN_OR_RETURN(RunOutput unused, model.RunWithCache(in, run, cache_opts, &cache));
  (void)unused;
  facts.induction_stripe = torch::zeros({cfg.n_layers, cfg.n_heads});
  facts.previous_stripe = torch::zeros({cfg.n_layers, cfg.n_heads});
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    torch::Tensor pattern = cache.Get("pattern", l)->cpu();  // [batch, head, q, k]
    // Query q in the second half (q >= n + 1) attends to key q - n + 1.
    torch::Tensor stripe = pattern.diagonal(-(n - 1), 2, 3);  // [batch, head, 2n + 2 - n]
    facts.induction_stripe[l] = stripe.slice(2, 2).mean(std::vector<int64_t>{0, 2});
    facts.previous_stripe[l] = pattern.diagonal(-1, 2, 3).mean(std::vector<int64_t>{0, 2});
  }
  facts.top_induction = ArgMax(facts.induction_stripe);
  facts.top_previous = ArgMax(facts.previous_stripe);
  facts.top_induction_ablation_delta =
      facts.ablation_delta[facts.top_induction.layer][facts.top_induction.head].item<double>();
  return facts;
}

std::string HeadTableMarkdown(const at::Tensor& scores) {
  std::ostringstream out;
  out << "| layer |";
  for (int64_t h = 0; h < scores.size(1); ++h) out << " H" << h << " |";
  out << "\n|---|";
  for (int64_t h = 0; h < scores.size(1); ++h) out << "---|";
  out << "\n" << std::fixed << std::setprecision(3);
  for (int64_t l = 0; l < scores.size(0); ++l) {
    out << "| L" << l << " |";
    for (int64_t h = 0; h < scores.size(1); ++h) out << " " << scores[l][h].item<double>() << " |";
    out << "\n";
  }
  return out.str();
}

}  // namespace lensgrid
