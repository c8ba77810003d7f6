// Hook programs: a small typed DAG of tensor operations that runs at a hook
// point inside the forward pass, checked before the run and executed with
// LibTorch at native speed. What a TransformerLens hook function does, with
// no code shipped to the server:
//
//   def hook(z, hook): z[:, :, 7] = clean_cache[hook.name][:, :, 7]; return z
//
// is, as a program on blocks.0.attn.hook_z:
//
//   HookProgramSpec p;
//   p.hook = "blocks.0.attn.hook_z";
//   p.nodes = {ProgramNodeSpec::Activation("z"),
//              ProgramNodeSpec::Hook("clean", "blocks.0.attn.hook_z", HookRun::kPatch),
//              ProgramNodeSpec::Index("clean7", "clean", {All(), All(), At(7)}),
//              ProgramNodeSpec::Write("out", "z", "clean7", {All(), All(), At(7)})};
//   p.output = "out";
//   LG_ASSIGN_OR_RETURN(ProgramPlan plan, ProgramPlan::Compile({p}, model, env, limits));
//   ... run the patch input caching plan.PatchHookNames() into patch_cache ...
//   auto values = std::make_shared<ProgramValues>();
//   model.Run(input, options, plan.MakeHooks(&patch_cache, values));
//
// A program is a list of nodes with unique ids; a node names its operands by
// id, so programs are DAGs by construction once cycles and dangling ids are
// refused. Compile infers every node's shape and dtype from the model and the
// input, checks every operation, and refuses anything over the limits, so a
// valid plan's run cannot fail on a shape. No loops, no recursion, no code.
#ifndef LENSGRID_WORKER_MODEL_HOOK_PROGRAM_H_
#define LENSGRID_WORKER_MODEL_HOOK_PROGRAM_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/activation_cache.h"
#include "worker/model/hooked_transformer.h"

namespace lensgrid {

enum class ProgramOp {
  // Leaves.
  kActivation,  // the activation at the program's hook, as it arrives there
  kHook,        // an activation at `name` of this run (an earlier hook, as it
                // left that hook) or of the patch run (any hook; run = kPatch)
  kSaved,       // a value a program saved earlier in this run, by `name`
  kWeight,      // a model weight by TransformerLens name (HookedTransformer::Weight)
  kLiteral,     // `literal`, a floating-point or bool tensor (cast to the model's dtype)
  kConstant,    // `scalar`, a 0-d tensor
  // Elementwise, broadcasting as NumPy; bool operands count as 0 / 1.
  kAdd,
  kSub,
  kMul,
  kDiv,
  kPow,
  kMaximum,
  kMinimum,
  kNeg,
  kAbs,
  kExp,
  kLog,
  kSqrt,
  kTanh,
  kRelu,
  kSigmoid,
  // Comparisons (-> bool) and selection.
  kLt,
  kLe,
  kGt,
  kGe,
  kEq,
  kNe,
  kWhere,  // inputs: condition (bool), then, else
  // Shape.
  kIndex,    // input[region]; an axis indexed by `at` is dropped
  kReshape,  // to `shape` (one -1 allowed)
  kPermute,  // axes in the order `axes`
  // Contractions.
  kMatmul,  // torch.matmul of two inputs
  kEinsum,  // `equation` ("bphd,hdm->bpm"), 1 to 3 inputs, explicit "->"
  // Reductions over `axes` (empty: all), keeping them with `keepdim`.
  kSum,
  kMean,
  kMax,
  kMin,
  kNorm,        // vector p-norm, p = `scalar` (Default 2 when 0)
  kSoftmax,     // over the one axis in `axes`
  kLogSoftmax,  // over the one axis in `axes`
  // Directions along the last axis: inputs x [..., d] and direction [d] (or
  // broadcasting to x): onto = (x.d / d.d) d; out = x - onto.
  kProjectOnto,
  kProjectOut,
  // A copy of inputs[0] with region = inputs[1] (broadcast to the region):
  // TransformerLens's `act[:, pos, head] = value`.
  kWrite,
};

// One axis of a region, as Python's act[...] writes it. Regions index axes
// independently ("orthogonal" indexing): act[:, [1, 3], 2] is positions 1 and
// 3 of head 2, never NumPy's paired fancy indexing.
struct RegionAxis {
  enum class Kind { kAll, kAt, kSlice, kList, kEllipsis };
  Kind kind = Kind::kAll;
  int64_t at = 0;                      // kAt; negative counts from the end
  std::optional<int64_t> start, stop;  // kSlice, Python-style (clamped)
  int64_t step = 1;                    // kSlice; > 0
  std::vector<int64_t> list;           // kList; negative counts from the end
};
RegionAxis All();
RegionAxis At(int64_t i);
RegionAxis Range(std::optional<int64_t> start, std::optional<int64_t> stop, int64_t step = 1);
RegionAxis List(std::vector<int64_t> indices);
RegionAxis Ellipsis();

enum class HookRun { kThis, kPatch };

struct ProgramNodeSpec {
  std::string id;  // unique within its program
  ProgramOp op = ProgramOp::kActivation;
  std::vector<std::string> inputs;  // operand node ids
  std::string name;                 // kHook, kSaved, kWeight; kEinsum's equation
  HookRun run = HookRun::kThis;     // kHook
  at::Tensor literal;               // kLiteral
  double scalar = 0;                // kConstant; kNorm's p
  std::vector<int64_t> axes;        // reductions, softmax, kPermute; negative from the end
  std::vector<int64_t> shape;       // kReshape
  bool keepdim = false;             // reductions
  std::vector<RegionAxis> region;   // kIndex, kWrite

  static ProgramNodeSpec Activation(std::string id);
  static ProgramNodeSpec Hook(std::string id, std::string hook, HookRun run = HookRun::kThis);
  static ProgramNodeSpec Saved(std::string id, std::string name);
  static ProgramNodeSpec Weight(std::string id, std::string name);
  static ProgramNodeSpec Literal(std::string id, at::Tensor value);
  static ProgramNodeSpec Constant(std::string id, double value);
  static ProgramNodeSpec Op(std::string id, ProgramOp op, std::vector<std::string> inputs);
  static ProgramNodeSpec Index(std::string id, std::string input, std::vector<RegionAxis> region);
  static ProgramNodeSpec Write(std::string id, std::string target, std::string value,
                               std::vector<RegionAxis> region);
  static ProgramNodeSpec Reduce(std::string id, ProgramOp op, std::string input,
                                std::vector<int64_t> axes, bool keepdim = false);
  static ProgramNodeSpec Einsum(std::string id, std::string equation,
                                std::vector<std::string> inputs);
};

struct HookProgramSpec {
  std::string hook;  // exact or shorthand
  std::vector<ProgramNodeSpec> nodes;
  // The node whose value replaces the activation (same shape; cast to the
  // activation's dtype). Empty: the program only observes.
  std::string output;
  // Values returned to the caller (and readable by later programs through
  // kSaved): (name, node id). Names are unique across a run's programs.
  std::vector<std::pair<std::string, std::string>> saves;
};

// "kAdd" -> "add": the names errors and the wire's JSON use.
const char* ProgramOpName(ProgramOp op);

struct ProgramLimits {
  int64_t max_nodes = 4096;                        // over all programs of a run
  int64_t max_bytes = int64_t{1} << 30;            // every node's value of every program, summed
  int64_t max_einsum_elements = int64_t{1} << 32;  // product of an einsum's index sizes
};

// What the programs are checked against: the activations of this run.
struct ProgramEnv {
  // Concrete activation shapes of this run, by hook id (HookedTransformer's
  // hook_names() order).
  std::vector<std::vector<int64_t>> hook_shapes;
  at::ScalarType dtype = at::kFloat;  // the activations' dtype
  bool has_patch_run = false;         // kHook with run = kPatch allowed
};

// What a run of a plan produces: saved values, in the order saved.
struct ProgramValues {
  std::vector<std::pair<std::string, at::Tensor>> saved;
  absl::StatusOr<at::Tensor> Get(const std::string& name) const;
};

struct SavedInfo {
  std::string name;
  std::vector<int64_t> shape;
  bool is_bool = false;
};

class ProgramPlan {
 public:
  // INVALID_ARGUMENT naming programs[i], the node, its operation and the
  // shapes involved (NOT_FOUND for an unknown hook); RESOURCE_EXHAUSTED naming
  // the limit a plan would exceed.
  static absl::StatusOr<ProgramPlan> Compile(const std::vector<HookProgramSpec>& programs,
                                             const HookedTransformer& model, const ProgramEnv& env,
                                             const ProgramLimits& limits);

  // Hooks whose activations the patch run must cache (full names).
  const std::vector<std::string>& PatchHookNames() const { return patch_hooks_; }
  // Every saved value, in the order the run saves them.
  const std::vector<SavedInfo>& saved() const { return saved_; }
  int64_t total_bytes() const { return total_bytes_; }

  // The hooks that run the programs (and record what later ones read) in one
  // forward. `patch_cache` holds PatchHookNames() (may be null without kPatch
  // leaves); saved values land in *values. The hooks hold what they need.
  std::vector<NamedHook> MakeHooks(const ActivationCache* patch_cache,
                                   std::shared_ptr<ProgramValues> values) const;

  struct Compiled;  // internal
  ProgramPlan();
  ~ProgramPlan();
  ProgramPlan(ProgramPlan&&) noexcept;
  ProgramPlan& operator=(ProgramPlan&&) noexcept;

 private:
  std::vector<std::shared_ptr<const Compiled>> programs_;  // in the order the forward runs them
  std::vector<std::string> patch_hooks_;
  std::vector<std::string> recorded_hooks_;  // this-run kHook leaves
  std::vector<SavedInfo> saved_;
  int64_t total_bytes_ = 0;
};

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_HOOK_PROGRAM_H_
