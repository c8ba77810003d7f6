// Trains a GPT-2-family model with LibTorch autograd, through the same
// HookedTransformer forward that serves GPT-2 (no second transformer).
//
//   TrainOptions opts;  opts.steps = 4000;
//   LG_ASSIGN_OR_RETURN(TrainResult r, Train(cfg, data, opts, [](const TrainProgress& p) {
//     std::cout << p.step << " " << p.loss << "\n";
//   }));
//   LG_RETURN_IF_ERROR(SaveHfCheckpoint(r.weights, cfg, dir, /*f16=*/true));
//
// The model starts from RandomWeights(cfg, seed) (GPT-2's init) and stays
// unprocessed (LayerNorm weights kept), so the saved checkpoint loads with
// default processing. The unembedding is tied as in GPT-2: W_U = W_E^T, with
// W_U's gradient added to W_E's, and b_U stays zero (GPT-2 has no lm_head bias).
// AdamW (decay on matrices only), linear warm-up then cosine decay to
// min_lr_ratio * lr, global gradient-norm clipping.
#ifndef LENSGRID_WORKER_MODEL_TRAINING_TRAINER_H_
#define LENSGRID_WORKER_MODEL_TRAINING_TRAINER_H_

#include <cstdint>
#include <functional>

#include "absl/status/statusor.h"
#include "worker/model/config.h"
#include "worker/model/hooked_transformer.h"
#include "worker/model/training/train_data.h"
#include "worker/model/weights.h"

namespace lensgrid {

struct TrainOptions {
  uint64_t seed = 0;  // initial weights
  int64_t steps = 4000;
  int64_t batch = 16;  // rows of data.options().seq_len tokens
  double lr = 1e-3;    // peak
  int64_t warmup_steps = 200;
  double min_lr_ratio = 0.1;  // lr at the last step, relative to the peak
  double weight_decay = 0.01;
  double beta1 = 0.9, beta2 = 0.98;
  double grad_clip = 1.0;    // max global L2 norm; <= 0 disables
  int64_t log_every = 50;    // progress callback period (steps)
  int64_t eval_every = 500;  // held-out loss period (steps); <= 0: only at the end
  int64_t eval_batches = 4;  // held-out batches per evaluation
};

struct TrainProgress {
  int64_t step = 0;  // 1-based
  double loss = 0;   // mean training loss over the steps since the last report
  double lr = 0;
  double seconds = 0;         // since training started
  double held_out_loss = -1;  // < 0 when not evaluated at this step
  // The model being trained, valid during the callback (for extra evaluations).
  const HookedTransformer* model = nullptr;
};

struct TrainResult {
  GPT2Weights weights;       // unprocessed, W_U = W_E^T
  double final_loss = 0;     // mean training loss over the last log_every steps
  double held_out_loss = 0;  // at the end
  double seconds = 0;
};

// REQUIRES: data's seq_len <= cfg.n_ctx and its vocabulary == cfg.d_vocab.
absl::StatusOr<TrainResult> Train(
    const HookedTransformerConfig& cfg, const TrainData& data, const TrainOptions& options,
    const std::function<void(const TrainProgress&)>& on_progress = {});

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_TRAINING_TRAINER_H_
