#include "common/search_methods.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/circuit_graph.h"
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
      {Method::kEap, "eap", MethodKind::kCircuit,
       "edge attribution patching: a score for every edge of the circuit graph -> scores "
       "[edge]"},
      {Method::kEapIg, "eap-ig", MethodKind::kCircuit,
       "EAP with integrated gradients (--ig-steps) -> scores [edge]"},
      {Method::kPathPatch, "path-patch", MethodKind::kCircuit,
       "corrupt only each head's path to the receivers (--receivers; default the logits) -> "
       "delta [layer, head]"},
      {Method::kCircuitFaithfulness, "circuit-faithfulness", MethodKind::kCircuit,
       "a circuit's metric with every edge outside it corrupted (--edges FILE) -> metric "
       "[run(circuit, clean, corrupted)]"},
      {Method::kAcdc, "acdc", MethodKind::kCircuit,
       "ACDC: prune edges from the logits back, keeping those whose removal moves the metric "
       "by >= --threshold -> scores [edge]"},
      {Method::kAcdcStep, "acdc-step", MethodKind::kCircuit,
       "one ACDC iteration (what acdc runs per receiving input) -> metric [candidate]"},
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
bool IsCircuit(Method method) { return Info(method).kind == MethodKind::kCircuit; }
bool NeedsCorrupted(Method method) { return IsPatching(method) || IsCircuit(method); }
bool IsAblation(Method method) { return Info(method).kind == MethodKind::kAblation; }
bool IsAttribution(Method method) { return Info(method).kind == MethodKind::kAttribution; }
bool ShardsByPromptsOnly(Method method) {
  return Info(method).kind == MethodKind::kWholeGrid || IsAttribution(method) ||
         (IsCircuit(method) && method != Method::kPathPatch && method != Method::kAcdcStep);
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
    case Method::kEap:
    case Method::kEapIg:
    case Method::kPathPatch:
    case Method::kCircuitFaithfulness:
    case Method::kAcdc:
    case Method::kAcdcStep:
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
    } else if (axis == "candidate") {
      absl::StrAppend(&name, coords[d] == 0 ? "circuit" : absl::StrCat("edge ", coords[d] - 1));
    } else if (axis == "edge") {
      absl::StrAppend(&name, "edge ", coords[d]);  // its name needs the graph: EdgeName
    } else if (axis == kFaithfulnessAxis) {
      static const char* const kRuns[] = {"circuit", "clean", "corrupted"};
      absl::StrAppend(&name, coords[d] >= 0 && coords[d] < 3 ? kRuns[coords[d]] : "run ?");
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

absl::Status CheckCircuitParams(Method method, const CircuitParams& params,
                                const ModelDims& model) {
  if (params.ig_steps < 0 || params.ig_steps > kMaxIgSteps) {
    return absl::InvalidArgumentError(absl::StrCat("circuit.ig_steps is ", params.ig_steps,
                                                   "; it must be in [1, ", kMaxIgSteps,
                                                   "] (0: the default, ", kDefaultIgSteps, ")"));
  }
  if (params.ig_steps != 0 && method != Method::kEapIg) {
    return absl::InvalidArgumentError(
        absl::StrCat("circuit.ig_steps is for eap-ig, not ", MethodName(method)));
  }
  const bool takes_receivers = method == Method::kPathPatch || method == Method::kAcdcStep;
  const bool takes_circuit = method == Method::kCircuitFaithfulness || method == Method::kAcdcStep;
  if (!params.receivers.empty() && !takes_receivers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "circuit.receivers is for path-patch and acdc-step, not ", MethodName(method)));
  }
  if (method == Method::kAcdcStep && params.receivers.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("circuit.receivers has ", params.receivers.size(),
                     " entries; acdc-step takes exactly one, its receiving input"));
  }
  if (!params.kept_edges.empty() && !takes_circuit) {
    return absl::InvalidArgumentError(absl::StrCat(
        "circuit.kept_edges is for circuit-faithfulness and acdc-step, not ", MethodName(method)));
  }
  if (params.kept_edges.empty() && takes_circuit) {
    return absl::InvalidArgumentError(
        absl::StrCat("circuit.kept_edges (the circuit) is required for ", MethodName(method)));
  }
  if (!IsCircuit(method) || model.n_layers <= 0 || model.n_heads <= 0) return absl::OkStatus();
  const int64_t edge_count =
      CircuitGraph::CountEdges(model.n_layers, model.n_heads, model.attn_only);
  if (edge_count > kMaxCircuitEdges) {
    return absl::ResourceExhaustedError(
        absl::StrCat(MethodName(method), ": this model's circuit graph has ", edge_count,
                     " edges, over the limit of ", kMaxCircuitEdges));
  }
  if (!params.receivers.empty()) {
    // Names need the graph; a circuit's bits only its edge count.
    const CircuitGraph graph = CircuitGraph::Build(
        {static_cast<int>(model.n_layers), static_cast<int>(model.n_heads), model.attn_only});
    for (size_t i = 0; i < params.receivers.size(); ++i) {
      absl::StatusOr<std::pair<int, Channel>> r = graph.FindReceiver(params.receivers[i]);
      if (!r.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("circuit.receivers[", i, "]: ", r.status().message()));
      }
      if (graph.nodes()[r->first].kind == CircuitNode::Kind::kEmbed) {
        return absl::InvalidArgumentError(
            absl::StrCat("circuit.receivers[", i, "]: the embeddings receive nothing"));
      }
    }
  }
  const int64_t n_edges = edge_count;
  if (takes_circuit) {
    const int64_t bytes = (n_edges + 7) / 8;
    if (static_cast<int64_t>(params.kept_edges.size()) != bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("circuit.kept_edges has ", params.kept_edges.size(),
                       " bytes; this model's circuit graph has ", n_edges,
                       " edges, one bit each: ", bytes, " bytes"));
    }
    if (n_edges % 8 != 0 &&
        (static_cast<unsigned char>(params.kept_edges.back()) >> (n_edges % 8)) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("circuit.kept_edges has bits set past the last edge (", n_edges, ")"));
    }
  }
  return absl::OkStatus();
}

int64_t AcdcStepComponents(const ModelDims& model) {
  return 1 + 1 + model.n_layers * (model.n_heads + (model.attn_only ? 0 : 1));
}

std::string PackEdges(const std::vector<bool>& edges) {
  std::string bits((edges.size() + 7) / 8, '\0');
  for (size_t e = 0; e < edges.size(); ++e) {
    if (edges[e]) bits[e / 8] = static_cast<char>(bits[e / 8] | (1 << (e % 8)));
  }
  return bits;
}

std::vector<bool> UnpackEdges(const std::string& bits, int64_t n_edges) {
  std::vector<bool> edges(static_cast<size_t>(n_edges), false);
  for (int64_t e = 0; e < n_edges && e / 8 < static_cast<int64_t>(bits.size()); ++e) {
    edges[e] = (static_cast<unsigned char>(bits[e / 8]) >> (e % 8)) & 1;
  }
  return edges;
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
    case Method::kAcdcStep:
      return {{"metric", {"candidate"}, {AcdcStepComponents(model)}}};
    case Method::kEap:
    case Method::kEapIg:
    case Method::kAcdc:
      return {{"scores", {"edge"}, {CircuitGraph::CountEdges(L, H, model.attn_only)}}};
    case Method::kPathPatch:
      return {{"delta", layer_head, {L, H}}};
    case Method::kCircuitFaithfulness:
      return {{"metric", {kFaithfulnessAxis}, {3}}};
  }
  return {};  // not reached: every case returns
}

}  // namespace lensgrid
