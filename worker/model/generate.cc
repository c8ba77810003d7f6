#include "worker/model/generate.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace lensgrid {
namespace {

// The prompt with its real tokens moved to the right of each row (masked
// positions dropped), on CPU. INVALID_ARGUMENT for a bad prompt.
absl::StatusOr<std::pair<at::Tensor, at::Tensor>> AlignLeft(const ForwardInput& prompt,
                                                            const HookedTransformerConfig& cfg) {
  const at::Tensor& t = prompt.tokens;
  if (!t.defined() || t.dim() != 2) {
    return absl::InvalidArgumentError("generate: the prompt must be tokens [batch, pos]");
  }
  if (t.scalar_type() != torch::kInt64 && t.scalar_type() != torch::kInt32) {
    return absl::InvalidArgumentError(absl::StrCat(
        "generate: prompt tokens must be int64 or int32, got ", c10::toString(t.scalar_type())));
  }
  const int64_t batch = t.size(0), pos = t.size(1);
  if (batch == 0 || pos == 0) {
    return absl::InvalidArgumentError("generate: empty prompt: batch and pos must be at least 1");
  }
  at::Tensor tokens = t.to(torch::kCPU, torch::kInt64).contiguous();
  torch::Tensor bad = ((tokens < 0) | (tokens >= cfg.d_vocab)).nonzero();
  if (bad.size(0) > 0) {
    const int64_t b = bad[0][0].item<int64_t>(), p = bad[0][1].item<int64_t>();
    return absl::InvalidArgumentError(
        absl::StrCat("generate: token id ", tokens[b][p].item<int64_t>(), " at [", b, ", ", p,
                     "] is outside the vocabulary [0, ", cfg.d_vocab, ")"));
  }
  if (!prompt.attention_mask.defined()) return std::make_pair(tokens, at::Tensor());
  if (prompt.attention_mask.sizes() != t.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat("generate: attention_mask has shape ",
                                                   c10::str(prompt.attention_mask.sizes()),
                                                   ", the prompt ", c10::str(t.sizes())));
  }
  at::Tensor mask = prompt.attention_mask.to(torch::kCPU).ne(0).contiguous();
  at::Tensor lengths = mask.sum(1);
  std::vector<int64_t> len(lengths.data_ptr<int64_t>(), lengths.data_ptr<int64_t>() + batch);
  int64_t longest = 0;
  for (int64_t b = 0; b < batch; ++b) {
    if (len[b] == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("generate: prompt row ", b, " has no real token (its mask is all zero)"));
    }
    longest = std::max(longest, len[b]);
  }
  at::Tensor out = torch::full({batch, longest}, cfg.eos_token_id, torch::kInt64);
  at::Tensor out_mask = torch::zeros({batch, longest}, torch::kBool);
  bool padded = false;
  for (int64_t b = 0; b < batch; ++b) {
    out[b].slice(0, longest - len[b]).copy_(tokens[b].masked_select(mask[b]));
    out_mask[b].slice(0, longest - len[b]).fill_(true);
    padded = padded || len[b] < longest;
  }
  return std::make_pair(out, padded ? out_mask : at::Tensor());
}

// One token per row from float32 CPU logits [batch, d_vocab].
at::Tensor Sample(at::Tensor logits, const GenerateOptions& o, at::Generator& gen) {
  if (o.temperature == 0.0) return logits.argmax(-1);
  logits = logits / o.temperature;
  const double neg_inf = -std::numeric_limits<double>::infinity();
  if (o.top_k > 0 && o.top_k < logits.size(-1)) {
    at::Tensor kth = std::get<0>(logits.topk(o.top_k, -1)).select(-1, o.top_k - 1).unsqueeze(-1);
    logits = logits.masked_fill(logits < kth, neg_inf);
  }
  if (o.top_p > 0.0 && o.top_p < 1.0) {
    auto [sorted, order] = logits.sort(-1, /*descending=*/true);
    at::Tensor past = sorted.softmax(-1).cumsum(-1) > o.top_p;
    // Keep the token that crosses top_p (and so always the most likely one).
    past = torch::cat({torch::zeros_like(past.slice(-1, 0, 1)), past.slice(-1, 0, -1)}, -1);
    logits = logits.masked_fill(past.scatter(-1, order, past), neg_inf);
  }
  return torch::multinomial(logits.softmax(-1), 1, /*replacement=*/false, gen).squeeze(-1);
}

absl::StatusOr<GenerateOutput> GenerateImpl(const HookedTransformer& model,
                                            const ForwardInput& prompt,
                                            const GenerateOptions& options) {
  LG_RETURN_IF_ERROR(CheckGenerateOptions(options));
  const HookedTransformerConfig& cfg = model.cfg();
  LG_ASSIGN_OR_RETURN(auto aligned, AlignLeft(prompt, cfg));
  auto [tokens, mask] = std::move(aligned);
  const int64_t batch = tokens.size(0), pos = tokens.size(1);
  if (pos + options.max_new_tokens > cfg.n_ctx) {
    return absl::InvalidArgumentError(absl::StrCat(
        "generate: a prompt of ", pos, " tokens + max_new_tokens ", options.max_new_tokens, " = ",
        pos + options.max_new_tokens, " tokens is over the model's n_ctx (", cfg.n_ctx,
        "); ask for at most ", std::max<int64_t>(cfg.n_ctx - pos, 0), " new tokens"));
  }
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(
      options.seed.has_value() ? *options.seed : std::random_device{}());

  GenerateOutput out;
  out.prompt_tokens = tokens;
  out.prompt_mask = mask;
  at::Tensor finished = torch::zeros({batch}, torch::kBool);
  at::Tensor sequence = tokens, sequence_mask = mask;
  std::vector<at::Tensor> steps;
  torch::NoGradGuard no_grad;
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    if (options.is_cancelled && options.is_cancelled()) {
      return absl::CancelledError(absl::StrCat("generate cancelled before step ", step));
    }
    ForwardInput in;
    in.tokens = sequence;
    in.attention_mask = sequence_mask;
    ForwardOptions run;
    run.return_type = ForwardReturn::kLogits;
    run.logit_positions = torch::full({batch}, sequence.size(1) - 1, torch::kInt64);
    run.is_cancelled = options.is_cancelled;
    LG_ASSIGN_OR_RETURN(RunOutput result, model.Run(in, run));
    at::Tensor logits = result.logits.select(1, 0).to(torch::kCPU, torch::kFloat32);
    at::Tensor next = Sample(logits, options, gen).to(torch::kInt64);
    if (options.stop_at_eos) {
      next = torch::where(finished, torch::full_like(next, cfg.eos_token_id), next);
      finished = finished | next.eq(cfg.eos_token_id);
    }
    steps.push_back(next);
    sequence = torch::cat({sequence, next.unsqueeze(1)}, 1);
    if (sequence_mask.defined()) {
      sequence_mask = torch::cat({sequence_mask, torch::ones({batch, 1}, torch::kBool)}, 1);
    }
    if (options.on_step) {
      GenerateStep s;
      s.step = step;
      s.tokens.assign(next.data_ptr<int64_t>(), next.data_ptr<int64_t>() + batch);
      const bool* f = finished.data_ptr<bool>();
      s.finished.assign(f, f + batch);
      if (step == 0) {
        s.prompt_tokens = tokens;
        s.prompt_mask = mask;
      }
      LG_RETURN_IF_ERROR(options.on_step(s));
    }
    if (options.stop_at_eos && finished.all().item<bool>()) break;
  }
  out.new_tokens = steps.empty() ? torch::empty({batch, 0}, torch::kInt64) : torch::stack(steps, 1);
  out.finished = finished;
  return out;
}

}  // namespace

absl::Status CheckGenerateOptions(const GenerateOptions& o) {
  if (o.max_new_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens must be > 0, got ", o.max_new_tokens));
  }
  if (!std::isfinite(o.temperature) || o.temperature < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be a finite number >= 0 (0: greedy), got ", o.temperature));
  }
  if (o.top_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0 (0: off), got ", o.top_k));
  }
  if (!(o.top_p >= 0.0 && o.top_p <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_p must be in [0, 1] (0 or 1: off), got ", o.top_p));
  }
  return absl::OkStatus();
}

ForwardInput LeftPadded(const std::vector<std::vector<int64_t>>& prompts, int64_t pad_id) {
  size_t longest = 0;
  bool differ = false;
  for (const auto& p : prompts) {
    if (longest != 0 && p.size() != longest) differ = true;
    longest = std::max(longest, p.size());
  }
  const int64_t batch = static_cast<int64_t>(prompts.size()), pos = static_cast<int64_t>(longest);
  ForwardInput in;
  in.tokens = torch::full({batch, pos}, pad_id, torch::kInt64);
  at::Tensor mask = torch::zeros({batch, pos}, torch::kBool);
  for (int64_t b = 0; b < batch; ++b) {
    const auto& p = prompts[b];
    const int64_t start = pos - static_cast<int64_t>(p.size());
    for (size_t i = 0; i < p.size(); ++i) in.tokens[b][start + static_cast<int64_t>(i)] = p[i];
    mask[b].slice(0, start).fill_(true);
  }
  if (differ) in.attention_mask = mask;
  return in;
}

absl::StatusOr<GenerateOutput> Generate(const HookedTransformer& model, const ForwardInput& prompt,
                                        const GenerateOptions& options) {
  try {
    return GenerateImpl(model, prompt, options);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("generate: LibTorch: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("generate: ", e.what()));
  }
}

}  // namespace lensgrid
