#include "client/search_context.h"

#include "absl/strings/str_cat.h"
#include "common/search_methods.h"
#include "common/search_proto.h"
#include "common/status_macros.h"

namespace lensgrid {
namespace {

// DatasetRequest.seq_len 0 means 16 (search.proto).
constexpr int64_t kDefaultSeqLen = 16;

template <typename T>
absl::Status Read(const nlohmann::ordered_json& j, const char* key, T* out) {
  if (!j.contains(key)) {
    return absl::InvalidArgumentError(absl::StrCat("job description: no \"", key, "\""));
  }
  try {
    *out = j.at(key).get<T>();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("job description: \"", key, "\": ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace

nlohmann::ordered_json ContextToJson(const SearchContext& c) {
  nlohmann::ordered_json j;
  j["method"] = c.method;
  j["metric"] = c.metric;
  j["ablation"] = c.ablation;
  if (!(c.circuit == CircuitParams{})) {
    int64_t kept = 0;
    for (unsigned char byte : c.circuit.kept_edges) kept += __builtin_popcount(byte);
    j["circuit"] = {
        {"ig_steps", c.circuit.ig_steps}, {"receivers", c.circuit.receivers}, {"kept_edges", kept}};
  }
  j["normalize"] = c.normalize;
  nlohmann::ordered_json model;
  if (!c.model_id.empty()) model["id"] = c.model_id;
  model["dir"] = c.model_dir;
  model["weights_sha256"] = c.weights_sha256;
  model["processed"] = c.processed.has_value() ? nlohmann::ordered_json(*c.processed) : nullptr;
  model["n_layers"] = c.n_layers;
  model["n_heads"] = c.n_heads;
  model["attn_only"] = c.attn_only;
  j["model"] = model;
  j["dataset"] = {{"name", c.dataset},
                  {"n_prompts", c.n_prompts},
                  {"seed", c.seed},
                  {"seq_len", c.seq_len},
                  {"positions", c.positions}};
  j["run"] = c.run;
  return j;
}

absl::StatusOr<SearchContext> ContextFromJson(const std::string& text) {
  // Ordered, so that "run" keeps its keys' order.
  nlohmann::ordered_json j =
      nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        "the job carries no lensgrid search description (was it submitted by `lensgrid "
        "search`?)");
  }
  SearchContext c;
  LG_RETURN_IF_ERROR(Read(j, "method", &c.method));
  LG_RETURN_IF_ERROR(Read(j, "metric", &c.metric));
  LG_RETURN_IF_ERROR(Read(j, "ablation", &c.ablation));
  LG_RETURN_IF_ERROR(Read(j, "normalize", &c.normalize));
  nlohmann::ordered_json model, dataset;
  LG_RETURN_IF_ERROR(Read(j, "model", &model));
  if (model.contains("id")) LG_RETURN_IF_ERROR(Read(model, "id", &c.model_id));
  LG_RETURN_IF_ERROR(Read(model, "dir", &c.model_dir));
  LG_RETURN_IF_ERROR(Read(model, "weights_sha256", &c.weights_sha256));
  if (!model.contains("processed") || !model["processed"].is_null()) {
    bool processed = true;
    LG_RETURN_IF_ERROR(Read(model, "processed", &processed));
    c.processed = processed;
  }
  LG_RETURN_IF_ERROR(Read(model, "n_layers", &c.n_layers));
  LG_RETURN_IF_ERROR(Read(model, "n_heads", &c.n_heads));
  if (model.contains("attn_only")) LG_RETURN_IF_ERROR(Read(model, "attn_only", &c.attn_only));
  LG_RETURN_IF_ERROR(Read(j, "dataset", &dataset));
  LG_RETURN_IF_ERROR(Read(dataset, "name", &c.dataset));
  LG_RETURN_IF_ERROR(Read(dataset, "n_prompts", &c.n_prompts));
  LG_RETURN_IF_ERROR(Read(dataset, "seed", &c.seed));
  LG_RETURN_IF_ERROR(Read(dataset, "positions", &c.positions));
  LG_RETURN_IF_ERROR(Read(dataset, "seq_len", &c.seq_len));
  if (j.contains("run") && j["run"].is_object()) c.run = j["run"];
  return c;
}

bool StatusDescribesJob(const v1::JobStatus& status) {
  return status.has_spec() && status.spec().n_layers() > 0 && status.spec().n_heads() > 0;
}

absl::StatusOr<SearchContext> ContextFromJobStatus(const v1::JobStatus& status) {
  if (!StatusDescribesJob(status)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", status.job_id(),
        " has not been prepared: its status has no model shape yet (no worker serving model \"",
        status.model_id(), "\" has built its dataset)"));
  }
  const v1::JobSpec& spec = status.spec();
  SearchContext c;
  if (spec.method() != v1::SEARCH_METHOD_UNSPECIFIED) {
    LG_ASSIGN_OR_RETURN(auto method, MethodFromProto(spec.method(), "spec.method"));
    c.method = MethodName(method);
  } else {
    LG_ASSIGN_OR_RETURN(auto method, ParseMethod(status.method()));
    c.method = MethodName(method);
  }
  LG_ASSIGN_OR_RETURN(auto metric, MetricFromProto(spec.metric()));
  c.metric = MetricName(metric);
  LG_ASSIGN_OR_RETURN(auto ablation, AblationFromProto(spec.ablation()));
  c.ablation = AblationName(ablation);
  c.circuit = CircuitParamsFromProto(spec.circuit());
  c.model_id = spec.model_id().empty() ? status.model_id() : spec.model_id();
  c.weights_sha256 = spec.weights_sha256();
  c.n_layers = spec.n_layers();
  c.n_heads = spec.n_heads();
  c.attn_only = spec.attn_only();
  if (spec.has_model()) c.processed = spec.model().processed();  // as the preparing worker said
  if (spec.has_dataset()) {
    const v1::DatasetRequest& d = spec.dataset();
    c.dataset = d.name();
    c.seed = d.seed();
    c.seq_len = d.seq_len() > 0 ? d.seq_len() : kDefaultSeqLen;
  } else {
    c.dataset = "inline";  // token ids sent by the client
  }
  c.n_prompts = status.n_prompts();
  c.positions = status.n_pos();
  c.run = {{"where", "coordinator"}, {"job_id", status.job_id()}};
  return c;
}

}  // namespace lensgrid
