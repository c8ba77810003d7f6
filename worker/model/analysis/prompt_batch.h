// A dataset's prompts as left-padded tensors (internal to analysis/).
//
// Every batch of one dataset is padded to the dataset's longest prompt, so
// position p means the same thing in every shard, and every prompt's final
// token sits at the last position.
#ifndef LENSGRID_WORKER_MODEL_ANALYSIS_PROMPT_BATCH_H_
#define LENSGRID_WORKER_MODEL_ANALYSIS_PROMPT_BATCH_H_

#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/analysis/dataset.h"
#include "worker/model/analysis/metrics.h"
#include "worker/model/hooked_transformer.h"

namespace lensgrid {

struct PromptBatch {
  std::vector<const Prompt*> prompts;
  int64_t pos = 0;
  ForwardInput clean;      // tokens + attention_mask, left-padded
  ForwardInput corrupted;  // tokens + attention_mask; undefined unless requested
  MetricTargets targets;
};

// Prompts [begin, end) of `dataset`. With `need_corrupted`, every prompt must
// have a corrupted version of its own length (INVALID_ARGUMENT naming it).
absl::StatusOr<PromptBatch> MakePromptBatch(const Dataset& dataset, int64_t begin, int64_t end,
                                            bool need_corrupted, int64_t d_vocab, int64_t pad_id);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_ANALYSIS_PROMPT_BATCH_H_
