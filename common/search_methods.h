// The one table of circuit-search methods, metrics and ablations (no
// LibTorch, no protobuf): names, help, result grids (names, axes, shapes as
// functions of the model's shape and the job's n_pos) and how each method
// shards. The model library (worker/model/analysis), the coordinator's
// planner and merger, the worker's proto conversion, the CLI's help and every
// error message read it, so a method exists in exactly one place.
//
//   LG_ASSIGN_OR_RETURN(Method m, ParseMethod("ablate-heads"));
//   std::vector<Grid> grids = MethodGrids(m, {12, 12, false}, 20);
//   // -> {{"delta", {"layer", "head"}, {12, 12}}}
//
// Adding a method: add it to the enum and to kMethodTable (search_methods.cc),
// then to proto/lensgrid/v1/search.proto (value = enum + 1). The switches
// over Method in this file and in worker/model/analysis/search.cc have no
// `default:` and are compiled with -Werror=switch, so a method not handled
// there does not compile; tests/common/search_methods_test.cc and
// tests/service/every_method_test.cc walk every method through
// planner, library and merger.
#ifndef LENSGRID_COMMON_SEARCH_METHODS_H_
#define LENSGRID_COMMON_SEARCH_METHODS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace lensgrid {

// Values are the proto's SearchMethod values minus one.
enum class Method {
  kAblateHeads,      // hook_z of one head -> [layer, head]
  kAblateLayers,     // hook_attn_out / hook_mlp_out of one layer -> [kind(attn, mlp), layer]
  kPatchResid,       // resid_pre at (layer, pos) -> [layer, pos]
  kPatchAttnOut,     // attn_out at (layer, pos) -> [layer, pos]
  kPatchMlpOut,      // mlp_out at (layer, pos) -> [layer, pos]
  kPatchHeads,       // hook_z of one head, all positions -> [layer, head]
  kPatchHeadsByPos,  // hook_z of one head at one position -> [layer, pos, head]
  kPatchPattern,     // hook_pattern of one head -> [layer, head]
  kDetectHeads,      // previous-token, duplicate-token, induction scores -> [layer, head] each
  kDla,              // direct logit attribution -> heads [layer, head], layers [kind, layer]
  // Attribution patching: the first-order estimate of the patch-* method of
  // the same grid, from one clean forward, one corrupted forward and one
  // backward per prompt batch.
  kAttributeHeads,       // like kPatchHeads -> [layer, head]
  kAttributeHeadsByPos,  // like kPatchHeadsByPos -> [layer, pos, head]
  kAttributeResid,       // like kPatchResid -> [layer, pos]
  kAttributeAttnOut,     // like kPatchAttnOut -> [layer, pos]
  kAttributeMlpOut,      // like kPatchMlpOut -> [layer, pos]
  // Circuit discovery over the edges of the circuit graph (common/circuit_graph.h),
  // MethodKind::kCircuit.
  kEap,                  // edge attribution patching -> scores [edge]
  kEapIg,                // EAP with integrated gradients (CircuitParams::ig_steps) -> scores [edge]
  kPathPatch,            // each head's path to CircuitParams::receivers -> delta [layer, head]
  kCircuitFaithfulness,  // a circuit's metric (CircuitParams::kept_edges) -> metric [run]
  kAcdc,                 // ACDC, driven by common/acdc_driver.h over kAcdcStep -> scores [edge]
  kAcdcStep,             // one ACDC iteration's evaluations -> metric [candidate]
};
// Values are the proto's SearchMetric values minus one.
enum class MetricKind { kLogitDiff, kProb, kProbDiff, kLoss, kKl, kLogit, kLogProb };
// Values are the proto's Ablation values minus one.
enum class AblationKind { kZero, kMean, kResample };

// How a method runs: which kind of search it is.
enum class MethodKind {
  kAblation,   // delta from the clean run; uses the ablation (zero, mean, resample)
  kPatching,   // clean activations into the corrupted run; also returns "reference"
  kWholeGrid,  // every component at once (detectors, DLA): shards by prompts only
  // Attribution patching: patching's baseline (the corrupted run) and
  // "reference" (the clean run), so IsPatching; and every component at once
  // from one backward, so ShardsByPromptsOnly (a component range would redo
  // the same forwards and backward for a slice of the grid).
  kAttribution,
  // Circuit discovery: runs the clean prompt with edges of the circuit graph carrying the
  // corrupted prompt's values; "baseline" is the clean run's metric, "reference" the corrupted
  // run's (the opposite of kPatching's, as in the ACDC, EAP and IOI papers). eap, eap-ig and
  // circuit-faithfulness compute every component at once (ShardsByPromptsOnly); path-patch's
  // sender heads shard like components.
  kCircuit
};

struct MethodInfo {
  Method method;
  const char* name;  // "ablate-heads"
  MethodKind kind;
  const char* help;  // one line, for the CLI and the docs
};
struct MetricInfo {
  MetricKind metric;
  const char* name;  // "logit-diff"
  const char* help;
};
struct AblationInfo {
  AblationKind ablation;
  const char* name;  // "zero"
  const char* help;
};

// Every value, in enum order.
const std::vector<MethodInfo>& AllMethods();
const std::vector<MetricInfo>& AllMetrics();
const std::vector<AblationInfo>& AllAblations();

const MethodInfo& Info(Method method);
// INVALID_ARGUMENT naming the known values (the input quoted and cut).
absl::StatusOr<Method> ParseMethod(absl::string_view name);
absl::StatusOr<MetricKind> ParseMetric(absl::string_view name);
absl::StatusOr<AblationKind> ParseAblation(absl::string_view name);
std::string MethodName(Method method);
std::string MetricName(MetricKind metric);
std::string AblationName(AblationKind ablation);
// "ablate-heads, ablate-layers, ..." (for help and errors).
std::string MethodNames();
std::string MetricNames();
std::string AblationNames();

// Exact patching and attribution patching: the corrupted run is the baseline,
// the clean run's metric the "reference", and prompts need corrupted tokens.
bool IsPatching(Method method);
// Circuit discovery (MethodKind::kCircuit): prompts need corrupted tokens, the
// clean run is the baseline and the corrupted run's metric the "reference".
bool IsCircuit(Method method);
// Patching, attribution and circuit methods: prompts need corrupted tokens and
// the result has a "reference" besides its "baseline".
bool NeedsCorrupted(Method method);
bool IsAblation(Method method);
// attribute-*: first-order estimates of patching (MethodKind::kAttribution).
bool IsAttribution(Method method);
// detect-heads, dla and attribute-* compute every component at once: shard by
// prompts only.
bool ShardsByPromptsOnly(Method method);
// The exact patching method an attribute-* method estimates, cell by cell on
// the same grid (patch-heads for attribute-heads, ...); itself otherwise.
Method ExactMethod(Method method);
// The loss reads every position; the others only the final one.
inline bool MetricNeedsAllPositions(MetricKind m) { return m == MetricKind::kLoss; }

struct ModelDims {
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  bool attn_only = false;
};

// One result grid: its values per prompt are [n_prompts, NumComponents()].
struct Grid {
  std::string name;               // "delta", "previous_token", "heads", ...
  std::vector<std::string> axes;  // e.g. {"layer", "head"}
  std::vector<int64_t> shape;     // grid shape
  int64_t NumComponents() const;  // product of shape
  bool operator==(const Grid& o) const {
    return name == o.name && axes == o.axes && shape == o.shape;
  }
};

// The grids a method returns, in order; shards cut the first one's
// components. n_pos = the job's longest prompt. REQUIRES: dims positive.
std::vector<Grid> MethodGrids(Method method, const ModelDims& model, int64_t n_pos);

// A component of a grid by its flat (row-major) index, named by the grid's
// axes: "L0H1", "L1 pos 2", "L3 attn", "L0 pos 4H2".
std::string ComponentName(const std::vector<std::string>& axes, const std::vector<int64_t>& shape,
                          int64_t flat_index);

// What circuit methods need beyond the method (proto: CircuitOptions). Unset
// fields are the defaults; a field a method does not read must stay unset.
struct CircuitParams {
  int ig_steps = 0;  // eap-ig: [1, kMaxIgSteps]; 0 = kDefaultIgSteps
  // path-patch: "L1H1.k", "MLP2", "logits"; empty = logits. acdc-step: exactly one.
  std::vector<std::string> receivers;
  // circuit-faithfulness, acdc-step: PackEdges of one bool per edge of the graph.
  std::string kept_edges;
  bool operator==(const CircuitParams& o) const {
    return ig_steps == o.ig_steps && receivers == o.receivers && kept_edges == o.kept_edges;
  }
};
inline constexpr int kDefaultIgSteps = 5;
inline constexpr int kMaxIgSteps = 1000;
// The steps eap-ig runs with (the default for 0).
inline int IgSteps(const CircuitParams& p) {
  return p.ig_steps == 0 ? kDefaultIgSteps : p.ig_steps;
}

// INVALID_ARGUMENT naming the field: ig_steps outside [0, kMaxIgSteps] or set
// for another method than eap-ig; a receiver the model's graph does not have
// (NOT_FOUND's message: the forms a receiver takes), or receivers for another
// method than path-patch; kept_edges not one per edge of the model's graph, or
// set for another method than circuit-faithfulness (which requires it), or
// with a bit set past the last edge. RESOURCE_EXHAUSTED for a circuit method
// on a model whose graph has more than kMaxCircuitEdges edges. With a model
// not known yet (n_layers or n_heads 0), only what needs no model is checked.
inline constexpr int64_t kMaxCircuitEdges = int64_t{1} << 22;
absl::Status CheckCircuitParams(Method method, const CircuitParams& params, const ModelDims& model);

// One bit per edge, edge e in bit e % 8 of byte e / 8 (CircuitOptions.kept_edges), and back.
std::string PackEdges(const std::vector<bool>& edges);
std::vector<bool> UnpackEdges(const std::string& bits, int64_t n_edges);

// acdc-step's grid: component 0 is the circuit as it is, component 1 + j the circuit with the
// j-th edge into the step's receiving input (in edge id order) also corrupted (0 when that edge
// is not in the circuit: nothing is run for it). Its size is the most senders any receiving
// input has (the logits': every node but the logits) + 1.
int64_t AcdcStepComponents(const ModelDims& model);

// The circuit-faithfulness grid's components: the run with every edge outside
// the circuit corrupted, the clean run, the corrupted run.
inline constexpr int kFaithfulnessCircuit = 0, kFaithfulnessFull = 1, kFaithfulnessCorrupted = 2;
inline constexpr char kFaithfulnessAxis[] = "run(circuit,clean,corrupted)";

// The datasets workers build by name (worker/model/analysis/dataset.h):
// induction, ioi, gender-bias, greater-than.
const std::vector<std::string>& BuiltinDatasetNames();

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_SEARCH_METHODS_H_
