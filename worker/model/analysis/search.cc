#include "worker/model/analysis/search.h"

#include <torch/torch.h>

#include <set>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/model/activation_edit.h"
#include "worker/model/analysis/attribution.h"
#include "worker/model/analysis/circuit_search.h"
#include "worker/model/analysis/prompt_batch.h"
#include "worker/model/gradients.h"

namespace lensgrid {
namespace {

// One intervention of a search: the library's ActivationEdit (the engine the
// Worker API's interventions run too) on one hook, zeroing its region or
// patching it from `source`.
struct Edit {
  int layer;
  std::string hook;      // full hook name
  ActivationEdit edit;   // kZero, or kPatch from `source`
  torch::Tensor source;  // kPatch: [n or 1, ...] activation-shaped
};

ActivationEdit HeadEdit(int head_axis, int64_t head) {
  ActivationEdit e;
  e.head_axis = head_axis;
  e.head = head;
  return e;
}

ActivationEdit AtPosition(ActivationEdit e, int pos_axis, int64_t p) {
  e.pos_axis = pos_axis;
  e.positions = torch::tensor({p}, torch::kInt64);
  return e;
}

std::string HookAt(int layer, const char* suffix) {
  return absl::StrCat("blocks.", layer, ".", suffix);
}

// The activations an edit reads from another run (or their dataset mean).
struct Sources {
  std::map<std::string, torch::Tensor> by_hook;  // full hook name -> tensor
};

// Masked mean over prompts at each position: [1, pos, ...]. Positions where
// no prompt has a real token get zeros.
torch::Tensor MaskedMean(const torch::Tensor& act, const torch::Tensor& mask) {
  torch::Tensor m = mask.to(act.dtype());
  std::vector<int64_t> shape(act.dim(), 1);
  shape[0] = m.size(0);
  shape[1] = m.size(1);
  m = m.view(shape);
  return (act * m).sum(0, true) / m.sum(0, true).clamp_min(1);
}

// The hook suffix each method intervenes on.
const char* MethodHook(Method m, int kind) {
  switch (m) {
    case Method::kAblateHeads:
    case Method::kPatchHeads:
    case Method::kPatchHeadsByPos:
      return "attn.hook_z";
    case Method::kAblateLayers:
      return kind == 0 ? "hook_attn_out" : "hook_mlp_out";
    case Method::kPatchResid:
      return "hook_resid_pre";
    case Method::kPatchAttnOut:
      return "hook_attn_out";
    case Method::kPatchMlpOut:
      return "hook_mlp_out";
    case Method::kPatchPattern:
      return "attn.hook_pattern";
    case Method::kDetectHeads:
    case Method::kDla:
    case Method::kEap:
    case Method::kEapIg:
    case Method::kPathPatch:
    case Method::kCircuitFaithfulness:
    case Method::kAcdc:
    case Method::kAcdcStep:
      return "";  // no interventions of this engine: whole-grid and circuit methods
    case Method::kAttributeHeads:
    case Method::kAttributeHeadsByPos:
    case Method::kAttributeResid:
    case Method::kAttributeAttnOut:
    case Method::kAttributeMlpOut:
      return MethodHook(ExactMethod(m), kind);  // the activations the exact method patches
  }
  return "";
}

Edit MakeEdit(Method m, const HookedTransformerConfig& cfg, int64_t n_pos, int64_t c) {
  const int64_t L = cfg.n_layers, H = cfg.n_heads;
  switch (m) {
    case Method::kAblateHeads:
    case Method::kPatchHeads:  // hook_z [batch, pos, head, d_head]
      return {static_cast<int>(c / H), HookAt(c / H, MethodHook(m, 0)), HeadEdit(2, c % H), {}};
    case Method::kPatchPattern:  // hook_pattern [batch, head, query, key]
      return {static_cast<int>(c / H), HookAt(c / H, MethodHook(m, 0)), HeadEdit(1, c % H), {}};
    case Method::kAblateLayers: {
      int kind = static_cast<int>(c / L);
      return {static_cast<int>(c % L), HookAt(c % L, MethodHook(m, kind)), {}, {}};
    }
    case Method::kPatchHeadsByPos: {
      int64_t l = c / (n_pos * H), p = (c / H) % n_pos, h = c % H;
      return {
          static_cast<int>(l), HookAt(l, MethodHook(m, 0)), AtPosition(HeadEdit(2, h), 1, p), {}};
    }
    case Method::kPatchResid:
    case Method::kPatchAttnOut:
    case Method::kPatchMlpOut:  // by (layer, pos)
      return {static_cast<int>(c / n_pos),
              HookAt(c / n_pos, MethodHook(m, 0)),
              AtPosition({}, 1, c % n_pos),
              {}};
    case Method::kDetectHeads:
    case Method::kDla:
    case Method::kAttributeHeads:
    case Method::kAttributeHeadsByPos:
    case Method::kAttributeResid:
    case Method::kAttributeAttnOut:
    case Method::kAttributeMlpOut:
    case Method::kEap:
    case Method::kEapIg:
    case Method::kPathPatch:
    case Method::kCircuitFaithfulness:
    case Method::kAcdc:
    case Method::kAcdcStep:
      break;  // no interventions of this engine: whole-grid and circuit methods
  }
  return {0, "", {}, {}};
}

class SearchRun {
 public:
  SearchRun(const HookedTransformer& model, const Dataset& dataset, const SearchSpec& spec,
            const SearchOptions& options)
      : model_(model), cfg_(model.cfg()), dataset_(dataset), spec_(spec), options_(options) {}

  absl::StatusOr<SearchResult> Run();

 private:
  absl::Status Validate() const;
  absl::StatusOr<RunOutput> RunModel(const ForwardInput& in, const ForwardOptions& opts,
                                     const CacheOptions* cache_opts, ActivationCache* cache,
                                     const std::vector<NamedHook>& hooks = {}) const {
    ForwardOptions o = opts;
    o.is_cancelled = options_.is_cancelled;
    Count(in, o);
    if (cache_opts == nullptr) return model_.Run(in, o, hooks);
    return model_.RunWithCache(in, o, *cache_opts, cache, hooks);
  }
  void Count(const ForwardInput& in, const ForwardOptions& o) const {
    const int64_t rows = in.tokens.defined() ? in.tokens.size(0) : in.residual.size(0);
    counts_->forwards += 1;
    counts_->block_rows += rows * (cfg_.n_layers - o.start_at_layer.value_or(0));
  }
  // The base runs, from options_.base_run_cache when it has them.
  absl::Status BaseRuns();
  absl::Status RunBase();          // runs them (batch_ and base_ are set)
  std::string BaseRunKey() const;  // "" without a cache
  // Mean ablation's sources: each hook's masked mean over `mean_of`, from
  // options_.base_run_cache when it has them. They do not depend on the
  // shard's prompts, so every prompt range of a job shares one entry.
  absl::StatusOr<std::map<std::string, torch::Tensor>> DatasetMeans(
      const std::vector<std::string>& hooks, const Dataset& mean_of);
  absl::Status Interventions(SearchOutput* out);
  absl::StatusOr<torch::Tensor> EvaluateNaive(const Edit& e);
  absl::StatusOr<torch::Tensor> EvaluatePacked(const std::vector<Edit>& edits);
  absl::Status Attribution(SearchOutput* out);
  absl::StatusOr<torch::Tensor> AttributionScores(const std::string& hook,
                                                  const torch::Tensor& product) const;
  std::vector<std::string> SourceHooks() const;

  const HookedTransformer& model_;
  const HookedTransformerConfig& cfg_;
  const Dataset& dataset_;
  SearchSpec spec_;
  SearchOptions options_;
  int64_t p_begin_ = 0, p_end_ = 0, c_begin_ = 0, c_end_ = 0;
  PromptBatch batch_;
  const ForwardInput* base_ = nullptr;     // the unintervened input
  std::vector<torch::Tensor> base_resid_;  // resid_pre of each layer of the base run
  Sources sources_;
  std::vector<int64_t> group_components_;  // component index of each pending edit
  SearchResult result_;
  SearchCounts* counts_ = &result_.counts;
};

std::vector<std::string> SearchRun::SourceHooks() const {
  std::vector<std::string> hooks;
  for (int l = 0; l < cfg_.n_layers; ++l) {
    if (spec_.method == Method::kAblateLayers) {
      hooks.push_back(HookAt(l, "hook_attn_out"));
      if (!cfg_.attn_only) hooks.push_back(HookAt(l, "hook_mlp_out"));
    } else {
      hooks.push_back(HookAt(l, MethodHook(spec_.method, 0)));
    }
  }
  return hooks;
}

absl::Status SearchRun::Validate() const {
  if ((spec_.method == Method::kPatchMlpOut || spec_.method == Method::kAttributeMlpOut) &&
      cfg_.attn_only) {
    return absl::InvalidArgumentError(
        absl::StrCat(MethodName(spec_.method), ": this model has no MLPs (attention-only)"));
  }
  if (spec_.metric == MetricKind::kLoss && dataset_.max_length() < 2) {
    return absl::InvalidArgumentError("the loss metric needs prompts of at least 2 tokens");
  }
  return absl::OkStatus();
}

// What a base run leaves for the interventions, as BaseRunCache keeps it:
// immutable once stored, read by any number of searches at once.
struct CachedBaseRun {
  torch::Tensor clean_log_probs;          // batch_.targets.clean_log_probs
  std::vector<torch::Tensor> base_resid;  // SearchRun::base_resid_
  std::map<std::string, torch::Tensor> sources;
  torch::Tensor baseline, reference;  // result_'s
};

// Bytes of memory a cached base run keeps alive.
int64_t HeldBytes(const CachedBaseRun& run) {
  std::vector<torch::Tensor> tensors = run.base_resid;
  tensors.insert(tensors.end(), {run.clean_log_probs, run.baseline, run.reference});
  for (const auto& [hook, t] : run.sources) tensors.push_back(t);
  return StorageBytes(tensors);
}

// The cache key of this search's base run: a hash of everything the base run
// depends on (BaseRuns reads nothing else), so that equal keys mean equal runs.
std::string SearchRun::BaseRunKey() const {
  if (!CachesBaseRuns(options_)) return "";
  lensgrid::BaseRunKey key("lensgrid base run v1");
  key.Str(options_.base_run_scope)
      .Str(MethodName(spec_.method))
      .Str(MetricName(spec_.metric))
      .Str(AblationName(spec_.ablation))
      .Prompts(dataset_, p_begin_, p_end_);
  if (!IsPatching(spec_.method) && spec_.ablation == AblationKind::kMean) {
    const Dataset& mean_of = options_.mean_dataset != nullptr ? *options_.mean_dataset : dataset_;
    key.Prompts(mean_of, 0, static_cast<int64_t>(mean_of.prompts.size()));
  }
  return key.Hex();
}

absl::Status SearchRun::BaseRuns() {
  const bool patching = IsPatching(spec_.method);
  const bool need_corrupted = patching || spec_.ablation == AblationKind::kResample;
  LG_ASSIGN_OR_RETURN(batch_, MakePromptBatch(dataset_, p_begin_, p_end_, need_corrupted,
                                              cfg_.d_vocab, cfg_.bos_token_id));
  base_ = patching ? &batch_.corrupted : &batch_.clean;
  const std::string key = BaseRunKey();
  if (!key.empty()) {
    auto hit = std::static_pointer_cast<const CachedBaseRun>(options_.base_run_cache->Find(key));
    if (hit != nullptr) {
      batch_.targets.clean_log_probs = hit->clean_log_probs;
      base_resid_ = hit->base_resid;
      sources_.by_hook = hit->sources;
      // The result's own tensors: what a caller does with them stays out of the cache.
      result_.baseline = hit->baseline.clone();
      if (hit->reference.defined()) result_.reference = hit->reference.clone();
      counts_->base_runs_reused += 1;
      return absl::OkStatus();
    }
  }
  LG_RETURN_IF_ERROR(RunBase());
  if (!key.empty()) {
    auto run = std::make_shared<CachedBaseRun>();
    run->clean_log_probs = batch_.targets.clean_log_probs;
    run->base_resid = base_resid_;
    run->sources = sources_.by_hook;
    run->baseline = result_.baseline.clone();
    if (result_.reference.defined()) run->reference = result_.reference.clone();
    const int64_t bytes = HeldBytes(*run);
    options_.base_run_cache->Insert(key, std::move(run), bytes);
  }
  return absl::OkStatus();
}

absl::Status SearchRun::RunBase() {
  const bool patching = IsPatching(spec_.method);
  const std::vector<std::string> source_hooks = SourceHooks();

  // The clean run: metric reference, KL target, and the patching sources.
  CacheOptions clean_cache;
  clean_cache.predicate = [&](const std::string& n) {
    if (patching)
      return std::find(source_hooks.begin(), source_hooks.end(), n) != source_hooks.end();
    return n.size() > 14 && n.compare(n.size() - 14, 14, "hook_resid_pre") == 0;
  };
  ActivationCache cache;
  LG_ASSIGN_OR_RETURN(RunOutput clean, RunModel(batch_.clean, {}, &clean_cache, &cache));
  batch_.targets.clean_log_probs = torch::log_softmax(clean.logits.select(1, -1), -1);
  torch::Tensor clean_metric = ComputeMetric(spec_.metric, clean.logits, batch_.targets);
  if (patching) {
    for (const auto& h : source_hooks) sources_.by_hook[h] = cache.Get(h).value();
    ActivationCache corrupted_cache;
    CacheOptions resid_only;
    resid_only.regexes = {"hook_resid_pre$"};
    LG_ASSIGN_OR_RETURN(RunOutput corrupted,
                        RunModel(batch_.corrupted, {}, &resid_only, &corrupted_cache));
    for (int l = 0; l < cfg_.n_layers; ++l) {
      base_resid_.push_back(corrupted_cache.Get(HookAt(l, "hook_resid_pre")).value());
    }
    result_.baseline = ComputeMetric(spec_.metric, corrupted.logits, batch_.targets);
    result_.reference = clean_metric;
    return absl::OkStatus();
  }
  for (int l = 0; l < cfg_.n_layers; ++l) {
    base_resid_.push_back(cache.Get(HookAt(l, "hook_resid_pre")).value());
  }
  result_.baseline = clean_metric;
  if (spec_.ablation == AblationKind::kZero) return absl::OkStatus();
  CacheOptions source_cache;
  source_cache.predicate = [&](const std::string& n) {
    return std::find(source_hooks.begin(), source_hooks.end(), n) != source_hooks.end();
  };
  if (spec_.ablation == AblationKind::kResample) {
    ActivationCache c;
    LG_RETURN_IF_ERROR(RunModel(batch_.corrupted, {}, &source_cache, &c).status());
    for (const auto& h : source_hooks) sources_.by_hook[h] = c.Get(h).value();
    return absl::OkStatus();
  }
  // Mean ablation: the mean over the whole dataset, whatever this shard's prompts.
  const Dataset& mean_of = options_.mean_dataset != nullptr ? *options_.mean_dataset : dataset_;
  if (mean_of.max_length() != dataset_.max_length()) {
    return absl::InvalidArgumentError(
        absl::StrCat("mean ablation: the mean's prompts pad to ", mean_of.max_length(),
                     " positions, the shard's to ", dataset_.max_length()));
  }
  LG_ASSIGN_OR_RETURN(sources_.by_hook, DatasetMeans(source_hooks, mean_of));
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, torch::Tensor>> SearchRun::DatasetMeans(
    const std::vector<std::string>& hooks, const Dataset& mean_of) {
  std::string key;
  if (CachesBaseRuns(options_)) {
    // Everything the means depend on: the model, which hooks, every prompt of
    // the mean (their padded length included).
    lensgrid::BaseRunKey k("lensgrid dataset mean v1");
    k.Str(options_.base_run_scope).Int(static_cast<int64_t>(hooks.size()));
    for (const std::string& h : hooks) k.Str(h);
    key = k.Prompts(mean_of, 0, static_cast<int64_t>(mean_of.prompts.size())).Hex();
    using Means = std::map<std::string, torch::Tensor>;
    auto hit = std::static_pointer_cast<const Means>(options_.base_run_cache->Find(key));
    if (hit != nullptr) {
      counts_->means_reused += 1;
      return *hit;  // immutable: the search only reads its sources
    }
  }
  LG_ASSIGN_OR_RETURN(PromptBatch all, MakePromptBatch(mean_of, 0, mean_of.prompts.size(), false,
                                                       cfg_.d_vocab, cfg_.bos_token_id));
  ForwardOptions none;
  none.return_type = ForwardReturn::kNone;
  CacheOptions only_hooks;
  only_hooks.predicate = [&](const std::string& n) {
    return std::find(hooks.begin(), hooks.end(), n) != hooks.end();
  };
  ActivationCache c;
  LG_RETURN_IF_ERROR(RunModel(all.clean, none, &only_hooks, &c).status());
  auto means = std::make_shared<std::map<std::string, torch::Tensor>>();
  std::vector<torch::Tensor> held;
  for (const auto& h : hooks) {
    held.push_back((*means)[h] = MaskedMean(c.Get(h).value(), all.clean.attention_mask));
  }
  if (!key.empty()) options_.base_run_cache->Insert(key, means, StorageBytes(held));
  return *means;
}

absl::StatusOr<torch::Tensor> SearchRun::EvaluateNaive(const Edit& e) {
  ForwardOptions opts;  // full forward from the tokens, every position unembedded
  NamedHook hook{e.hook, [&e](const torch::Tensor& act, const HookPointImpl&) {
                   torch::Tensor out = act.clone();
                   ApplyEdit(e.edit, out, e.source);
                   return std::optional<torch::Tensor>(out);
                 }};
  LG_ASSIGN_OR_RETURN(RunOutput out, RunModel(*base_, opts, nullptr, nullptr, {hook}));
  return ComputeMetric(spec_.metric, out.logits, batch_.targets);  // [n]
}

absl::StatusOr<torch::Tensor> SearchRun::EvaluatePacked(const std::vector<Edit>& edits) {
  const int64_t k = static_cast<int64_t>(edits.size());
  const int64_t n = static_cast<int64_t>(batch_.prompts.size());
  const int layer = edits.front().layer;
  ForwardInput in;
  in.residual = base_resid_[layer].repeat({k, 1, 1});
  in.attention_mask = base_->attention_mask.repeat({k, 1});
  ForwardOptions opts;
  opts.start_at_layer = layer;
  if (MetricNeedsAllPositions(spec_.metric)) {
    in.tokens = base_->tokens.repeat({k, 1});
  } else {
    opts.logit_positions = torch::full({k * n}, batch_.pos - 1, torch::kInt64);
  }
  NamedHook hook{edits.front().hook, [&edits, n](const torch::Tensor& act, const HookPointImpl&) {
                   torch::Tensor out = act.clone();
                   for (size_t i = 0; i < edits.size(); ++i) {
                     ApplyEdit(edits[i].edit, out.narrow(0, i * n, n), edits[i].source);
                   }
                   return std::optional<torch::Tensor>(out);
                 }};
  LG_ASSIGN_OR_RETURN(RunOutput out, RunModel(in, opts, nullptr, nullptr, {hook}));
  return ComputeMetric(spec_.metric, out.logits, batch_.targets).view({k, n});
}

absl::Status SearchRun::Interventions(SearchOutput* out) {
  const int64_t n = static_cast<int64_t>(batch_.prompts.size());
  out->per_prompt = torch::zeros({n, c_end_ - c_begin_});
  std::vector<Edit> group;
  auto flush = [&]() -> absl::Status {
    if (group.empty()) return absl::OkStatus();
    LG_ASSIGN_OR_RETURN(torch::Tensor metric, EvaluatePacked(group));  // [k, n]
    for (size_t i = 0; i < group.size(); ++i) {
      out->per_prompt.select(1, group_components_[i] - c_begin_) = metric[i] - result_.baseline;
    }
    group.clear();
    group_components_.clear();
    return absl::OkStatus();
  };
  int64_t max_k = std::max<int64_t>(1, options_.max_batch_tokens / (n * batch_.pos));
  if (MetricNeedsAllPositions(spec_.metric)) {
    // Every position is unembedded: bound the packed logits too (GPT-2's vocabulary at 16384
    // tokens would be 3.3 GB a tensor, and the loss makes two more of them).
    constexpr int64_t kMaxPackedLogitBytes = int64_t{256} << 20;
    const int64_t logit_tokens = kMaxPackedLogitBytes / (cfg_.d_vocab * int64_t{sizeof(float)});
    max_k = std::max<int64_t>(1, std::min(max_k, logit_tokens / (n * batch_.pos)));
  }
  for (int64_t c = c_begin_; c < c_end_; ++c) {
    Edit e = MakeEdit(spec_.method, cfg_, batch_.pos, c);
    if (e.edit.positions.defined()) e.edit.positions = e.edit.positions.to(model_.device());
    if (spec_.method != Method::kAblateHeads && spec_.method != Method::kAblateLayers) {
      e.source = sources_.by_hook.at(e.hook);
    } else if (spec_.ablation != AblationKind::kZero) {
      e.source = sources_.by_hook.at(e.hook);
    }
    if (e.source.defined()) e.edit.op = EditOp::kPatch;
    if (options_.naive) {
      LG_ASSIGN_OR_RETURN(torch::Tensor metric, EvaluateNaive(e));
      out->per_prompt.select(1, c - c_begin_) = metric - result_.baseline;
      continue;
    }
    if (!group.empty() &&
        (group.front().hook != e.hook || static_cast<int64_t>(group.size()) >= max_k)) {
      LG_RETURN_IF_ERROR(flush());
    }
    group.push_back(std::move(e));
    group_components_.push_back(c);
  }
  return flush();
}

// The score of each component of one layer from (clean - corrupted) x grad at
// `hook` ([n, pos, ...]): summed over the region the exact method patches.
// Returns [n, components of the layer], in the grid's row-major order.
absl::StatusOr<torch::Tensor> SearchRun::AttributionScores(const std::string& hook,
                                                           const torch::Tensor& product) const {
  const int64_t n = product.size(0);
  switch (spec_.method) {
    case Method::kAttributeHeads:  // hook_z [n, pos, head, d_head]: one head, every position
      return product.sum({1, 3});
    case Method::kAttributeHeadsByPos:  // one head at one position: [n, pos, head]
      return product.sum(3).reshape({n, -1});
    case Method::kAttributeResid:  // [n, pos, d_model] at one position
    case Method::kAttributeAttnOut:
    case Method::kAttributeMlpOut:
      return product.sum(2);
    case Method::kAblateHeads:
    case Method::kAblateLayers:
    case Method::kPatchResid:
    case Method::kPatchAttnOut:
    case Method::kPatchMlpOut:
    case Method::kPatchHeads:
    case Method::kPatchHeadsByPos:
    case Method::kPatchPattern:
    case Method::kDetectHeads:
    case Method::kDla:
    case Method::kEap:
    case Method::kEapIg:
    case Method::kPathPatch:
    case Method::kCircuitFaithfulness:
    case Method::kAcdc:
    case Method::kAcdcStep:
      break;
  }
  return absl::InternalError(
      absl::StrCat(MethodName(spec_.method), " is not attribution patching (", hook, ")"));
}

// Attribution patching, prompt batch by prompt batch (max_batch_tokens bounds
// batch x pos, so the backward's saved activations stay bounded): a clean run
// caching the hook of every layer, the corrupted run with gradients at the
// same hooks, and the products. The objective is the sum over rows of the
// per-prompt metric; rows do not interact, so row r's gradient is prompt r's.
absl::Status SearchRun::Attribution(SearchOutput* out) {
  const int64_t pos = dataset_.max_length();
  const int64_t per_batch =
      std::max<int64_t>(1, options_.max_batch_tokens / std::max<int64_t>(1, pos));
  const std::vector<std::string> hooks = SourceHooks();  // one per layer, forward order
  std::vector<torch::Tensor> scores, baseline, reference;
  for (int64_t b = p_begin_; b < p_end_; b += per_batch) {
    if (options_.is_cancelled && options_.is_cancelled()) {
      return absl::CancelledError("search cancelled");
    }
    const int64_t e = std::min(b + per_batch, p_end_), n = e - b;
    LG_ASSIGN_OR_RETURN(PromptBatch batch, MakePromptBatch(dataset_, b, e, /*need_corrupted=*/true,
                                                           cfg_.d_vocab, cfg_.bos_token_id));
    ForwardOptions opts;
    if (!MetricNeedsAllPositions(spec_.metric)) {
      opts.logit_positions = torch::full({n}, batch.pos - 1, torch::kInt64);
    }
    CacheOptions cache_opts;
    cache_opts.names = hooks;
    ActivationCache clean_cache;
    LG_ASSIGN_OR_RETURN(RunOutput clean, RunModel(batch.clean, opts, &cache_opts, &clean_cache));
    batch.targets.clean_log_probs = torch::log_softmax(clean.logits.select(1, -1), -1);
    reference.push_back(ComputeMetric(spec_.metric, clean.logits, batch.targets));

    torch::Tensor corrupted_metric;
    GradientRequest request;
    request.hooks = hooks;
    request.objective = [&](const RunOutput& run) -> absl::StatusOr<at::Tensor> {
      torch::Tensor m = ComputeMetric(spec_.metric, run.logits, batch.targets);  // [n]
      corrupted_metric = m.detach();
      return m.sum();
    };
    ForwardOptions grad_opts = opts;
    grad_opts.is_cancelled = options_.is_cancelled;
    Count(batch.corrupted, grad_opts);
    counts_->backwards += 1;
    ActivationCache grads, corrupted_cache;
    LG_RETURN_IF_ERROR(
        RunWithGradients(model_, batch.corrupted, grad_opts, request, &grads, &corrupted_cache)
            .status());
    baseline.push_back(corrupted_metric);

    std::vector<torch::Tensor> layers;
    for (const std::string& h : hooks) {
      LG_ASSIGN_OR_RETURN(torch::Tensor clean_act, clean_cache.Get(h));
      LG_ASSIGN_OR_RETURN(torch::Tensor corrupted_act, corrupted_cache.Get(h));
      LG_ASSIGN_OR_RETURN(torch::Tensor grad, grads.Get(h));
      const torch::Tensor product =
          (clean_act.to(torch::kFloat64) - corrupted_act.to(torch::kFloat64)) *
          grad.to(torch::kFloat64);
      LG_ASSIGN_OR_RETURN(torch::Tensor layer, AttributionScores(h, product));
      layers.push_back(std::move(layer));
    }
    scores.push_back(torch::cat(layers, 1));
  }
  out->per_prompt = torch::cat(scores, 0).to(torch::kFloat32).cpu();
  result_.baseline = torch::cat(baseline, 0);
  result_.reference = torch::cat(reference, 0);
  if (out->per_prompt.size(1) != c_end_ - c_begin_) {
    return absl::InternalError(absl::StrCat("attribution: ", out->per_prompt.size(1),
                                            " scores per prompt for a grid of ",
                                            c_end_ - c_begin_));
  }
  return absl::OkStatus();
}

absl::StatusOr<SearchResult> SearchRun::Run() {
  LG_RETURN_IF_ERROR(Validate());
  const int64_t n_prompts = static_cast<int64_t>(dataset_.prompts.size());
  p_begin_ = options_.prompt_begin;
  p_end_ = options_.prompt_end < 0 ? n_prompts : options_.prompt_end;
  if (p_begin_ < 0 || p_begin_ >= p_end_ || p_end_ > n_prompts) {
    return absl::InvalidArgumentError(absl::StrCat("prompt range [", p_begin_, ", ", p_end_,
                                                   ") is not within [0, ", n_prompts, ")"));
  }
  result_.spec = spec_;
  result_.outputs = SearchOutputs(spec_, cfg_, dataset_.max_length());
  int64_t n_components = 1;
  for (int64_t d : result_.outputs.front().shape) n_components *= d;
  const bool whole_grid = ShardsByPromptsOnly(spec_.method);
  c_begin_ = options_.component_begin;
  c_end_ = options_.component_end < 0 ? n_components : options_.component_end;
  if (c_begin_ < 0 || c_begin_ >= c_end_ || c_end_ > n_components ||
      (whole_grid && (c_begin_ != 0 || c_end_ != n_components))) {
    return absl::InvalidArgumentError(
        absl::StrCat("component range [", c_begin_, ", ", c_end_, ") is not within [0, ",
                     n_components, ")", whole_grid ? " (this method shards by prompts only)" : ""));
  }
  result_.prompt_begin = p_begin_;
  result_.component_begin = c_begin_;
  try {
    torch::NoGradGuard no_grad;
    if (IsCircuit(spec_.method)) {
      LG_RETURN_IF_ERROR(RunCircuitSearch(model_, dataset_, spec_, options_, p_begin_, p_end_,
                                          c_begin_, c_end_, &result_));
    } else if (IsAttribution(spec_.method)) {
      LG_RETURN_IF_ERROR(Attribution(&result_.outputs.front()));
    } else if (whole_grid) {
      LG_ASSIGN_OR_RETURN(batch_, MakePromptBatch(dataset_, p_begin_, p_end_, false, cfg_.d_vocab,
                                                  cfg_.bos_token_id));
      counts_->forwards += 1;
      counts_->block_rows += (p_end_ - p_begin_) * cfg_.n_layers;
      LG_RETURN_IF_ERROR(spec_.method == Method::kDetectHeads
                             ? DetectHeads(model_, batch_, spec_.metric, &result_)
                             : DirectLogitAttribution(model_, batch_, spec_.metric, &result_));
    } else {
      LG_RETURN_IF_ERROR(BaseRuns());
      LG_RETURN_IF_ERROR(Interventions(&result_.outputs.front()));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("search: ", e.what_without_backtrace()));
  }
  return result_;
}

}  // namespace

std::vector<SearchOutput> SearchOutputs(const SearchSpec& spec, const HookedTransformerConfig& cfg,
                                        int64_t n_pos) {
  std::vector<SearchOutput> outputs;
  for (Grid& g : MethodGrids(spec.method, {cfg.n_layers, cfg.n_heads, cfg.attn_only}, n_pos)) {
    SearchOutput o;
    o.name = std::move(g.name);
    o.axes = std::move(g.axes);
    o.shape = std::move(g.shape);
    outputs.push_back(std::move(o));
  }
  return outputs;
}

bool CachesBaseRuns(const SearchOptions& options) {
  return options.base_run_cache != nullptr && !options.base_run_scope.empty() &&
         options.base_run_cache->budget_bytes() > 0;
}

int64_t StorageBytes(const std::vector<at::Tensor>& tensors) {
  std::set<const void*> seen;
  int64_t bytes = 0;
  for (const at::Tensor& t : tensors) {
    if (t.defined() && seen.insert(t.storage().data()).second) {
      bytes += static_cast<int64_t>(t.storage().nbytes());
    }
  }
  return bytes;
}

absl::StatusOr<SearchResult> RunSearch(const HookedTransformer& model, const Dataset& dataset,
                                       const SearchSpec& spec, const SearchOptions& options) {
  SearchRun run(model, dataset, spec, options);
  LG_ASSIGN_OR_RETURN(SearchResult r, run.Run());
  const bool whole = r.prompt_begin == 0 && r.outputs.front().per_prompt.size(0) ==
                                                static_cast<int64_t>(dataset.prompts.size());
  for (auto& o : r.outputs) {
    int64_t n = 1;
    for (int64_t d : o.shape) n *= d;
    if (whole && r.component_begin == 0 && o.per_prompt.size(1) == n) {
      o.mean = o.per_prompt.mean(0).view(o.shape);
    }
  }
  return r;
}

}  // namespace lensgrid
