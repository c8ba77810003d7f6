#include "worker/model/analysis/shard.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
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
  nlohmann::json j = nlohmann::json::parse(spec_json, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
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

absl::StatusOr<NamedTensors> RunSearchShard(const HookedTransformer& model,
                                            const Tokenizer* tokenizer,
                                            const std::string& spec_json,
                                            std::function<bool()> is_cancelled) {
  LG_ASSIGN_OR_RETURN(SearchRequest request, ParseSearchRequest(spec_json));
  request.options.is_cancelled = std::move(is_cancelled);
  LG_ASSIGN_OR_RETURN(Dataset dataset, MakeRequestDataset(request, model.cfg(), tokenizer));
  LG_ASSIGN_OR_RETURN(SearchResult result,
                      RunSearch(model, dataset, request.spec, request.options));
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
