#include "client/search_job.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/search_methods.h"
#include "common/search_proto.h"
#include "common/status_macros.h"

namespace lensgrid {
namespace {

absl::StatusOr<std::string> CheckedPin(const std::string& pin) {
  std::string lower = absl::AsciiStrToLower(pin);
  bool hex = lower.size() == 64;
  for (char ch : lower) hex = hex && absl::ascii_isxdigit(static_cast<unsigned char>(ch));
  if (!hex) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--weights-sha256 must be 64 hex digits (the weights' identity: the sha256 of "
        "model.safetensors, as `lensgrid workers` lists it), got \"",
        pin.substr(0, 80), pin.size() > 80 ? "...\"" : "\"", " (", pin.size(), " characters)"));
  }
  return lower;
}

}  // namespace

absl::StatusOr<v1::JobSpec> MakeSearchJobSpec(const SearchJobRequest& r) {
  if (r.model_id.empty()) {
    return absl::InvalidArgumentError(
        "no model id: --model ID names the model the coordinator's workers serve");
  }
  if (r.dataset.empty()) return absl::InvalidArgumentError("no dataset: --dataset NAME|FILE.jsonl");
  if (r.n_prompts <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--n-prompts must be positive, got ", r.n_prompts));
  }
  if (r.prompts_per_shard < 0 || r.components_per_shard < 0) {
    return absl::InvalidArgumentError(
        "--prompts-per-shard and --components-per-shard must be >= 0");
  }
  v1::JobSpec spec;
  spec.set_model_id(r.model_id);
  if (!r.weights_sha256.empty()) {
    LG_ASSIGN_OR_RETURN(std::string pin, CheckedPin(r.weights_sha256));
    spec.set_weights_sha256(pin);
  }
  LG_ASSIGN_OR_RETURN(auto method, ParseMethod(r.method));
  LG_ASSIGN_OR_RETURN(auto metric, ParseMetric(r.metric));
  LG_ASSIGN_OR_RETURN(auto ablation, ParseAblation(r.ablation));
  spec.set_method(ToProto(method));
  spec.set_metric(ToProto(metric));
  spec.set_ablation(ToProto(ablation));
  LG_RETURN_IF_ERROR(CheckCircuitParams(method, r.circuit, {}));  // the model's parts: planner
  if (IsCircuit(method)) *spec.mutable_circuit() = ToProto(r.circuit);
  v1::DatasetRequest* d = spec.mutable_dataset();
  d->set_name(r.dataset);
  d->set_n_prompts(r.n_prompts);
  d->set_seed(r.seed);
  d->set_seq_len(r.seq_len);
  if (!r.jsonl.empty()) d->set_jsonl(r.jsonl);
  spec.set_prompts_per_shard(r.prompts_per_shard);
  spec.set_components_per_shard(r.components_per_shard);
  spec.set_label(r.jsonl.empty() ? absl::StrCat(r.dataset, " ", MethodName(method), " (",
                                                r.n_prompts, " prompts)")
                                 : absl::StrCat(r.dataset, " ", MethodName(method)));
  return spec;
}

}  // namespace lensgrid
