// ACDC (Conmy et al., "Towards Automated Circuit Discovery"): prune the circuit graph from the
// logits back, keeping an edge only when corrupting it moves the circuit's output by at least
// `threshold`. In this process, over one dataset; a distributed job shards each iteration's
// evaluations (issue 17, to come).
//
//   AcdcOptions o;
//   o.threshold = 0.05;                 // in units of the distance (KL by default)
//   LG_ASSIGN_OR_RETURN(AcdcResult r, Acdc(*model, dataset, CircuitGraphOf(model->cfg()), o));
//   r.kept[e]                           // edge e is in the circuit
//   r.score[e]                          // the distance increase e was judged by
//
// The distance of a circuit is KL(full model || circuit) at each prompt's last position, averaged
// over prompts (MetricKind::kKl), or for a task metric |mean metric(circuit) - mean
// metric(full model)|. An iteration is one receiving input (the logits, then each node's inputs
// from the last layer back): each of its incoming edges still in the circuit is tried in turn,
// from its latest sender back, and removed when the distance grows by less than the threshold;
// removals stand for the rest of the run, as in the paper.
#ifndef LENSGRID_WORKER_MODEL_ANALYSIS_ACDC_H_
#define LENSGRID_WORKER_MODEL_ANALYSIS_ACDC_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/circuit_graph.h"
#include "worker/model/analysis/dataset.h"
#include "worker/model/analysis/metrics.h"
#include "worker/model/hooked_transformer.h"

namespace lensgrid {

struct AcdcProgress {
  int iteration = 0;       // receiving inputs done
  int iterations = 0;      // receiving inputs in all
  std::string receiver;    // the one just done, e.g. "L1H1.k"
  int64_t edges_left = 0;  // edges still in the circuit
  int64_t evaluations = 0;
  double distance = 0;  // of the current circuit
};

struct AcdcOptions {
  double threshold = 0.0;                                 // >= 0
  MetricKind metric = MetricKind::kKl;                    // kKl, or a task metric
  int64_t max_batch_tokens = 4096;                        // bound on batch x pos of one forward
  std::function<bool()> is_cancelled;                     // polled between evaluations
  std::function<void(const AcdcProgress&)> on_iteration;  // after each receiving input
};

struct AcdcResult {
  std::vector<bool> kept;  // one per edge of the graph
  // One per edge: how much the distance grew when that edge was tried (what was compared with
  // the threshold: kept when >= threshold), measured with the edges removed before it removed;
  // NaN for an edge never tried (none, once a run completes: every edge is tried once). A
  // score per edge for ranking, e.g. a ROC curve without a sweep of thresholds.
  std::vector<double> score;
  double distance = 0;  // of the final circuit
  int64_t evaluations = 0;
  int64_t edges_kept = 0;
};

// INVALID_ARGUMENT for a negative or NaN threshold, prompts without a corrupted version of their
// own length or an empty dataset; FAILED_PRECONDITION when `graph` is not the model's; CANCELLED.
absl::StatusOr<AcdcResult> Acdc(const HookedTransformer& model, const Dataset& dataset,
                                const CircuitGraph& graph, const AcdcOptions& options);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_ANALYSIS_ACDC_H_
