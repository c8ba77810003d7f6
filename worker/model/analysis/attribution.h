// Analyses read off one cached clean run (internal to analysis/):
// TransformerLens's head detectors and direct logit attribution.
#ifndef LENSGRID_WORKER_MODEL_ANALYSIS_ATTRIBUTION_H_
#define LENSGRID_WORKER_MODEL_ANALYSIS_ATTRIBUTION_H_

#include "absl/status/status.h"
#include "worker/model/analysis/prompt_batch.h"
#include "worker/model/analysis/search.h"

namespace lensgrid {

// Previous-token, duplicate-token and induction scores per head and prompt,
// as TransformerLens's detect_head with error_measure "mul": the attention
// mass on the detection pattern divided by the pattern's total (= the number
// of real query positions). Fills result->outputs[0..2].per_prompt, and the
// baseline with the clean run's metric.
absl::Status DetectHeads(const HookedTransformer& model, const PromptBatch& batch,
                         MetricKind metric, SearchResult* result);

// Each head's and each layer's direct contribution to the logit difference
// (answer - wrong; means over answer sets) at the final position, through
// the final LayerNorm's scale (and weight, for unprocessed models).
// Fills result->outputs[0] (heads) and [1] (layers: attn, mlp).
absl::Status DirectLogitAttribution(const HookedTransformer& model, const PromptBatch& batch,
                                    MetricKind metric, SearchResult* result);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_ANALYSIS_ATTRIBUTION_H_
