#include "worker/model/analysis/shard.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/json_limits.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace lensgrid {
namespace {

absl::StatusOr<int64_t> IntField(const nlohmann::json& j, const char* key, int64_t dflt) {
  auto it = j.find(key);
  if (it == j.end()) return dflt;
  if (!it->is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat("spec field \"", key, "\" must be an integer"));
  }
  return it->get<int64_t>();
}

absl::StatusOr<std::string> StringField(const nlohmann::json& j, const char* key,
                                        const char* dflt) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (dflt != nullptr) return std::string(dflt);
    return absl::InvalidArgumentError(absl::StrCat("spec needs \"", key, "\""));
  }
  if (!it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat("spec field \"", key, "\" must be a string"));
  }
  return it->get<std::string>();
}

}  // namespace

absl::StatusOr<SearchRequest> ParseSearchRequest(const std::string& spec_json) {
  LG_ASSIGN_OR_RETURN(nlohmann::json j, ParseJsonBounded(spec_json, "search spec"));
  if (!j.is_object()) {
    return absl::InvalidArgumentError("search spec is not a JSON object");
  }
  SearchRequest r;
  LG_ASSIGN_OR_RETURN(std::string method, StringField(j, "method", nullptr));
  LG_ASSIGN_OR_RETURN(r.spec.method, ParseMethod(method));
  LG_ASSIGN_OR_RETURN(std::string metric, StringField(j, "metric", "logit-diff"));
  LG_ASSIGN_OR_RETURN(r.spec.metric, ParseMetric(metric));
  LG_ASSIGN_OR_RETURN(std::string ablation, StringField(j, "ablation", "zero"));
  LG_ASSIGN_OR_RETURN(r.spec.ablation, ParseAblation(ablation));
  auto ds = j.find("dataset");
  if (ds == j.end() || !ds->is_object()) {
    return absl::InvalidArgumentError("spec needs a \"dataset\" object");
  }
  if (auto prompts = ds->find("prompts"); prompts != ds->end()) {
    if (!prompts->is_array()) {
      return absl::InvalidArgumentError("dataset \"prompts\" must be an array");
    }
    for (const auto& p : *prompts) r.inline_prompts_jsonl += p.dump() + "\n";
    r.dataset.name = "inline";
    r.dataset.n_prompts = static_cast<int64_t>(prompts->size());
  } else {
    LG_ASSIGN_OR_RETURN(r.dataset.name, StringField(*ds, "name", nullptr));
    LG_ASSIGN_OR_RETURN(r.dataset.n_prompts, IntField(*ds, "n_prompts", 16));
    LG_ASSIGN_OR_RETURN(int64_t seed, IntField(*ds, "seed", 0));
    r.dataset.seed = static_cast<uint64_t>(seed);
    LG_ASSIGN_OR_RETURN(r.dataset.seq_len, IntField(*ds, "seq_len", 16));
  }
  LG_ASSIGN_OR_RETURN(r.options.prompt_begin, IntField(j, "prompt_begin", 0));
  LG_ASSIGN_OR_RETURN(r.options.prompt_end, IntField(j, "prompt_end", -1));
  LG_ASSIGN_OR_RETURN(r.options.component_begin, IntField(j, "component_begin", 0));
  LG_ASSIGN_OR_RETURN(r.options.component_end, IntField(j, "component_end", -1));
  return r;
}

absl::StatusOr<Dataset> MakeRequestDataset(const SearchRequest& request, const ModelConfig& cfg,
                                           const Tokenizer* tokenizer) {
  if (request.dataset.name != "inline") return MakeDataset(request.dataset, cfg, tokenizer);
  LG_ASSIGN_OR_RETURN(Dataset ds, ParseJsonlDataset(request.inline_prompts_jsonl,
                                                    "inline prompt", cfg, tokenizer));
  if (ds.prompts.empty()) return absl::InvalidArgumentError("the inline dataset has no prompts");
  return ds;
}

absl::StatusOr<PreparedShard> PrepareSearchShard(const ModelConfig& cfg,
                                                 const Tokenizer* tokenizer,
                                                 const std::string& spec_json,
                                                 const ShardLimits& limits) {
  PreparedShard shard;
  LG_ASSIGN_OR_RETURN(shard.request, ParseSearchRequest(spec_json));
  const DatasetSpec& ds = shard.request.dataset;
  if (ds.n_prompts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("the shard's dataset has ", ds.n_prompts, " prompts"));
  }
  if (ds.n_prompts > limits.max_dataset_prompts) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the shard's dataset has ", ds.n_prompts, " prompts, over this worker's limit of ",
        limits.max_dataset_prompts));
  }
  if (ds.name != "inline" && (ds.seq_len < 1 || ds.seq_len > cfg.n_ctx)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset seq_len ", ds.seq_len, " is not within [1, ", cfg.n_ctx,
        "] (the model's n_ctx)"));
  }
  const SearchOptions& range = shard.request.options;
  const int64_t p_end = range.prompt_end < 0 ? ds.n_prompts : range.prompt_end;
  if (range.prompt_begin < 0 || range.prompt_begin >= p_end || p_end > ds.n_prompts) {
    return absl::InvalidArgumentError(absl::StrCat("prompt range [", range.prompt_begin, ", ",
                                                   p_end, ") is not within [0, ", ds.n_prompts,
                                                   ")"));
  }
  const int64_t n_prompts = p_end - range.prompt_begin;
  auto too_many_tokens = [&](int64_t n_pos) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the shard runs ", n_prompts, " prompts x ", n_pos, " positions = ", n_prompts * n_pos,
        " tokens, over this worker's limit of ", limits.max_prompt_tokens,
        " (--max-tokens); use smaller shards (--prompts-per-shard)"));
  };
  // Every prompt has a token: refuse before building a huge dataset.
  if (n_prompts > limits.max_prompt_tokens) return too_many_tokens(1);
  LG_ASSIGN_OR_RETURN(shard.dataset, MakeRequestDataset(shard.request, cfg, tokenizer));
  const int64_t n_pos = shard.dataset.max_length();
  if (n_prompts * n_pos > limits.max_prompt_tokens) return too_many_tokens(n_pos);
  double bytes = 2.0 * n_prompts * sizeof(float);  // baseline, reference
  for (const SearchOutput& o : SearchOutputs(shard.request.spec, cfg, n_pos)) {
    double n = 1;
    for (int64_t d : o.shape) n *= d;
    if (range.component_end >= 0) n = std::min<double>(n, range.component_end);
    n -= std::min<double>(n, std::max<int64_t>(0, range.component_begin));
    bytes += n * n_prompts * sizeof(float);
  }
  if (bytes > static_cast<double>(limits.max_result_bytes)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the shard's result would hold ", static_cast<int64_t>(bytes), " bytes, over ",
        limits.max_result_bytes, " (--max-response-bytes); use smaller shards"));
  }
  shard.result_bytes = static_cast<int64_t>(bytes);
  return shard;
}

absl::StatusOr<NamedTensors> RunSearchShard(const HookedTransformer& model,
                                            const Tokenizer* tokenizer,
                                            const std::string& spec_json,
                                            std::function<bool()> is_cancelled,
                                            const ShardLimits& limits) {
  LG_ASSIGN_OR_RETURN(PreparedShard shard,
                      PrepareSearchShard(model.cfg(), tokenizer, spec_json, limits));
  return RunPreparedShard(model, shard, std::move(is_cancelled));
}

absl::StatusOr<NamedTensors> RunPreparedShard(const HookedTransformer& model,
                                              const PreparedShard& shard,
                                              std::function<bool()> is_cancelled) {
  SearchOptions options = shard.request.options;
  options.is_cancelled = std::move(is_cancelled);
  LG_ASSIGN_OR_RETURN(SearchResult result,
                      RunSearch(model, shard.dataset, shard.request.spec, options));
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
