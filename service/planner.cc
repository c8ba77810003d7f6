#include "service/planner.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/echo.h"
#include "common/error_details.h"
#include "common/search_proto.h"
#include "common/status_macros.h"
#include "google/protobuf/field_mask.pb.h"
#include "google/protobuf/util/field_mask_util.h"

// Reads the deprecated name fields on purpose: what older clients send.
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

namespace lensgrid::service {

namespace {

constexpr int64_t kFloatBytes = 4;
// A ShardSpec's fields around its prompts (three enums, six integers) and the
// lease message around the spec: well under this.
constexpr int64_t kShardSpecOverhead = 256;

// a * b, or nullopt when it overflows.
std::optional<int64_t> Mul(int64_t a, int64_t b) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// REQUIRES: a >= 0, b > 0. Never overflows.
int64_t CeilDiv(int64_t a, int64_t b) { return a / b + (a % b != 0 ? 1 : 0); }

// INVALID_ARGUMENT `message` about JobSpec's `field` (a BadRequest field
// violation "spec.FIELD" for programs).
absl::Status BadField(const std::string& field, const std::string& message) {
  return WithFieldViolation(absl::InvalidArgumentError(message), "spec." + field, message);
}

// RESOURCE_EXHAUSTED `message`: over the coordinator's `limit` (a flag, or
// what the limit is called), for programs as a QuotaFailure and an ErrorInfo
// LIMIT_EXCEEDED naming it.
absl::Status OverLimit(const std::string& limit, const std::string& message) {
  absl::Status s = WithQuotaViolation(absl::ResourceExhaustedError(message), limit, message);
  return WithErrorInfo(std::move(s), "LIMIT_EXCEEDED", {{"limit", limit}});
}

absl::Status CheckName(const char* field, const std::string& value, const PlannerOptions& o,
                       bool required) {
  if (required && value.empty()) return BadField(field, absl::StrCat(field, " is empty"));
  if (static_cast<int64_t>(value.size()) > o.max_name_bytes) {
    return BadField(field, absl::StrCat(field, " ", Echo(value), " is over the ", o.max_name_bytes,
                                        "-byte limit"));
  }
  return absl::OkStatus();
}

absl::Status CheckBytes(const char* field, const char* flag, const std::string& value,
                        int64_t limit) {
  if (static_cast<int64_t>(value.size()) <= limit) return absl::OkStatus();
  return OverLimit(
      flag, absl::StrCat(field, " is ", value.size(), " bytes, over the ", limit, "-byte limit"));
}

// What every spec is checked for, prepared or not.
absl::Status ValidateCommonFields(const v1::JobSpec& spec, const PlannerOptions& o) {
  LG_RETURN_IF_ERROR(CheckName("model_id", spec.model_id(), o, true));
  LG_RETURN_IF_ERROR(CheckName("weights_sha256", spec.weights_sha256(), o, false));
  LG_RETURN_IF_ERROR(CheckName("method_name", spec.method_name(), o, false));
  LG_RETURN_IF_ERROR(CheckName("metric_name", spec.metric_name(), o, false));
  LG_RETURN_IF_ERROR(CheckName("ablation_name", spec.ablation_name(), o, false));
  LG_RETURN_IF_ERROR(CheckBytes("label", "label bytes", spec.label(), o.max_label_bytes));
  LG_RETURN_IF_ERROR(CheckBytes("client_json", "--max-client-json-bytes", spec.client_json(),
                                o.max_client_json_bytes));
  for (const auto& [name, v] : {std::pair<const char*, int64_t>{"n_layers", spec.n_layers()},
                                {"n_heads", spec.n_heads()}}) {
    if (v < 0 || v > o.max_model_dim) {
      return BadField(name, absl::StrCat(name, " is ", v, "; it must be in [1, ", o.max_model_dim,
                                         "] (0: the model's)"));
    }
  }
  if (spec.prompts_per_shard() < 0 || spec.components_per_shard() < 0)
    return absl::InvalidArgumentError("shard sizes must not be negative");
  if (spec.max_attempts() < 0 || spec.max_attempts() > o.max_attempts_limit) {
    return BadField("max_attempts",
                    absl::StrCat("max_attempts is ", spec.max_attempts(), "; it must be in [0, ",
                                 o.max_attempts_limit, "]"));
  }
  return absl::OkStatus();
}

absl::Status ValidateFields(const v1::JobSpec& spec, const PlannerOptions& o) {
  LG_RETURN_IF_ERROR(ValidateCommonFields(spec, o));
  if (spec.weights_sha256().empty()) return absl::InvalidArgumentError("weights_sha256 is empty");
  if (spec.n_layers() == 0 || spec.n_heads() == 0) {
    return absl::InvalidArgumentError("n_layers and n_heads must be set");
  }
  if (spec.prompts_size() == 0) return absl::InvalidArgumentError("the job has no prompts");
  if (spec.prompts_size() > o.max_prompts) {
    return OverLimit("prompts per job",
                     absl::StrCat("the job has ", spec.prompts_size(),
                                  " prompts, over the limit of ", o.max_prompts));
  }
  return absl::OkStatus();
}

// The enums, or where one is UNSPECIFIED the deprecated name.
absl::Status ResolveSearch(const v1::JobSpec& spec, JobPlan* plan) {
  if (spec.method() != v1::SEARCH_METHOD_UNSPECIFIED || spec.method_name().empty()) {
    LG_ASSIGN_OR_RETURN(plan->method, MethodFromProto(spec.method()));
  } else {
    LG_ASSIGN_OR_RETURN(plan->method, ParseMethod(spec.method_name()));
  }
  if (spec.metric() != v1::SEARCH_METRIC_UNSPECIFIED || spec.metric_name().empty()) {
    LG_ASSIGN_OR_RETURN(plan->metric, MetricFromProto(spec.metric()));
  } else {
    LG_ASSIGN_OR_RETURN(plan->metric, ParseMetric(spec.metric_name()));
  }
  if (spec.ablation() != v1::ABLATION_UNSPECIFIED || spec.ablation_name().empty()) {
    LG_ASSIGN_OR_RETURN(plan->ablation, AblationFromProto(spec.ablation()));
  } else {
    LG_ASSIGN_OR_RETURN(plan->ablation, ParseAblation(spec.ablation_name()));
  }
  if (plan->method == Method::kAcdc) {
    return BadField("method",
                    "acdc is driven by its client, one acdc-step job per iteration "
                    "(common/acdc_driver.h; lensgrid search --method acdc): submit acdc-step");
  }
  plan->circuit = CircuitParamsFromProto(spec.circuit());
  // What needs no model now; the receivers and the circuit once the model's shape is known.
  return CheckCircuitParams(plan->method, plan->circuit, {});
}

// Bytes of one prompt inside a repeated field: tag, length, message.
int64_t PromptWireBytes(const v1::InlinePrompt& p) {
  const int64_t n = static_cast<int64_t>(p.ByteSizeLong());
  int64_t len_bytes = 1;
  for (int64_t v = n; v >= 128; v >>= 7) ++len_bytes;
  return 1 + len_bytes + n;
}

bool NeedsMeanPrompts(const JobPlan& plan) {
  return IsAblation(plan.method) && plan.ablation == AblationKind::kMean;
}

absl::Status ValidatePrompts(const v1::JobSpec& spec, const PlannerOptions& o) {
  for (int i = 0; i < spec.prompts_size(); ++i) {
    const v1::InlinePrompt& p = spec.prompts(i);
    if (p.tokens_size() == 0) {
      return absl::InvalidArgumentError(absl::StrCat("prompt ", i, " has no tokens"));
    }
    const int64_t longest = std::max({p.tokens_size(), p.answers_size(), p.wrongs_size()});
    if (longest > o.max_prompt_tokens) {
      return absl::ResourceExhaustedError(absl::StrCat("prompt ", i, " has a list of ", longest,
                                                       " tokens, over the limit of ",
                                                       o.max_prompt_tokens));
    }
    if (p.corrupted_tokens_size() != 0 && p.corrupted_tokens_size() != p.tokens_size()) {
      return absl::InvalidArgumentError(absl::StrCat("prompt ", i, ": corrupted_tokens has ",
                                                     p.corrupted_tokens_size(),
                                                     " tokens, tokens has ", p.tokens_size()));
    }
    if (p.loss_start() < 0 || p.loss_start() >= p.tokens_size()) {
      if (p.loss_start() != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("prompt ", i, ": loss_start ", p.loss_start(), " is out of range"));
      }
    }
    for (const auto* ids : {&p.tokens(), &p.corrupted_tokens(), &p.answers(), &p.wrongs()}) {
      for (int64_t id : *ids) {
        if (id < 0) {
          return absl::InvalidArgumentError(
              absl::StrCat("prompt ", i, " has a negative token id ", id));
        }
      }
    }
  }
  return absl::OkStatus();
}

// Values in the merged result: per prompt and mean of each grid, baseline and
// reference. nullopt on overflow.
std::optional<int64_t> ResultValues(const std::vector<Grid>& grids, int64_t n_prompts) {
  int64_t values = 2 * n_prompts;
  for (const Grid& g : grids) {
    int64_t n = 1;
    for (int64_t d : g.shape) {
      std::optional<int64_t> m = Mul(n, d);
      if (!m) return std::nullopt;
      n = *m;
    }
    std::optional<int64_t> per_prompt = Mul(n, n_prompts + 1);
    if (!per_prompt || __builtin_add_overflow(values, *per_prompt, &values)) return std::nullopt;
  }
  return values;
}

absl::Status ValidateDatasetRequest(const v1::DatasetRequest& d, const PlannerOptions& o) {
  LG_RETURN_IF_ERROR(CheckName("dataset.name", d.name(), o, d.jsonl().empty()));
  LG_RETURN_IF_ERROR(
      CheckBytes("dataset.jsonl", "--max-dataset-bytes", d.jsonl(), o.max_dataset_bytes));
  if (d.n_prompts() < 0 || d.n_prompts() > o.max_prompts) {
    return absl::InvalidArgumentError(absl::StrCat("dataset.n_prompts is ", d.n_prompts(),
                                                   "; it must be in [0, ", o.max_prompts, "]"));
  }
  if (d.seq_len() < 0 || d.seq_len() > o.max_prompt_tokens / 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset.seq_len is ", d.seq_len(), "; it must be in [0, ", o.max_prompt_tokens / 2, "]"));
  }
  return absl::OkStatus();
}

}  // namespace

bool NeedsPreparing(const v1::JobSpec& spec) {
  return spec.prompts_size() == 0 || spec.n_layers() == 0 || spec.n_heads() == 0 ||
         spec.weights_sha256().empty();
}

absl::Status CheckSpecToPrepare(const v1::JobSpec& spec, const PlannerOptions& options) {
  LG_RETURN_IF_ERROR(ValidateCommonFields(spec, options));
  JobPlan names;
  LG_RETURN_IF_ERROR(ResolveSearch(spec, &names));
  if (spec.prompts_size() > 0 && spec.has_dataset()) {
    return absl::InvalidArgumentError("a job has prompts or a dataset, not both");
  }
  if (spec.prompts_size() == 0 && !spec.has_dataset()) {
    return absl::InvalidArgumentError("the job has no prompts and no dataset");
  }
  if (spec.has_dataset()) LG_RETURN_IF_ERROR(ValidateDatasetRequest(spec.dataset(), options));
  if (spec.prompts_size() > options.max_prompts) {
    return OverLimit("prompts per job",
                     absl::StrCat("the job has ", spec.prompts_size(),
                                  " prompts, over the limit of ", options.max_prompts));
  }
  return ValidatePrompts(spec, options);
}

absl::StatusOr<v1::JobSpec> PreparedSpec(const v1::JobSpec& spec, const Prompts& inline_prompts,
                                         const v1::PreparedDataset& prepared,
                                         const std::string& weights_sha256) {
  v1::JobSpec out = SpecWithoutPrompts(spec);
  out.clear_dataset();
  if (spec.has_dataset()) {
    // What the job was built from, without the bytes: JobStatus shows it.
    *out.mutable_dataset() = spec.dataset();
    out.mutable_dataset()->clear_jsonl();
  }
  if (out.n_layers() == 0) out.set_n_layers(prepared.model().n_layers());
  if (out.n_heads() == 0) out.set_n_heads(prepared.model().n_heads());
  if (spec.n_layers() == 0 || spec.n_heads() == 0) out.set_attn_only(prepared.model().attn_only());
  if (out.weights_sha256().empty()) out.set_weights_sha256(weights_sha256);
  *out.mutable_model() = prepared.model();
  if (out.weights_sha256() != weights_sha256) {
    return absl::InvalidArgumentError(absl::StrCat("the preparing worker has weights ",
                                                   Echo(weights_sha256), ", the job is pinned to ",
                                                   Echo(out.weights_sha256())));
  }
  if (!spec.has_dataset()) {
    *out.mutable_prompts() = inline_prompts;
  } else {
    if (prepared.prompts_size() == 0) {
      return absl::InvalidArgumentError("the worker built a dataset with no prompts");
    }
    *out.mutable_prompts() = prepared.prompts();
  }
  return out;
}

v1::JobSpec WithSpecDefaults(v1::JobSpec spec) {
  if (spec.metric() == v1::SEARCH_METRIC_UNSPECIFIED && spec.metric_name().empty()) {
    spec.set_metric(v1::METRIC_LOGIT_DIFF);
  }
  if (spec.ablation() == v1::ABLATION_UNSPECIFIED && spec.ablation_name().empty()) {
    spec.set_ablation(v1::ABLATION_ZERO);
  }
  return spec;
}

absl::StatusOr<JobPlan> PlanJob(const v1::JobSpec& spec, const PlannerOptions& options) {
  LG_RETURN_IF_ERROR(ValidateFields(spec, options));
  LG_RETURN_IF_ERROR(ValidatePrompts(spec, options));
  JobPlan plan;
  LG_RETURN_IF_ERROR(ResolveSearch(spec, &plan));
  plan.n_prompts = spec.prompts_size();
  int64_t total_tokens = 0;  // <= max_prompts x max_prompt_tokens: no overflow
  for (const v1::InlinePrompt& p : spec.prompts()) {
    plan.n_pos = std::max<int64_t>(plan.n_pos, p.tokens_size());
    total_tokens += p.tokens_size();
  }

  plan.grids =
      MethodGrids(plan.method, {spec.n_layers(), spec.n_heads(), spec.attn_only()}, plan.n_pos);
  plan.patching = NeedsCorrupted(plan.method);
  std::optional<int64_t> values = ResultValues(plan.grids, plan.n_prompts);
  std::optional<int64_t> result_bytes = values ? Mul(*values, kFloatBytes) : std::nullopt;
  if (!result_bytes || *result_bytes > options.max_result_bytes) {
    return OverLimit("--max-result-bytes",
                     absl::StrCat("the job's result would be ",
                                  result_bytes ? absl::StrCat(*result_bytes) : "more than 2^63",
                                  " bytes, over the ", options.max_result_bytes, "-byte limit"));
  }
  plan.result_bytes = *result_bytes;
  // After the result's size: that bounds the graph an edge method builds.
  LG_RETURN_IF_ERROR(CheckCircuitParams(plan.method, plan.circuit,
                                        {spec.n_layers(), spec.n_heads(), spec.attn_only()}));
  // Fits: the first grid's components are fewer than the result's values.
  plan.n_components = plan.grids.front().NumComponents();

  // Cost model: one (prompt, component) costs about the prompt's length in
  // token-forwards; a shard also pays a fixed base run over its prompts.
  const int64_t avg_len = std::max<int64_t>(1, CeilDiv(total_tokens, plan.n_prompts));
  int64_t prompts_per = spec.prompts_per_shard();
  if (prompts_per == 0) prompts_per = std::max<int64_t>(1, options.batch_tokens / avg_len);
  prompts_per = std::min(prompts_per, plan.n_prompts);
  int64_t components_per = spec.components_per_shard();
  const bool prompts_only = ShardsByPromptsOnly(plan.method);
  if (prompts_only) {
    components_per = plan.n_components;
  } else if (components_per == 0) {
    components_per = std::max<int64_t>(1, options.shard_cost / (prompts_per * avg_len));
  }
  components_per = std::min(components_per, plan.n_components);

  // At most max_shards: sizes the planner chose grow to fit.
  const int64_t max_shards = std::max<int64_t>(1, options.max_shards);
  int64_t prompt_batches = CeilDiv(plan.n_prompts, prompts_per);
  if (prompt_batches > max_shards && spec.prompts_per_shard() == 0) {
    prompts_per = CeilDiv(plan.n_prompts, max_shards);
    prompt_batches = CeilDiv(plan.n_prompts, prompts_per);
  }
  int64_t component_batches = CeilDiv(plan.n_components, components_per);
  std::optional<int64_t> n_shards = Mul(prompt_batches, component_batches);
  if ((!n_shards || *n_shards > max_shards) && spec.components_per_shard() == 0 &&
      prompt_batches <= max_shards) {
    components_per = CeilDiv(plan.n_components, std::max<int64_t>(1, max_shards / prompt_batches));
    component_batches = CeilDiv(plan.n_components, components_per);
    n_shards = Mul(prompt_batches, component_batches);
  }
  if (!n_shards || *n_shards > max_shards) {
    return OverLimit("--max-shards",
                     absl::StrCat("the job would have ", prompt_batches, " x ", component_batches,
                                  " shards, over the limit of ", max_shards,
                                  " per job: use larger prompts_per_shard / components_per_shard"));
  }
  if (*n_shards <= 0) return absl::InvalidArgumentError("the job plans to no shards");

  // A lease carries its shard's prompts (mean ablation: every prompt too):
  // refuse what no worker could receive. Sums stay below the request's size.
  int64_t all_bytes = 0, largest_batch = 0;
  {
    int64_t batch = 0, in_batch = 0;
    for (const v1::InlinePrompt& p : spec.prompts()) {
      const int64_t b = PromptWireBytes(p);
      all_bytes += b;
      batch += b;
      if (++in_batch == prompts_per) {
        largest_batch = std::max(largest_batch, batch);
        batch = in_batch = 0;
      }
    }
    largest_batch = std::max(largest_batch, batch);
  }
  plan.max_spec_bytes = largest_batch + (NeedsMeanPrompts(plan) ? all_bytes : 0) +
                        static_cast<int64_t>(spec.circuit().ByteSizeLong()) + kShardSpecOverhead;
  if (plan.max_spec_bytes > options.max_shard_spec_bytes) {
    return OverLimit(
        "--max-lease-bytes",
        absl::StrCat(
            "the job's largest shard's spec is ", plan.max_spec_bytes, " bytes (",
            NeedsMeanPrompts(plan) ? "mean ablation carries every prompt" : "its own prompts",
            "), over the ", options.max_shard_spec_bytes,
            "-byte limit of a lease that workers can receive: use smaller shards "
            "(prompts_per_shard) or split the prompts over several jobs"));
  }

  plan.shards.reserve(static_cast<size_t>(*n_shards));
  for (int64_t c = 0; c < plan.n_components; c += components_per) {
    for (int64_t p = 0; p < plan.n_prompts; p += prompts_per) {
      plan.shards.push_back({p, std::min(p + prompts_per, plan.n_prompts), c,
                             std::min(c + components_per, plan.n_components)});
    }
  }
  plan.prompts = std::make_shared<const Prompts>(spec.prompts());
  return plan;
}

v1::JobSpec SpecWithoutPrompts(const v1::JobSpec& spec) {
  google::protobuf::FieldMask mask;
  const google::protobuf::Descriptor* d = v1::JobSpec::descriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    if (d->field(i)->number() != v1::JobSpec::kPromptsFieldNumber)
      mask.add_paths(d->field(i)->name());
  }
  v1::JobSpec out;
  google::protobuf::util::FieldMaskUtil::MergeMessageTo(
      spec, mask, google::protobuf::util::FieldMaskUtil::MergeOptions(), &out);
  return out;
}

v1::ShardSpec MakeShardSpec(const JobPlan& plan, const ShardRange& r) {
  v1::ShardSpec s;
  s.set_method(ToProto(plan.method));
  s.set_metric(ToProto(plan.metric));
  s.set_ablation(ToProto(plan.ablation));
  s.set_n_prompts(plan.n_prompts);
  s.set_n_pos(plan.n_pos);
  s.set_prompt_begin(r.prompt_begin);
  s.set_prompt_end(r.prompt_end);
  s.set_component_begin(r.component_begin);
  s.set_component_end(r.component_end);
  const Prompts& all = *plan.prompts;
  s.mutable_prompts()->Reserve(static_cast<int>(r.num_prompts()));
  for (int64_t i = r.prompt_begin; i < r.prompt_end; ++i)
    *s.add_prompts() = all.Get(static_cast<int>(i));
  if (NeedsMeanPrompts(plan)) *s.mutable_mean_prompts() = all;
  if (IsCircuit(plan.method)) *s.mutable_circuit() = ToProto(plan.circuit);
  return s;
}

}  // namespace lensgrid::service
