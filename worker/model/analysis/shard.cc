#include "worker/model/analysis/shard.h"

#include <torch/torch.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace lensgrid {
namespace {

absl::Status CheckIds(const std::vector<int64_t>& ids, const char* field, const Prompt& p,
                      const HookedTransformerConfig& cfg) {
  for (int64_t id : ids) {
    if (id < 0 || id >= cfg.d_vocab) {
      return absl::InvalidArgumentError(absl::StrCat(p.origin, ": ", field, " has ", id,
                                                     ", not a token id in [0, ", cfg.d_vocab, ")"));
    }
  }
  return absl::OkStatus();
}

// One prompt as the JSONL parser would accept it given as ids.
absl::Status CheckPrompt(Prompt* p, int64_t n_pos, const HookedTransformerConfig& cfg) {
  const int64_t len = static_cast<int64_t>(p->tokens.size());
  if (len == 0) return absl::InvalidArgumentError(absl::StrCat(p->origin, ": no tokens"));
  if (len > n_pos) {
    return absl::InvalidArgumentError(
        absl::StrCat(p->origin, ": ", len, " tokens, longer than the shard's n_pos ", n_pos));
  }
  if (!p->corrupted_tokens.empty() && p->corrupted_tokens.size() != p->tokens.size()) {
    return absl::InvalidArgumentError(absl::StrCat(p->origin, ": corrupted_tokens has ",
                                                   p->corrupted_tokens.size(),
                                                   " tokens, tokens has ", len));
  }
  if (p->answers.empty() || p->wrongs.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(p->origin, ": needs answers and wrongs"));
  }
  LG_RETURN_IF_ERROR(CheckIds(p->tokens, "tokens", *p, cfg));
  LG_RETURN_IF_ERROR(CheckIds(p->corrupted_tokens, "corrupted_tokens", *p, cfg));
  LG_RETURN_IF_ERROR(CheckIds(p->answers, "answers", *p, cfg));
  LG_RETURN_IF_ERROR(CheckIds(p->wrongs, "wrongs", *p, cfg));
  if (p->loss_start == 0) p->loss_start = 1;
  if (p->loss_start < 1 || (len > 1 && p->loss_start >= len)) {
    return absl::InvalidArgumentError(
        absl::StrCat(p->origin, ": loss_start ", p->loss_start, " is not in [1, ", len, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

bool NeedsMeanPrompts(const SearchSpec& spec) {
  return IsAblation(spec.method) && spec.ablation == AblationKind::kMean;
}

absl::StatusOr<PreparedShard> PrepareSearchShard(const HookedTransformerConfig& cfg, ShardTask task,
                                                 const ShardLimits& limits) {
  const int64_t carried = static_cast<int64_t>(task.prompts.size() + task.mean_prompts.size());
  if (carried > limits.max_dataset_prompts) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the shard carries ", carried, " prompts, over this worker's limit of ",
                     limits.max_dataset_prompts, " (--max-dataset-prompts)"));
  }
  if (task.n_prompts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("the shard's job has ", task.n_prompts, " prompts (n_prompts)"));
  }
  if (task.prompt_end == 0) task.prompt_end = task.n_prompts;
  if (task.prompt_begin < 0 || task.prompt_begin >= task.prompt_end ||
      task.prompt_end > task.n_prompts) {
    return absl::InvalidArgumentError(absl::StrCat("prompt range [", task.prompt_begin, ", ",
                                                   task.prompt_end, ") is not within [0, ",
                                                   task.n_prompts, ")"));
  }
  const int64_t n = task.prompt_end - task.prompt_begin;
  if (static_cast<int64_t>(task.prompts.size()) != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("the shard carries ", task.prompts.size(), " prompts for its range of ", n));
  }
  const bool needs_mean = NeedsMeanPrompts(task.spec);
  if (needs_mean && static_cast<int64_t>(task.mean_prompts.size()) != task.n_prompts) {
    return absl::InvalidArgumentError(
        absl::StrCat("mean ablation needs every prompt of the job in mean_prompts (",
                     task.n_prompts, "), got ", task.mean_prompts.size()));
  }
  if (!needs_mean && !task.mean_prompts.empty()) {
    return absl::InvalidArgumentError("mean_prompts is only for mean ablation");
  }
  if (task.n_pos == 0) {
    for (const auto* list : {&task.prompts, &task.mean_prompts}) {
      for (const Prompt& p : *list)
        task.n_pos = std::max<int64_t>(task.n_pos, static_cast<int64_t>(p.tokens.size()));
    }
  }
  if (task.n_pos < 1 || task.n_pos > cfg.n_ctx) {
    return absl::InvalidArgumentError(absl::StrCat("n_pos ", task.n_pos, " is not within [1, ",
                                                   cfg.n_ctx, "] (the model's n_ctx)"));
  }
  if (n > limits.max_prompt_tokens / task.n_pos) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the shard runs ", n, " prompts x ", task.n_pos, " positions = ", n * task.n_pos,
        " tokens, over this worker's limit of ", limits.max_prompt_tokens,
        " (--max-tokens); use smaller shards (--prompts-per-shard)"));
  }
  for (size_t i = 0; i < task.prompts.size(); ++i) {
    Prompt& p = task.prompts[i];
    if (p.origin.empty()) p.origin = absl::StrCat("prompt #", task.prompt_begin + i);
    LG_RETURN_IF_ERROR(CheckPrompt(&p, task.n_pos, cfg));
  }
  for (size_t i = 0; i < task.mean_prompts.size(); ++i) {
    Prompt& p = task.mean_prompts[i];
    if (p.origin.empty()) p.origin = absl::StrCat("mean prompt #", i);
    LG_RETURN_IF_ERROR(CheckPrompt(&p, task.n_pos, cfg));
  }

  const std::vector<SearchOutput> outputs = SearchOutputs(task.spec, cfg, task.n_pos);
  const int64_t n_components = c10::multiply_integers(outputs.front().shape);
  if (task.component_end == 0) task.component_end = n_components;
  if (task.component_begin < 0 || task.component_begin >= task.component_end ||
      task.component_end > n_components) {
    return absl::InvalidArgumentError(absl::StrCat("component range [", task.component_begin, ", ",
                                                   task.component_end, ") is not within [0, ",
                                                   n_components, ")"));
  }
  double bytes = 2.0 * n * sizeof(float);  // baseline, reference
  for (size_t k = 0; k < outputs.size(); ++k) {
    // The first grid is cut by the range; the others (whole-grid methods) are whole.
    const double c = k == 0 ? task.component_end - task.component_begin
                            : c10::multiply_integers(outputs[k].shape);
    bytes += c * n * sizeof(float);
  }
  if (bytes > static_cast<double>(limits.max_result_bytes)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the shard's result would hold ", static_cast<int64_t>(bytes), " bytes, over ",
                     limits.max_result_bytes, " (--max-response-bytes); use smaller shards"));
  }

  PreparedShard shard;
  shard.spec = task.spec;
  shard.dataset.name = "shard";
  shard.dataset.prompts = std::move(task.prompts);
  shard.dataset.pad_length = task.n_pos;
  shard.mean_dataset.name = "job";
  shard.mean_dataset.prompts = std::move(task.mean_prompts);
  shard.mean_dataset.pad_length = task.n_pos;
  shard.component_begin = task.component_begin;
  shard.component_end = task.component_end;
  shard.result_bytes = static_cast<int64_t>(bytes);
  return shard;
}

absl::StatusOr<NamedTensors> RunPreparedShard(const HookedTransformer& model,
                                              const PreparedShard& shard,
                                              std::function<bool()> is_cancelled,
                                              BaseRunCache* base_runs, const std::string& scope) {
  SearchOptions options;
  options.base_run_cache = base_runs;
  options.base_run_scope = scope;
  options.component_begin = shard.component_begin;
  options.component_end = shard.component_end;
  if (!shard.mean_dataset.prompts.empty()) options.mean_dataset = &shard.mean_dataset;
  options.is_cancelled = std::move(is_cancelled);
  LG_ASSIGN_OR_RETURN(SearchResult result, RunSearch(model, shard.dataset, shard.spec, options));
  NamedTensors out;
  out.emplace_back("baseline", result.baseline.to(torch::kFloat32).cpu());
  if (result.reference.defined()) {
    out.emplace_back("reference", result.reference.to(torch::kFloat32).cpu());
  }
  for (const auto& o : result.outputs) {
    out.emplace_back(o.name, o.per_prompt.to(torch::kFloat32).cpu());
  }
  return out;
}

}  // namespace lensgrid
