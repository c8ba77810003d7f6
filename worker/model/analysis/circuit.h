// Edge attribution patching (EAP, Syed et al.; EAP-IG, Hanna et al.): a score for every edge
// of the circuit graph (common/circuit_graph.h) from forwards and backwards, per prompt, so a
// job shards by prompt ranges and merges exactly (sums, then means, of per-prompt scores).
//
//   LG_ASSIGN_OR_RETURN(auto model, HookedTransformer::FromPretrained(dir));
//   CircuitGraph graph = CircuitGraphOf(model->cfg());
//   LG_ASSIGN_OR_RETURN(EdgeScores s, EdgeAttribution(*model, dataset, graph, {}));
//   s.per_prompt  // [n_prompts, n_edges]
//
// The score of an edge sender -> receiver is the first-order change of the metric when only
// that edge carries the corrupted prompt's value: (sender_corrupted - sender_clean) .
// d metric / d (receiver's input), summed over positions; with ig_steps = k, the gradient is
// the mean over k points between the clean and the corrupted input embeddings (midpoints of k
// equal steps), as EAP-IG. A sender's value is the embeddings (token + position), a head's
// output (z @ W_O of that head) or an MLP's output; a receiver's input is a head's query, key or
// value input, an MLP's input or the final residual stream. The gradients at a head's q, k, v
// and an MLP's pre-activation are taken back through the projection and the LayerNorm in front
// (exactly), so any loaded model works: no split-input hook points are needed.
#ifndef LENSGRID_WORKER_MODEL_ANALYSIS_CIRCUIT_H_
#define LENSGRID_WORKER_MODEL_ANALYSIS_CIRCUIT_H_

#include <functional>

#include "absl/status/statusor.h"
#include "common/circuit_graph.h"
#include "worker/model/analysis/dataset.h"
#include "worker/model/analysis/search.h"
#include "worker/model/hooked_transformer.h"

namespace lensgrid {

CircuitGraph CircuitGraphOf(const HookedTransformerConfig& cfg);

struct EdgeAttributionOptions {
  MetricKind metric = MetricKind::kLogitDiff;
  int ig_steps = 0;  // 0: EAP; k > 0: EAP-IG with k steps
  // A shard: prompts [prompt_begin, prompt_end); -1 = to the end.
  int64_t prompt_begin = 0, prompt_end = -1;
  int64_t max_batch_tokens = 4096;  // bound on batch x pos of one forward
  std::function<bool()> is_cancelled;
};

struct EdgeScores {
  at::Tensor per_prompt;                      // float32 [n_prompts of the shard, n_edges]
  at::Tensor clean_metric, corrupted_metric;  // float32 [n_prompts of the shard]
  int64_t prompt_begin = 0;
  SearchCounts counts;
};

// FAILED_PRECONDITION when `graph` is not the model's; INVALID_ARGUMENT for prompts without a
// corrupted version of their own length, a bad range or ig_steps < 0; CANCELLED as asked.
absl::StatusOr<EdgeScores> EdgeAttribution(const HookedTransformer& model, const Dataset& dataset,
                                           const CircuitGraph& graph,
                                           const EdgeAttributionOptions& options);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_ANALYSIS_CIRCUIT_H_
