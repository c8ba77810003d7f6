#include "worker/model/analysis/metrics.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"

namespace lensgrid {
namespace {

// Repeats a per-prompt tensor [n, ...] to [rows, ...].
torch::Tensor Tile(const torch::Tensor& t, int64_t rows) {
  int64_t k = rows / t.size(0);
  if (k == 1) return t;
  std::vector<int64_t> reps(t.dim(), 1);
  reps[0] = k;
  return t.repeat(reps);
}

}  // namespace

MetricTargets MakeMetricTargets(const std::vector<const Prompt*>& prompts, int64_t pos,
                                int64_t d_vocab, const at::Tensor& tokens) {
  const int64_t n = static_cast<int64_t>(prompts.size());
  MetricTargets t;
  t.answers = torch::zeros({n, d_vocab});
  t.wrongs = torch::zeros({n, d_vocab});
  t.loss_mask = torch::zeros({n, std::max<int64_t>(pos - 1, 0)});
  for (int64_t i = 0; i < n; ++i) {
    const Prompt& p = *prompts[i];
    for (int64_t a : p.answers) t.answers[i][a] += 1.0 / p.answers.size();
    for (int64_t w : p.wrongs) t.wrongs[i][w] += 1.0 / p.wrongs.size();
    // Prediction j (logits at j) scores token j + 1; the prompt starts at pos - len.
    int64_t offset = pos - static_cast<int64_t>(p.tokens.size());
    for (int64_t j = offset + std::max<int64_t>(p.loss_start, 1) - 1; j < pos - 1; ++j) {
      t.loss_mask[i][j] = 1.0;
    }
  }
  t.tokens = tokens;
  return t;
}

torch::Tensor ComputeMetric(MetricKind metric, const torch::Tensor& logits,
                            const MetricTargets& t) {
  const int64_t rows = logits.size(0);
  torch::Tensor final_logits = logits.select(1, logits.size(1) - 1).to(torch::kFloat64);
  switch (metric) {
    case MetricKind::kLogitDiff: {
      torch::Tensor a = (final_logits * Tile(t.answers, rows)).sum(-1);
      torch::Tensor w = (final_logits * Tile(t.wrongs, rows)).sum(-1);
      return (a - w).to(torch::kFloat32);
    }
    case MetricKind::kProb:
    case MetricKind::kProbDiff: {
      torch::Tensor probs = torch::softmax(final_logits, -1);
      // prob: mean probability of the answer(s); prob-diff: total answer-set
      // probability minus total wrong-set probability.
      torch::Tensor ans = Tile(t.answers, rows), wrong = Tile(t.wrongs, rows);
      if (metric == MetricKind::kProb) return (probs * ans).sum(-1).to(torch::kFloat32);
      torch::Tensor ans_sets = (ans > 0).to(torch::kFloat64),
                    wrong_sets = (wrong > 0).to(torch::kFloat64);
      return ((probs * ans_sets).sum(-1) - (probs * wrong_sets).sum(-1)).to(torch::kFloat32);
    }
    case MetricKind::kLoss: {
      torch::Tensor lp = torch::log_softmax(logits.slice(1, 0, -1).to(torch::kFloat64), -1);
      torch::Tensor targets = Tile(t.tokens, rows).slice(1, 1).unsqueeze(-1);
      torch::Tensor nll = -lp.gather(-1, targets).squeeze(-1);
      torch::Tensor m = Tile(t.loss_mask, rows).to(torch::kFloat64);
      return ((nll * m).sum(-1) / m.sum(-1).clamp_min(1)).to(torch::kFloat32);
    }
    case MetricKind::kLogit:
      return (final_logits * Tile(t.answers, rows)).sum(-1).to(torch::kFloat32);
    case MetricKind::kLogProb: {
      torch::Tensor lp = torch::log_softmax(final_logits, -1);
      return (lp * Tile(t.answers, rows)).sum(-1).to(torch::kFloat32);
    }
    case MetricKind::kKl: {
      torch::Tensor clean = Tile(t.clean_log_probs, rows).to(torch::kFloat64);
      torch::Tensor lp = torch::log_softmax(final_logits, -1);
      return (clean.exp() * (clean - lp)).sum(-1).to(torch::kFloat32);
    }
  }
  return torch::Tensor();
}

}  // namespace lensgrid
