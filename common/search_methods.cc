#include "common/search_methods.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/echo.h"

namespace lensgrid {
namespace {

// The table. Entries are in enum order (checked by a test).
const std::vector<MethodInfo>& MethodTable() {
  static const auto* t = new std::vector<MethodInfo>{
      {Method::kAblateHeads, "ablate-heads", MethodKind::kAblation,
       "ablate each head's hook_z -> delta [layer, head]"},
      {Method::kAblateLayers, "ablate-layers", MethodKind::kAblation,
       "ablate each layer's attn_out / mlp_out -> delta [kind(attn,mlp), layer]"},
      {Method::kPatchResid, "patch-resid", MethodKind::kPatching,
       "patch clean resid_pre at (layer, pos) -> delta [layer, pos]"},
      {Method::kPatchAttnOut, "patch-attn-out", MethodKind::kPatching,
       "patch clean attn_out at (layer, pos) -> delta [layer, pos]"},
      {Method::kPatchMlpOut, "patch-mlp-out", MethodKind::kPatching,
       "patch clean mlp_out at (layer, pos) -> delta [layer, pos]"},
      {Method::kPatchHeads, "patch-heads", MethodKind::kPatching,
       "patch a head's clean hook_z at every position -> delta [layer, head]"},
      {Method::kPatchHeadsByPos, "patch-heads-by-pos", MethodKind::kPatching,
       "patch a head's clean hook_z at one position -> delta [layer, pos, head]"},
      {Method::kPatchPattern, "patch-pattern", MethodKind::kPatching,
       "patch a head's clean attention pattern -> delta [layer, head]"},
      {Method::kDetectHeads, "detect-heads", MethodKind::kWholeGrid,
       "previous-token, duplicate-token and induction scores [layer, head]"},
      {Method::kDla, "dla", MethodKind::kWholeGrid,
       "direct logit attribution -> heads [layer, head], layers [kind, layer]"},
      {Method::kAttributeHeads, "attribute-heads", MethodKind::kAttribution,
       "attribution patching (gradient estimate of patch-heads) -> delta [layer, head]"},
      {Method::kAttributeHeadsByPos, "attribute-heads-by-pos", MethodKind::kAttribution,
       "attribution patching (gradient estimate of patch-heads-by-pos) -> delta [layer, pos, "
       "head]"},
      {Method::kAttributeResid, "attribute-resid", MethodKind::kAttribution,
       "attribution patching (gradient estimate of patch-resid) -> delta [layer, pos]"},
      {Method::kAttributeAttnOut, "attribute-attn-out", MethodKind::kAttribution,
       "attribution patching (gradient estimate of patch-attn-out) -> delta [layer, pos]"},
      {Method::kAttributeMlpOut, "attribute-mlp-out", MethodKind::kAttribution,
       "attribution patching (gradient estimate of patch-mlp-out) -> delta [layer, pos]"},
  };
  return *t;
}

const std::vector<MetricInfo>& MetricTable() {
  static const auto* t = new std::vector<MetricInfo>{
      {MetricKind::kLogitDiff, "logit-diff", "mean logit of the answers - of the wrongs"},
      {MetricKind::kProb, "prob", "mean probability of the answers"},
      {MetricKind::kProbDiff, "prob-diff", "answer-set probability - wrong-set probability"},
      {MetricKind::kLoss, "loss", "next-token loss from each prompt's loss_start"},
      {MetricKind::kKl, "kl", "KL divergence from the clean run at the final position"},
      {MetricKind::kLogit, "logit", "mean logit of the answers"},
      {MetricKind::kLogProb, "log-prob", "mean log-probability of the answers"},
  };
  return *t;
}

const std::vector<AblationInfo>& AblationTable() {
  static const auto* t = new std::vector<AblationInfo>{
      {AblationKind::kZero, "zero", "zeros"},
      {AblationKind::kMean, "mean", "the mean over the whole dataset, per position"},
      {AblationKind::kResample, "resample", "the corrupted prompt's activation"},
  };
  return *t;
}

template <typename Table>
std::string Names(const Table& table) {
  std::vector<std::string> names;
  for (const auto& e : table) names.push_back(e.name);
  return absl::StrJoin(names, ", ");
}

}  // namespace

const std::vector<MethodInfo>& AllMethods() { return MethodTable(); }
const std::vector<MetricInfo>& AllMetrics() { return MetricTable(); }
const std::vector<AblationInfo>& AllAblations() { return AblationTable(); }

const MethodInfo& Info(Method method) { return MethodTable()[static_cast<size_t>(method)]; }

absl::StatusOr<Method> ParseMethod(absl::string_view name) {
  for (const MethodInfo& m : MethodTable()) {
    if (name == m.name) return m.method;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown method ", Echo(name), " (", MethodNames(), ")"));
}

absl::StatusOr<MetricKind> ParseMetric(absl::string_view name) {
  for (const MetricInfo& m : MetricTable()) {
    if (name == m.name) return m.metric;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown metric ", Echo(name), " (", MetricNames(), ")"));
}

absl::StatusOr<AblationKind> ParseAblation(absl::string_view name) {
  for (const AblationInfo& a : AblationTable()) {
    if (name == a.name) return a.ablation;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown ablation ", Echo(name), " (", AblationNames(), ")"));
}

std::string MethodName(Method method) { return Info(method).name; }
std::string MetricName(MetricKind metric) {
  return MetricTable()[static_cast<size_t>(metric)].name;
}
std::string AblationName(AblationKind ablation) {
  return AblationTable()[static_cast<size_t>(ablation)].name;
}
std::string MethodNames() { return Names(MethodTable()); }
std::string MetricNames() { return Names(MetricTable()); }
std::string AblationNames() { return Names(AblationTable()); }

bool IsPatching(Method method) {
  return Info(method).kind == MethodKind::kPatching || IsAttribution(method);
}
bool IsAblation(Method method) { return Info(method).kind == MethodKind::kAblation; }
bool IsAttribution(Method method) { return Info(method).kind == MethodKind::kAttribution; }
bool ShardsByPromptsOnly(Method method) {
  return Info(method).kind == MethodKind::kWholeGrid || IsAttribution(method);
}

Method ExactMethod(Method method) {
  // Every case, no default: -Werror=switch refuses a method left out.
  switch (method) {
    case Method::kAttributeHeads:
      return Method::kPatchHeads;
    case Method::kAttributeHeadsByPos:
      return Method::kPatchHeadsByPos;
    case Method::kAttributeResid:
      return Method::kPatchResid;
    case Method::kAttributeAttnOut:
      return Method::kPatchAttnOut;
    case Method::kAttributeMlpOut:
      return Method::kPatchMlpOut;
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
      return method;
  }
  return method;  // not reached: every case returns
}

int64_t Grid::NumComponents() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ComponentName(const std::vector<std::string>& axes, const std::vector<int64_t>& shape,
                          int64_t flat_index) {
  std::vector<int64_t> coords(shape.size());
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
    coords[d] = flat_index % shape[d];
    flat_index /= shape[d];
  }
  std::string name;
  for (size_t d = 0; d < coords.size(); ++d) {
    const std::string& axis = axes[d];
    if (axis == "layer") {
      absl::StrAppend(&name, name.empty() ? "" : " ", "L", coords[d]);
    } else if (axis == "head") {
      absl::StrAppend(&name, "H", coords[d]);
    } else if (axis == "pos") {
      absl::StrAppend(&name, " pos ", coords[d]);
    } else {
      absl::StrAppend(&name, coords[d] == 0 ? "attn" : "mlp");
    }
  }
  return name;
}

const std::vector<std::string>& BuiltinDatasetNames() {
  static const auto* names =
      new std::vector<std::string>{"induction", "ioi", "gender-bias", "greater-than"};
  return *names;
}

std::vector<Grid> MethodGrids(Method method, const ModelDims& model, int64_t n_pos) {
  const int64_t L = model.n_layers, H = model.n_heads, kinds = model.attn_only ? 1 : 2;
  const std::vector<std::string> layer_head = {"layer", "head"};
  const std::vector<std::string> kind_layer = {"kind(attn,mlp)", "layer"};
  // Every case, no default: -Werror=switch refuses a method left out.
  switch (method) {
    case Method::kAblateHeads:
    case Method::kPatchHeads:
    case Method::kPatchPattern:
      return {{"delta", layer_head, {L, H}}};
    case Method::kAblateLayers:
      return {{"delta", kind_layer, {kinds, L}}};
    case Method::kPatchResid:
    case Method::kPatchAttnOut:
    case Method::kPatchMlpOut:
      return {{"delta", {"layer", "pos"}, {L, n_pos}}};
    case Method::kPatchHeadsByPos:
      return {{"delta", {"layer", "pos", "head"}, {L, n_pos, H}}};
    case Method::kDetectHeads:
      return {{"previous_token", layer_head, {L, H}},
              {"duplicate_token", layer_head, {L, H}},
              {"induction", layer_head, {L, H}}};
    case Method::kDla:
      return {{"heads", layer_head, {L, H}}, {"layers", kind_layer, {kinds, L}}};
    case Method::kAttributeHeads:
    case Method::kAttributeHeadsByPos:
    case Method::kAttributeResid:
    case Method::kAttributeAttnOut:
    case Method::kAttributeMlpOut:
      return MethodGrids(ExactMethod(method), model, n_pos);  // the exact method's grid
  }
  return {};  // not reached: every case returns
}

}  // namespace lensgrid
