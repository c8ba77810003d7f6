#include "worker/model/hooked_transformer.h"

#include <torch/torch.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/bounded_regex.h"
#include "common/echo.h"
#include "common/status_macros.h"
#include "worker/model/hook_names.h"

namespace lensgrid {
namespace {

std::string Shape(at::IntArrayRef s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }

absl::Status TorchError(const c10::Error& e) {
  return absl::InternalError(absl::StrCat("LibTorch: ", e.what_without_backtrace()));
}

absl::Status FromRunError(const RunError& e) {
  return e.kind() == RunError::Kind::kCancelled ? absl::CancelledError(e.what())
                                                : absl::InvalidArgumentError(e.what());
}

// Python-style slice bounds on an axis of length n.
std::pair<int64_t, int64_t> SliceBounds(const PositionSlice& s, int64_t n) {
  auto norm = [n](std::optional<int64_t> v, int64_t dflt) {
    if (!v.has_value()) return dflt;
    int64_t x = *v < 0 ? *v + n : *v;
    return std::clamp<int64_t>(x, 0, n);
  };
  int64_t start = norm(s.start, 0), stop = norm(s.stop, n);
  return {start, std::max(start, stop)};
}

bool HasQueryPosAxis(const std::string& name) {
  return absl::EndsWith(name, "hook_pattern") || absl::EndsWith(name, "hook_attn_scores");
}

}  // namespace

absl::StatusOr<torch::Device> ParseDevice(const std::string& device) {
  if (device == "cpu") return torch::Device(torch::kCPU);
  if (device == "cuda" || absl::StartsWith(device, "cuda:")) {
    int index = 0;
    if (device.size() > 5 && !absl::SimpleAtoi(device.substr(5), &index)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad device \"", device, "\" (expected cpu, cuda or cuda:N)"));
    }
    if (!torch::cuda::is_available()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device \"", device,
          "\" requested but this LibTorch has no CUDA support or no GPU is visible; use "
          "--device cpu, or the CUDA worker image"));
    }
    if (index >= static_cast<int>(torch::cuda::device_count())) {
      return absl::FailedPreconditionError(
          absl::StrCat("device \"", device, "\" requested but only ", torch::cuda::device_count(),
                       " CUDA device(s) are visible"));
    }
    return torch::Device(torch::kCUDA, index);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("bad device \"", device, "\" (expected cpu, cuda or cuda:N)"));
}

HookedTransformer::HookedTransformer(const HookedTransformerConfig& cfg, const GPT2Weights& w)
    : cfg_(cfg) {
  W_E_ = register_parameter("W_E", w.W_E.clone());        // [d_vocab, d_model]
  W_pos_ = register_parameter("W_pos", w.W_pos.clone());  // [n_ctx, d_model]
  hook_embed_ = register_module("hook_embed", HookPoint());
  hook_pos_embed_ = register_module("hook_pos_embed", HookPoint());
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (const BlockWeights& b : w.blocks) {
    block_modules_.push_back(TransformerBlock(cfg, b));
    blocks_->push_back(block_modules_.back());
  }
  ln_final_ = register_module("ln_final", LayerNorm(w.ln_final, cfg.eps));
  W_U_ = register_parameter("W_U", w.W_U.clone().contiguous());  // [d_model, d_vocab]
  b_U_ = register_parameter("b_U", w.b_U.clone());               // [d_vocab]
  processed_ = w.ln_final.folded();
  BindHookPoints();
}

void HookedTransformer::BindHookPoints() {
  hook_names_.clear();
  hook_points_.clear();
  for (const auto& item : named_modules("", /*include_self=*/false)) {
    auto* hp = dynamic_cast<HookPointImpl*>(item.value().get());
    if (hp == nullptr) continue;
    hp->Bind(item.key(), static_cast<int>(hook_points_.size()));
    hook_names_.push_back(item.key());
    hook_points_.push_back(hp);
  }
}

absl::StatusOr<std::shared_ptr<HookedTransformer>> HookedTransformer::FromWeights(
    const HookedTransformerConfig& cfg, const GPT2Weights& weights, const std::string& device) {
  LG_ASSIGN_OR_RETURN(torch::Device dev, ParseDevice(device));
  if (static_cast<int64_t>(weights.blocks.size()) != cfg.n_layers) {
    return absl::InvalidArgumentError(absl::StrCat("weights have ", weights.blocks.size(),
                                                   " blocks, config says ", cfg.n_layers));
  }
  try {
    torch::NoGradGuard no_grad;
    std::shared_ptr<HookedTransformer> model(new HookedTransformer(cfg, weights));
    model->to(dev);
    model->device_ = dev;
    // The order a forward reaches the hook points: one probe run of one token.
    const int n = static_cast<int>(model->hook_names_.size());
    model->execution_rank_.assign(n, n);
    auto order = std::make_shared<std::vector<int>>();
    std::vector<NamedHook> probes;
    for (const std::string& name : model->hook_names_) {
      probes.push_back(
          {name,
           [order](const torch::Tensor&, const HookPointImpl& hp) -> std::optional<torch::Tensor> {
             order->push_back(hp.id());
             return std::nullopt;
           }});
    }
    ForwardInput probe;
    probe.tokens = torch::zeros({1, 1}, torch::kInt64);
    ForwardOptions none;
    none.return_type = ForwardReturn::kNone;
    LG_RETURN_IF_ERROR(model->Run(probe, none, probes).status());
    for (size_t i = order->size(); i-- > 0;)
      model->execution_rank_[(*order)[i]] = static_cast<int>(i);
    return model;
  } catch (const c10::Error& e) {
    return TorchError(e);
  }
}

absl::StatusOr<std::shared_ptr<HookedTransformer>> HookedTransformer::FromPretrained(
    const std::string& model_dir, const LoadOptions& options) {
  LG_ASSIGN_OR_RETURN(HookedTransformerConfig cfg, LoadModelConfig(model_dir));
  cfg.use_attn_result = options.use_attn_result;
  cfg.use_split_qkv_input = options.use_split_qkv_input;
  cfg.use_attn_in = options.use_attn_in;
  cfg.use_hook_mlp_in = options.use_hook_mlp_in;
  LoadReport report;
  LG_ASSIGN_OR_RETURN(GPT2Weights weights, LoadHfModelDir(model_dir, cfg, &report));
  try {
    ProcessWeights(options.processing, cfg, &weights);
  } catch (const c10::Error& e) {
    return TorchError(e);
  }
  LG_ASSIGN_OR_RETURN(auto model, FromWeights(cfg, weights, options.device));
  model->load_report_ = std::move(report);
  return model;
}

absl::StatusOr<std::string> HookedTransformer::ResolveHookName(absl::string_view name) const {
  std::string full = ActName(name, std::nullopt, "", static_cast<int>(cfg_.n_layers));
  for (const auto& n : hook_names_) {
    if (n == full) return full;
  }
  return UnknownHookError(name, hook_names_);
}

absl::StatusOr<int> HookedTransformer::HookId(absl::string_view name) const {
  LG_ASSIGN_OR_RETURN(std::string full, ResolveHookName(name));
  for (size_t i = 0; i < hook_names_.size(); ++i) {
    if (hook_names_[i] == full) return static_cast<int>(i);
  }
  return absl::InternalError("hook name resolved but has no id");
}

absl::StatusOr<std::vector<std::string>> HookedTransformer::SelectHookNames(
    const CacheOptions& options) const {
  std::vector<bool> selected(hook_names_.size(), false);
  const bool all = options.names.empty() && options.regexes.empty() && !options.predicate;
  for (const auto& name : options.names) {
    LG_ASSIGN_OR_RETURN(int id, HookId(name));
    selected[id] = true;
  }
  for (const auto& pattern : options.regexes) {
    LG_ASSIGN_OR_RETURN(BoundedRegex re, BoundedRegex::Compile(pattern, {}, "names regex"));
    bool any = false;
    for (size_t i = 0; i < hook_names_.size(); ++i) {
      LG_ASSIGN_OR_RETURN(bool hit, re.Search(hook_names_[i]));
      if (hit) selected[i] = any = true;
    }
    if (!any) {
      return absl::NotFoundError(absl::StrCat("names regex ", Echo(pattern),
                                              " matches no hook point; ",
                                              UnknownHookMessage(pattern, hook_names_)));
    }
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < hook_names_.size(); ++i) {
    if (all || selected[i] || (options.predicate && options.predicate(hook_names_[i]))) {
      out.push_back(hook_names_[i]);
    }
  }
  return out;
}

absl::Status HookedTransformer::ValidateInput(const ForwardInput& input,
                                              const ForwardOptions& options, int* start,
                                              int* stop) const {
  const int n_layers = static_cast<int>(cfg_.n_layers);
  *start = options.start_at_layer.value_or(0);
  *stop = options.stop_at_layer.value_or(n_layers);
  if (*stop < 0) *stop += n_layers;
  if (*start < 0 || *start > n_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("start_at_layer ", *start, " out of range [0, ", n_layers, "]"));
  }
  if (*stop < *start || *stop > n_layers) {
    return absl::InvalidArgumentError(absl::StrCat("stop_at_layer ",
                                                   options.stop_at_layer.value_or(n_layers),
                                                   " out of range [", *start, ", ", n_layers, "]"));
  }
  const bool need_tokens = !options.start_at_layer.has_value() ||
                           options.return_type == ForwardReturn::kLoss ||
                           options.return_type == ForwardReturn::kBoth;
  int64_t batch = -1, pos = -1;
  if (options.start_at_layer.has_value()) {
    const auto& r = input.residual;
    if (!r.defined() || r.dim() != 3 || r.size(2) != cfg_.d_model) {
      return absl::InvalidArgumentError(
          absl::StrCat("start_at_layer needs a residual [batch, pos, ", cfg_.d_model, "], got ",
                       r.defined() ? Shape(r.sizes()) : "none"));
    }
    batch = r.size(0);
    pos = r.size(1);
  }
  if (need_tokens) {
    const auto& t = input.tokens;
    if (!t.defined()) return absl::InvalidArgumentError("no tokens given");
    if (t.dim() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokens must be [batch, pos], got shape ", Shape(t.sizes())));
    }
    if (t.scalar_type() != torch::kInt64 && t.scalar_type() != torch::kInt32) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokens must be int64 or int32, got ", c10::toString(t.scalar_type())));
    }
    if (batch >= 0 && (t.size(0) != batch || t.size(1) != pos)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokens ", Shape(t.sizes()), " do not match the residual's [batch, pos]"));
    }
    batch = t.size(0);
    pos = t.size(1);
    torch::Tensor bad = ((t < 0) | (t >= cfg_.d_vocab)).nonzero();
    if (bad.size(0) > 0) {
      int64_t b = bad[0][0].item<int64_t>(), p = bad[0][1].item<int64_t>();
      return absl::InvalidArgumentError(absl::StrCat("token id ", t[b][p].item<int64_t>(), " at [",
                                                     b, ", ", p, "] is outside the vocabulary [0, ",
                                                     cfg_.d_vocab, ")"));
    }
  }
  if (batch == 0 || pos == 0) {
    return absl::InvalidArgumentError("empty input: batch and pos must be at least 1");
  }
  if (pos < 2 && (options.return_type == ForwardReturn::kLoss ||
                  options.return_type == ForwardReturn::kBoth)) {
    return absl::InvalidArgumentError("a loss needs at least 2 tokens");
  }
  if (pos > cfg_.n_ctx) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sequence of ", pos, " tokens is longer than the model's n_positions (", cfg_.n_ctx, ")"));
  }
  if (options.logit_positions.defined()) {
    const auto& lp = options.logit_positions;
    if (options.return_type == ForwardReturn::kLoss ||
        options.return_type == ForwardReturn::kBoth) {
      return absl::InvalidArgumentError("logit_positions cannot be combined with a loss");
    }
    if (lp.dim() != 1 || lp.size(0) != batch || ((lp < 0) | (lp >= pos)).any().item<bool>()) {
      return absl::InvalidArgumentError(
          absl::StrCat("logit_positions must be [", batch, "] positions in [0, ", pos, ")"));
    }
  }
  if (input.attention_mask.defined() &&
      input.attention_mask.sizes() != at::IntArrayRef({batch, pos})) {
    return absl::InvalidArgumentError(absl::StrCat("attention_mask has shape ",
                                                   Shape(input.attention_mask.sizes()),
                                                   ", expected [", batch, ", ", pos, "]"));
  }
  return absl::OkStatus();
}

at::Tensor HookedTransformer::Loss(const at::Tensor& logits, const ForwardInput& input,
                                   bool per_token) const {
  // Next-token cross-entropy: logits at p predict tokens at p + 1.
  torch::Tensor tokens = input.tokens.to(device_, torch::kInt64);
  torch::Tensor log_probs = torch::log_softmax(logits.slice(1, 0, -1), -1);
  torch::Tensor nll =
      -log_probs.gather(-1, tokens.slice(1, 1).unsqueeze(-1)).squeeze(-1);  // [batch, pos-1]
  if (!input.attention_mask.defined()) return per_token ? nll : nll.mean();
  torch::Tensor mask = input.attention_mask.to(device_).ne(0);
  torch::Tensor pair = (mask.slice(1, 0, -1) & mask.slice(1, 1)).to(nll.dtype());
  nll = nll * pair;  // pads (as predictor or target) count for nothing
  return per_token ? nll : nll.sum() / pair.sum().clamp_min(1);
}

RunOutput HookedTransformer::Forward(const ForwardInput& input, const ForwardOptions& options,
                                     int start, int stop, const RunContext& ctx) const {
  RunOutput out;
  torch::Tensor mask_real;  // bool [batch, pos] or undefined
  if (input.attention_mask.defined()) mask_real = input.attention_mask.to(device_).ne(0);
  torch::Tensor resid;  // [batch, pos, d_model]
  int64_t pos;
  if (options.start_at_layer.has_value()) {
    resid = input.residual.to(device_, W_E_.scalar_type());
    pos = resid.size(1);
  } else {
    torch::Tensor tokens = input.tokens.to(device_, torch::kInt64);
    const int64_t batch = tokens.size(0);
    pos = tokens.size(1);
    torch::Tensor embed = hook_embed_->forward(torch::embedding(W_E_, tokens), ctx);
    // With padding, each sequence's positions count its real tokens only, so
    // left padding does not shift the position embeddings.
    torch::Tensor pos_ids =
        mask_real.defined()
            ? (mask_real.to(torch::kInt64).cumsum(1) - 1).clamp_min(0)
            : torch::arange(pos, torch::TensorOptions().dtype(torch::kInt64).device(device_))
                  .unsqueeze(0)
                  .expand({batch, pos});
    torch::Tensor pos_embed = hook_pos_embed_->forward(torch::embedding(W_pos_, pos_ids), ctx);
    resid = embed + pos_embed;
  }
  AttentionMask mask;
  auto opts = torch::TensorOptions().dtype(torch::kBool).device(device_);
  mask.blocked = torch::ones({pos, pos}, opts).triu(1).view({1, 1, pos, pos});
  mask.may_have_empty_rows = false;
  if (mask_real.defined()) {
    mask.blocked = mask.blocked | mask_real.logical_not().view({-1, 1, 1, pos});
    mask.may_have_empty_rows = true;
  }
  for (int l = start; l < stop; ++l) {
    ctx.CheckCancelled();
    resid = block_modules_[l]->forward(resid, mask, ctx);
  }
  if (stop < cfg_.n_layers) {
    out.residual = resid;
    return out;
  }
  resid = ln_final_->forward(resid, ctx);
  if (options.return_type == ForwardReturn::kNone) return out;
  if (options.logit_positions.defined()) {
    // Metrics that read one position per sequence need only that row unembedded.
    torch::Tensor index = options.logit_positions.to(device_, torch::kInt64)
                              .view({-1, 1, 1})
                              .expand({resid.size(0), 1, resid.size(2)});
    resid = resid.gather(1, index);  // [batch, 1, d_model]
  }
  torch::Tensor logits =
      torch::addmm(b_U_, resid.reshape({-1, cfg_.d_model}), W_U_)
          .view({resid.size(0), resid.size(1), cfg_.d_vocab});  // [batch, pos, d_vocab]
  if (options.return_type != ForwardReturn::kLogits) {
    out.loss = Loss(logits, input, options.per_token_loss);
  }
  if (options.return_type != ForwardReturn::kLoss) out.logits = logits;
  return out;
}

absl::StatusOr<RunOutput> HookedTransformer::Run(const ForwardInput& input,
                                                 const ForwardOptions& options,
                                                 const std::vector<NamedHook>& hooks) const {
  return RunWithCache(input, options, CacheOptions{}, nullptr, hooks);
}

absl::StatusOr<RunOutput> HookedTransformer::RunWithCache(
    const ForwardInput& input, const ForwardOptions& options, const CacheOptions& cache_options,
    ActivationCache* cache, const std::vector<NamedHook>& hooks) const {
  int start = 0, stop = 0;
  try {
    LG_RETURN_IF_ERROR(ValidateInput(input, options, &start, &stop));
    RunContext ctx(static_cast<int>(hook_points_.size()));
    ctx.is_cancelled = options.is_cancelled;
    for (const NamedHook& hook : hooks) {
      LG_ASSIGN_OR_RETURN(int id, HookId(hook.name));
      ctx.AddHook(id, hook.fn);
    }
    if (cache != nullptr) {
      *cache = ActivationCache(static_cast<int>(cfg_.n_layers));
      LG_ASSIGN_OR_RETURN(std::vector<std::string> names, SelectHookNames(cache_options));
      if (cache_options.remove_batch_dim) {
        int64_t batch = input.tokens.defined() ? input.tokens.size(0) : input.residual.size(0);
        if (batch != 1) {
          return absl::InvalidArgumentError(
              absl::StrCat("remove_batch_dim needs a batch of 1, got ", batch));
        }
      }
      for (const std::string& name : names) {
        ctx.AddHook(
            HookId(name).value(),
            [cache, &cache_options](const torch::Tensor& act,
                                    const HookPointImpl& hp) -> std::optional<torch::Tensor> {
              torch::Tensor value = cache_options.detach ? act.detach() : act;
              if (cache_options.positions.has_value()) {
                int64_t dim = HasQueryPosAxis(hp.name()) ? 2 : 1;
                auto [b, e] = SliceBounds(*cache_options.positions, value.size(dim));
                value = value.slice(dim, b, e);
              }
              if (cache_options.remove_batch_dim) value = value.squeeze(0);
              cache->Put(hp.name(), value);
              return std::nullopt;
            });
      }
    }
    std::optional<torch::NoGradGuard> no_grad;
    if (!options.enable_grad) no_grad.emplace();
    return Forward(input, options, start, stop, ctx);
  } catch (const RunError& e) {
    return FromRunError(e);
  } catch (const c10::Error& e) {
    return TorchError(e);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("run failed: ", e.what()));
  }
}

const at::Tensor& HookedTransformer::W_O(int layer) const {
  return block_modules_.at(layer)->attn()->W_O();
}

namespace {

// One per-block weight of `b` by its TransformerLens name ("W_Q", "ln1.w"); null if unknown.
const at::Tensor* BlockWeight(const BlockWeights& b, absl::string_view name) {
  static const std::vector<std::pair<const char*, at::Tensor BlockWeights::*>> kTensors = {
      {"W_Q", &BlockWeights::W_Q},     {"W_K", &BlockWeights::W_K},
      {"W_V", &BlockWeights::W_V},     {"W_O", &BlockWeights::W_O},
      {"b_Q", &BlockWeights::b_Q},     {"b_K", &BlockWeights::b_K},
      {"b_V", &BlockWeights::b_V},     {"b_O", &BlockWeights::b_O},
      {"W_in", &BlockWeights::W_in},   {"b_in", &BlockWeights::b_in},
      {"W_out", &BlockWeights::W_out}, {"b_out", &BlockWeights::b_out}};
  for (const auto& [n, member] : kTensors) {
    if (name == n) return &(b.*member);
  }
  if (name == "ln1.w") return &b.ln1.w;
  if (name == "ln1.b") return &b.ln1.b;
  if (name == "ln2.w") return &b.ln2.w;
  if (name == "ln2.b") return &b.ln2.b;
  return nullptr;
}

}  // namespace

absl::StatusOr<at::Tensor> HookedTransformer::Weight(absl::string_view name) const {
  torch::NoGradGuard no_grad;
  auto unknown = [&] {
    return absl::NotFoundError(absl::StrCat(
        "unknown weight '", name,
        "': use W_E, W_pos, W_U, b_U, ln_final.w, ln_final.b, blocks.L.attn.{W_Q, W_K, W_V, W_O, "
        "b_Q, b_K, b_V, b_O}, blocks.L.mlp.{W_in, b_in, W_out, b_out}, blocks.L.{ln1, ln2}.{w, "
        "b}, or a per-block name alone for every layer stacked"));
  };
  auto defined = [&](const at::Tensor& t) -> absl::StatusOr<at::Tensor> {
    if (!t.defined()) {
      return absl::FailedPreconditionError(
          absl::StrCat("weight '", name,
                       "' is not in this model (folded into the next weights when the model "
                       "was processed, or an attention-only model's MLP)"));
    }
    return t.detach();
  };
  if (name == "W_E") return W_E_.detach();
  if (name == "W_pos") return W_pos_.detach();
  if (name == "W_U") return W_U_.detach();
  if (name == "b_U") return b_U_.detach();
  if (name == "ln_final.w") return defined(ln_final_->weights().w);
  if (name == "ln_final.b") return defined(ln_final_->weights().b);
  if (absl::string_view path = name; absl::ConsumePrefix(&path, "blocks.")) {
    const size_t dot = path.find('.');
    int layer = 0;
    if (dot == absl::string_view::npos || !absl::SimpleAtoi(path.substr(0, dot), &layer)) {
      return unknown();
    }
    if (layer < 0) layer += static_cast<int>(cfg_.n_layers);
    if (layer < 0 || layer >= cfg_.n_layers) {
      return absl::NotFoundError(
          absl::StrCat("weight '", name, "': the model has layers 0 to ", cfg_.n_layers - 1));
    }
    absl::string_view rest = path.substr(dot + 1);
    const bool attn = absl::ConsumePrefix(&rest, "attn.");
    const bool mlp = !attn && absl::ConsumePrefix(&rest, "mlp.");
    const bool ln = absl::StartsWith(rest, "ln");
    const bool mlp_name = absl::EndsWith(rest, "_in") || absl::EndsWith(rest, "_out");
    const bool valid = (attn && !ln && !mlp_name) || (mlp && mlp_name) || (!attn && !mlp && ln);
    if (!valid) return unknown();
    BlockWeights b = block_modules_.at(layer)->ExportWeights();
    const at::Tensor* t = BlockWeight(b, rest);
    if (t == nullptr) return unknown();
    return defined(*t);
  }
  std::vector<at::Tensor> layers;
  for (const TransformerBlock& block : block_modules_) {
    BlockWeights b = block->ExportWeights();
    const at::Tensor* t = BlockWeight(b, name);  // "W_Q" ... "ln2.b", nothing else
    if (t == nullptr) return unknown();
    LG_ASSIGN_OR_RETURN(at::Tensor w, defined(*t));
    layers.push_back(w);
  }
  if (layers.empty()) return unknown();
  return torch::stack(layers);
}

GPT2Weights HookedTransformer::ExportWeights() const {
  torch::NoGradGuard no_grad;
  GPT2Weights w;
  w.W_E = W_E_.detach().cpu().clone();
  w.W_pos = W_pos_.detach().cpu().clone();
  for (const TransformerBlock& block : block_modules_) {
    BlockWeights b = block->ExportWeights();
    for (at::Tensor* t : {&b.ln1.w, &b.ln1.b, &b.ln2.w, &b.ln2.b, &b.W_Q, &b.W_K, &b.W_V, &b.b_Q,
                          &b.b_K, &b.b_V, &b.W_O, &b.b_O, &b.W_in, &b.b_in, &b.W_out, &b.b_out}) {
      if (t->defined()) *t = t->cpu();
    }
    w.blocks.push_back(std::move(b));
  }
  w.ln_final = ln_final_->weights();
  if (!w.ln_final.folded()) {
    w.ln_final.w = w.ln_final.w.cpu();
    w.ln_final.b = w.ln_final.b.cpu();
  }
  w.W_U = W_U_.detach().cpu().clone();
  w.b_U = b_U_.detach().cpu().clone();
  return w;
}

}  // namespace lensgrid
