#include "worker/model/training/trainer.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/model/hooked_transformer.h"

namespace lensgrid {
namespace {

double LearningRate(const TrainOptions& o, int64_t step) {  // step is 1-based
  if (step <= o.warmup_steps) return o.lr * step / std::max<int64_t>(1, o.warmup_steps);
  const double progress =
      static_cast<double>(step - o.warmup_steps) / std::max<int64_t>(1, o.steps - o.warmup_steps);
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, progress)));
  return o.lr * (o.min_lr_ratio + (1.0 - o.min_lr_ratio) * cosine);
}

torch::Tensor Tokens(const std::vector<int64_t>& ids, int64_t batch, torch::Device device) {
  return torch::tensor(ids, torch::kInt64).view({batch, -1}).to(device);
}

}  // namespace

absl::StatusOr<TrainResult> Train(const HookedTransformerConfig& cfg, const TrainData& data,
                                  const TrainOptions& options,
                                  const std::function<void(const TrainProgress&)>& on_progress) {
  const TrainOptions& o = options;
  if (data.options().seq_len > cfg.n_ctx) {
    return absl::InvalidArgumentError(
        absl::StrCat("rows of ", data.options().seq_len, " tokens exceed n_positions ", cfg.n_ctx));
  }
  if (data.eot() != cfg.d_vocab - 1 || cfg.bos_token_id != data.eot()) {
    return absl::InvalidArgumentError(
        "the data's <|endoftext|> must be the model's last id and its BOS token");
  }
  if (o.steps < 1 || o.batch < 1 || o.lr <= 0) {
    return absl::InvalidArgumentError("steps, batch and lr must be positive");
  }
  LG_ASSIGN_OR_RETURN(auto model, HookedTransformer::FromWeights(cfg, RandomWeights(cfg, o.seed)));
  try {
    torch::manual_seed(o.seed);
    // Parameters by name; W_U / b_U are not trained on their own (tied, zero).
    torch::Tensor W_E, W_U;
    std::vector<torch::Tensor> decayed, plain;
    for (auto& item : model->named_parameters()) {
      torch::Tensor p = item.value();
      if (item.key() == "W_E") W_E = p;
      if (item.key() == "W_U") {
        W_U = p;
        continue;
      }
      if (item.key() == "b_U") {
        p.set_requires_grad(false);
        continue;
      }
      (p.dim() >= 2 ? decayed : plain).push_back(p);
    }
    if (!W_E.defined() || !W_U.defined()) return absl::InternalError("model has no W_E / W_U");
    {
      torch::NoGradGuard no_grad;
      W_U.copy_(W_E.t());
    }
    std::vector<torch::Tensor> trained = decayed;
    trained.insert(trained.end(), plain.begin(), plain.end());
    auto adam = [&](double wd) {
      return torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(1e-8).weight_decay(wd);
    };
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(decayed,
                        std::make_unique<torch::optim::AdamWOptions>(adam(o.weight_decay)));
    groups.emplace_back(plain, std::make_unique<torch::optim::AdamWOptions>(adam(0.0)));
    torch::optim::AdamW optimizer(std::move(groups), adam(o.weight_decay));

    auto held_out_loss = [&]() -> absl::StatusOr<double> {
      double sum = 0;
      for (int64_t i = 0; i < o.eval_batches; ++i) {
        ForwardInput in;
        in.tokens = Tokens(data.HeldOutBatch(o.batch, i), o.batch, model->device());
        ForwardOptions run;
        run.return_type = ForwardReturn::kLoss;
        LG_ASSIGN_OR_RETURN(RunOutput out, model->Run(in, run));
        sum += out.loss.item<double>();
      }
      return sum / std::max<int64_t>(1, o.eval_batches);
    };

    const auto start = std::chrono::steady_clock::now();
    auto seconds = [&] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    };
    TrainResult result;
    double window_sum = 0;
    int64_t window_n = 0;
    for (int64_t step = 1; step <= o.steps; ++step) {
      const double lr = LearningRate(o, step);
      for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
      ForwardInput in;
      in.tokens = Tokens(data.Batch(o.batch, step - 1), o.batch, model->device());
      ForwardOptions run;
      run.return_type = ForwardReturn::kLoss;
      run.enable_grad = true;
      optimizer.zero_grad();
      if (W_U.grad().defined()) W_U.mutable_grad().zero_();
      LG_ASSIGN_OR_RETURN(RunOutput out, model->Run(in, run));
      out.loss.backward();
      {
        torch::NoGradGuard no_grad;
        W_E.mutable_grad().add_(W_U.grad().t());  // tied: one parameter, two uses
        if (o.grad_clip > 0) torch::nn::utils::clip_grad_norm_(trained, o.grad_clip);
        optimizer.step();
        W_U.copy_(W_E.t());
      }
      const double loss = out.loss.item<double>();
      if (!std::isfinite(loss)) {
        return absl::InternalError(absl::StrCat("loss is ", loss, " at step ", step));
      }
      window_sum += loss;
      ++window_n;
      const bool last = step == o.steps;
      const bool eval = last || (o.eval_every > 0 && step % o.eval_every == 0);
      if (last || eval || (o.log_every > 0 && step % o.log_every == 0)) {
        TrainProgress p;
        p.step = step;
        p.loss = window_sum / window_n;
        p.lr = lr;
        if (eval) {
          LG_ASSIGN_OR_RETURN(p.held_out_loss, held_out_loss());
        }
        p.seconds = seconds();
        p.model = model.get();
        if (last) {
          result.final_loss = p.loss;
          result.held_out_loss = p.held_out_loss;
        }
        if (on_progress) on_progress(p);
        window_sum = 0;
        window_n = 0;
      }
    }
    result.seconds = seconds();
    result.weights = model->ExportWeights();
    return result;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("training: ", e.what_without_backtrace()));
  }
}

}  // namespace lensgrid
