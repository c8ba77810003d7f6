// Per-prompt metrics of a run, read at each prompt's final position.
//
// Batches are left-padded (prompts of unequal length end at the same index),
// so the final position of every row is the last one.
#ifndef LENSGRID_WORKER_MODEL_ANALYSIS_METRICS_H_
#define LENSGRID_WORKER_MODEL_ANALYSIS_METRICS_H_

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/search_methods.h"
#include "worker/model/analysis/dataset.h"

namespace lensgrid {

// MetricKind, its names and MetricNeedsAllPositions: common/search_methods.h.

// What a metric needs to know about the prompts of a batch (rows repeat the
// prompts block by block: row r is prompt r % n).
struct MetricTargets {
  at::Tensor answers;          // float [n, d_vocab]: 1/|answers| on each answer id (a mean)
  at::Tensor wrongs;           // float [n, d_vocab]
  at::Tensor tokens;           // int64 [n, pos], left-padded
  at::Tensor loss_mask;        // float [n, pos - 1]: which next-token predictions the loss scores
  at::Tensor clean_log_probs;  // float [n, d_vocab] at the final position (for KL)
};

// Builds targets for `prompts` left-padded to `pos` tokens.
MetricTargets MakeMetricTargets(const std::vector<const Prompt*>& prompts, int64_t pos,
                                int64_t d_vocab, const at::Tensor& tokens);

// logits: [rows, 1, d_vocab] (final position only) or [rows, pos, d_vocab].
// Returns [rows] with rows a multiple of n.
at::Tensor ComputeMetric(MetricKind metric, const at::Tensor& logits, const MetricTargets& t);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_ANALYSIS_METRICS_H_
