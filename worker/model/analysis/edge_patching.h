// Forwards in which chosen edges of the circuit graph (common/circuit_graph.h) carry the
// corrupted prompt's values: what ACDC evaluates, what a circuit's faithfulness is measured
// with, and what path patching is a special case of.
//
// A receiver's input is the sum of what its senders wrote (plus biases, the same in every run).
// With edges E corrupted, each receiver reads, for each sender s with s -> receiver in E, the
// value s had in the corrupted run instead of the value s has in this run:
//   input'(r) = input(r) - sum over s -> r in E of (value_this_run(s) - value_corrupted(s)).
// Heads' q, k and v inputs and the MLPs' inputs are recomputed from their own LayerNorm and
// projection (so any loaded model works, no split-input hook points needed); the final residual
// stream is shifted. Corrupting no edge is the plain run; corrupting every edge is the corrupted
// run.
//
//   LG_ASSIGN_OR_RETURN(EdgePatcher patcher, EdgePatcher::Create(model, graph));
//   LG_ASSIGN_OR_RETURN(RunOutput out,
//                       patcher.Run(clean_input, opts, corrupted_senders, corrupted_edges));
#ifndef LENSGRID_WORKER_MODEL_ANALYSIS_EDGE_PATCHING_H_
#define LENSGRID_WORKER_MODEL_ANALYSIS_EDGE_PATCHING_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/circuit_graph.h"
#include "worker/model/analysis/dataset.h"
#include "worker/model/analysis/prompt_batch.h"
#include "worker/model/analysis/search.h"
#include "worker/model/hooked_transformer.h"

namespace lensgrid {

// Every sender's value [batch, pos, n_nodes - 1, d_model] (float64, graph node order) from a
// cache holding SenderHooks(cfg): the embeddings, each head's z @ W_O, each MLP's output.
std::vector<std::string> SenderHooks(const HookedTransformerConfig& cfg);
absl::StatusOr<at::Tensor> SenderValues(const HookedTransformer& model,
                                        const ActivationCache& cache);

class EdgePatcher {
 public:
  // FAILED_PRECONDITION when `graph` is not the model's.
  static absl::StatusOr<EdgePatcher> Create(const HookedTransformer& model,
                                            const CircuitGraph& graph);

  // `input` run with the edges e where corrupted[e] is true reading `corrupted_senders`
  // (SenderValues of the corrupted run of the same [batch, pos]). INVALID_ARGUMENT for a mask
  // that is not one bool per edge or sender values of another shape.
  absl::StatusOr<RunOutput> Run(const ForwardInput& input, const ForwardOptions& options,
                                const at::Tensor& corrupted_senders,
                                const std::vector<bool>& corrupted) const;

  struct Weights;  // internal
  EdgePatcher();
  ~EdgePatcher();
  EdgePatcher(EdgePatcher&&) noexcept;
  EdgePatcher& operator=(EdgePatcher&&) noexcept;

 private:
  const HookedTransformer* model_ = nullptr;
  const CircuitGraph* graph_ = nullptr;
  std::shared_ptr<const Weights> weights_;
};

// One batch of prompts with what every edge-patched run of it needs: the clean and corrupted
// runs' metrics and the corrupted run's sender values (the one preparation ACDC, path patching
// and faithfulness share). Prompts [begin, end) of `dataset`, each with a corrupted version of
// its own length (INVALID_ARGUMENT naming it otherwise).
struct CorruptionBatch {
  PromptBatch prompts;           // targets.clean_log_probs set (the KL metric's reference)
  ForwardOptions options;        // logit positions the metric reads
  at::Tensor corrupted_senders;  // SenderValues of the corrupted run
  at::Tensor clean_senders;      // SenderValues of the clean run (with clean_senders)
  at::Tensor clean_metric;       // [n]
  at::Tensor corrupted_metric;   // [n]
};
absl::StatusOr<CorruptionBatch> MakeCorruptionBatch(const HookedTransformer& model,
                                                    const Dataset& dataset, int64_t begin,
                                                    int64_t end, MetricKind metric,
                                                    bool clean_senders = false);
// Prompts per batch so that batch x the dataset's longest prompt <= max_batch_tokens (>= 1).
int64_t PromptsPerBatch(const Dataset& dataset, int64_t max_batch_tokens);

struct Faithfulness {
  double circuit = 0;    // mean metric with every edge outside the circuit corrupted
  double full = 0;       // mean metric of the clean run (the full model)
  double corrupted = 0;  // mean metric of the corrupted run (every edge corrupted)
  double fraction() const { return full == 0 ? 0 : circuit / full; }
  // (circuit - corrupted) / (full - corrupted): 1 recovers the whole model's effect.
  double normalized() const {
    return full == corrupted ? 0 : (circuit - corrupted) / (full - corrupted);
  }
};

// The faithfulness of the circuit `kept` (one bool per edge) on `dataset`'s prompts, with their
// corrupted versions as the corruption.
absl::StatusOr<Faithfulness> CircuitFaithfulness(const HookedTransformer& model,
                                                 const Dataset& dataset, const CircuitGraph& graph,
                                                 const std::vector<bool>& kept, MetricKind metric,
                                                 int64_t max_batch_tokens = 4096);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_ANALYSIS_EDGE_PATCHING_H_
