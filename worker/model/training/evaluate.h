// What a trained model can do, measured with the analysis code the searches
// use: the facts its model card states and its tests check.
//
//   LG_ASSIGN_OR_RETURN(ModelFacts f, MeasureModelFacts(*model, {}));
//   f.induction_stripe  // [layer, head]
#ifndef LENSGRID_WORKER_MODEL_TRAINING_EVALUATE_H_
#define LENSGRID_WORKER_MODEL_TRAINING_EVALUATE_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/analysis/dataset.h"
#include "worker/model/hooked_transformer.h"

namespace lensgrid {

struct IoiScore {
  int64_t n = 0;
  double accuracy = 0;         // fraction with logit(IO) > logit(S) at the final position
  double mean_logit_diff = 0;  // mean of logit(IO) - logit(S)
};

// Scores prompts whose answers[0] is the indirect object and wrongs[0] the subject.
absl::StatusOr<IoiScore> ScoreIoi(const HookedTransformer& model,
                                  const std::vector<Prompt>& prompts);

struct FactsOptions {
  int64_t n_prompts = 32;  // repeated-token prompts
  int64_t seq_len = 20;    // random tokens per half: BOS + x + x
  uint64_t seed = 1;
};

struct HeadRef {
  int64_t layer = -1, head = -1;
  double score = 0;
  std::string name() const;  // "L1H3"
};

struct ModelFacts {
  // TransformerLens's detect_head ("mul": mass on the pattern / all attention
  // mass) on the `induction` dataset (BOS + x + x[:-1]), [layer, head]. Only
  // the second half has induction targets, so its induction score is at most
  // (seq_len - 1) / (2 seq_len).
  at::Tensor previous_token, duplicate_token, induction;
  // The attention stripes of TransformerLens's tutorial on BOS + x + x: mean
  // attention from each token of the second half to the token after its
  // first copy, and from every token to the one before it. [layer, head]
  at::Tensor induction_stripe, previous_stripe;
  HeadRef top_induction, top_previous;  // by stripe score
  double clean_loss = 0;                // mean loss predicting the repeated half
  at::Tensor ablation_delta;            // [layer, head]: loss(zero-ablated head) - clean_loss
  double top_induction_ablation_delta = 0;
};

absl::StatusOr<ModelFacts> MeasureModelFacts(const HookedTransformer& model,
                                             const FactsOptions& options);

// A [layer, head] table as Markdown.
std::string HeadTableMarkdown(const at::Tensor& scores);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_TRAINING_EVALUATE_H_
