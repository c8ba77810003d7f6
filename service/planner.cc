#include "service/planner.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace lensgrid::service {

namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

absl::Status ValidatePrompts(const v1::JobSpec& spec) {
  if (spec.prompts_size() == 0)
    return absl::InvalidArgumentError("the job has no prompts");
  for (int i = 0; i < spec.prompts_size(); ++i) {
    const v1::InlinePrompt& p = spec.prompts(i);
    if (p.tokens_size() == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt ", i, " has no tokens"));
    }
    if (p.corrupted_tokens_size() != 0 &&
        p.corrupted_tokens_size() != p.tokens_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt ", i, ": corrupted_tokens has ", p.corrupted_tokens_size(),
          " tokens, tokens has ", p.tokens_size()));
    }
    if (p.loss_start() < 0 || p.loss_start() >= p.tokens_size()) {
      if (p.loss_start() != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "prompt ", i, ": loss_start ", p.loss_start(), " is out of range"));
      }
    }
  }
  return absl::OkStatus();
}

std::string DatasetJson(const v1::JobSpec& spec) {
  nlohmann::json prompts = nlohmann::json::array();
  for (const v1::InlinePrompt& p : spec.prompts()) {
    nlohmann::json j;
    j["tokens"] = std::vector<int64_t>(p.tokens().begin(), p.tokens().end());
    if (p.corrupted_tokens_size() > 0) {
      j["corrupted_tokens"] = std::vector<int64_t>(p.corrupted_tokens().begin(),
                                                   p.corrupted_tokens().end());
    }
    if (p.answers_size() > 0)
      j["answers"] =
          std::vector<int64_t>(p.answers().begin(), p.answers().end());
    if (p.wrongs_size() > 0)
      j["wrongs"] = std::vector<int64_t>(p.wrongs().begin(), p.wrongs().end());
    if (p.loss_start() > 0) j["loss_start"] = p.loss_start();
    prompts.push_back(std::move(j));
  }
  return nlohmann::json{{"prompts", std::move(prompts)}}.dump();
}

}  // namespace

absl::StatusOr<JobPlan> PlanJob(const v1::JobSpec& spec,
                                const PlannerOptions& options) {
  if (spec.model_id().empty())
    return absl::InvalidArgumentError("model_id is empty");
  if (spec.weights_sha256().empty())
    return absl::InvalidArgumentError("weights_sha256 is empty");
  LG_RETURN_IF_ERROR(ValidatePrompts(spec));
  JobPlan plan;
  plan.method = spec.method();
  plan.metric = spec.metric().empty() ? "logit-diff" : spec.metric();
  plan.ablation = spec.ablation().empty() ? "zero" : spec.ablation();
  LG_RETURN_IF_ERROR(ValidateMetric(plan.metric));
  LG_RETURN_IF_ERROR(ValidateAblation(plan.ablation));
  plan.n_prompts = spec.prompts_size();
  int64_t total_tokens = 0;
  for (const v1::InlinePrompt& p : spec.prompts()) {
    plan.n_pos = std::max<int64_t>(plan.n_pos, p.tokens_size());
    total_tokens += p.tokens_size();
  }
  LG_ASSIGN_OR_RETURN(plan.grids, MethodGrids(plan.method,
                                              {spec.n_layers(), spec.n_heads(),
                                               spec.attn_only()},
                                              plan.n_pos));
  plan.patching = IsPatchingMethod(plan.method);
  plan.n_components = plan.grids.front().NumComponents();
  if (spec.prompts_per_shard() < 0 || spec.components_per_shard() < 0) {
    return absl::InvalidArgumentError("shard sizes must not be negative");
  }

  // Cost model: one (prompt, component) costs about the prompt's length in
  // token-forwards; a shard also pays a fixed base run over its prompts.
  const int64_t avg_len =
      std::max<int64_t>(1, CeilDiv(total_tokens, plan.n_prompts));
  int64_t prompts_per = spec.prompts_per_shard();
  if (prompts_per == 0)
    prompts_per = std::max<int64_t>(1, options.batch_tokens / avg_len);
  prompts_per = std::min(prompts_per, plan.n_prompts);
  int64_t components_per = spec.components_per_shard();
  if (ShardsByPromptsOnly(plan.method)) {
    components_per = plan.n_components;
  } else if (components_per == 0) {
    components_per =
        std::max<int64_t>(1, options.shard_cost / (prompts_per * avg_len));
  }
  components_per = std::min(components_per, plan.n_components);

  for (int64_t c = 0; c < plan.n_components; c += components_per) {
    for (int64_t p = 0; p < plan.n_prompts; p += prompts_per) {
      plan.shards.push_back({p, std::min(p + prompts_per, plan.n_prompts), c,
                             std::min(c + components_per, plan.n_components)});
    }
  }
  plan.dataset_json = DatasetJson(spec);
  return plan;
}

std::string ShardSpecJson(const JobPlan& plan, const ShardRange& r) {
  nlohmann::json head{{"method", plan.method},
                      {"metric", plan.metric},
                      {"ablation", plan.ablation}};
  std::string s = head.dump();
  s.pop_back();  // '}'
  absl::StrAppend(&s, ",\"dataset\":", plan.dataset_json,
                  ",\"prompt_begin\":", r.prompt_begin,
                  ",\"prompt_end\":", r.prompt_end,
                  ",\"component_begin\":", r.component_begin,
                  ",\"component_end\":", r.component_end, "}");
  return s;
}

}  // namespace lensgrid::service
