#include "worker/model/analysis/acdc.h"

#include <torch/torch.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/model/analysis/edge_patching.h"
#include "worker/model/analysis/prompt_batch.h"

namespace lensgrid {
namespace {

class Evaluator {
 public:
  Evaluator(const EdgePatcher& patcher, MetricKind metric, std::vector<CorruptionBatch> batches,
            int64_t n_prompts)
      : patcher_(patcher), metric_(metric), batches_(std::move(batches)), n_prompts_(n_prompts) {}

  // The distance of the circuit whose corrupted edges are `corrupted`.
  absl::StatusOr<double> Distance(const std::vector<bool>& corrupted) {
    ++evaluations_;
    double sum = 0, full = 0;
    for (CorruptionBatch& b : batches_) {
      LG_ASSIGN_OR_RETURN(RunOutput out,
                          patcher_.Run(b.prompts.clean, b.options, b.corrupted_senders, corrupted));
      if (metric_ == MetricKind::kKl) {
        sum += ComputeMetric(MetricKind::kKl, out.logits, b.prompts.targets).sum().item<double>();
      } else {
        sum += ComputeMetric(metric_, out.logits, b.prompts.targets).sum().item<double>();
        full += b.clean_metric.sum().item<double>();
      }
    }
    if (metric_ == MetricKind::kKl) return sum / n_prompts_;
    return std::abs(sum - full) / n_prompts_;
  }
  int64_t evaluations() const { return evaluations_; }

 private:
  const EdgePatcher& patcher_;
  MetricKind metric_;
  std::vector<CorruptionBatch> batches_;
  int64_t n_prompts_;
  int64_t evaluations_ = 0;
};

}  // namespace

absl::StatusOr<AcdcResult> Acdc(const HookedTransformer& model, const Dataset& dataset,
                                const CircuitGraph& graph, const AcdcOptions& options) {
  if (!(options.threshold >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the threshold must be >= 0, got ", options.threshold));
  }
  const int64_t n_prompts = static_cast<int64_t>(dataset.prompts.size());
  if (n_prompts == 0) return absl::InvalidArgumentError("the dataset has no prompts");
  LG_ASSIGN_OR_RETURN(EdgePatcher patcher, EdgePatcher::Create(model, graph));
  const int64_t per_batch = PromptsPerBatch(dataset, options.max_batch_tokens);
  std::vector<CorruptionBatch> batches;
  for (int64_t b = 0; b < n_prompts; b += per_batch) {
    LG_ASSIGN_OR_RETURN(
        CorruptionBatch batch,
        MakeCorruptionBatch(model, dataset, b, std::min(b + per_batch, n_prompts), options.metric));
    batch.options.is_cancelled = options.is_cancelled;
    batches.push_back(std::move(batch));
  }
  Evaluator evaluator(patcher, options.metric, std::move(batches), n_prompts);

  // Receiving inputs from the logits back: the graph lists edges by receiver in forward order,
  // each receiver's consecutively, so walk the groups backwards.
  const std::vector<CircuitEdge>& edges = graph.edges();
  const std::vector<std::pair<size_t, size_t>> groups = graph.ReceivingInputs();
  std::vector<bool> corrupted(edges.size(), false);
  std::vector<double> score(edges.size(), std::nan(""));
  LG_ASSIGN_OR_RETURN(double distance, evaluator.Distance(corrupted));
  int64_t left = static_cast<int64_t>(edges.size());
  AcdcProgress progress;
  progress.iterations = static_cast<int>(groups.size());
  for (auto g = groups.rbegin(); g != groups.rend(); ++g) {
    for (size_t e = g->second; e-- > g->first;) {
      if (options.is_cancelled && options.is_cancelled()) {
        return absl::CancelledError("ACDC cancelled");
      }
      corrupted[e] = true;
      LG_ASSIGN_OR_RETURN(double without, evaluator.Distance(corrupted));
      score[e] = without - distance;
      if (score[e] < options.threshold) {
        distance = without;
        --left;
      } else {
        corrupted[e] = false;
      }
    }
    ++progress.iteration;
    progress.receiver = graph.ReceiverName(edges[g->first].receiver, edges[g->first].channel);
    progress.edges_left = left;
    progress.evaluations = evaluator.evaluations();
    progress.distance = distance;
    if (options.on_iteration) options.on_iteration(progress);
  }
  AcdcResult result;
  result.kept.resize(edges.size());
  for (size_t e = 0; e < edges.size(); ++e) result.kept[e] = !corrupted[e];
  result.score = std::move(score);
  result.distance = distance;
  result.evaluations = evaluator.evaluations();
  result.edges_kept = left;
  return result;
}

}  // namespace lensgrid
