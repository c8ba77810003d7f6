#include "worker/model/hook_program.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace lensgrid {

RegionAxis All() { return {}; }
RegionAxis At(int64_t i) {
  RegionAxis s;
  s.kind = RegionAxis::Kind::kAt;
  s.at = i;
  return s;
}
RegionAxis Range(std::optional<int64_t> start, std::optional<int64_t> stop, int64_t step) {
  RegionAxis s;
  s.kind = RegionAxis::Kind::kSlice;
  s.start = start;
  s.stop = stop;
  s.step = step;
  return s;
}
RegionAxis List(std::vector<int64_t> indices) {
  RegionAxis s;
  s.kind = RegionAxis::Kind::kList;
  s.list = std::move(indices);
  return s;
}
RegionAxis Ellipsis() {
  RegionAxis s;
  s.kind = RegionAxis::Kind::kEllipsis;
  return s;
}

namespace {
ProgramNodeSpec Node(std::string id, ProgramOp op) {
  ProgramNodeSpec n;
  n.id = std::move(id);
  n.op = op;
  return n;
}
}  // namespace

ProgramNodeSpec ProgramNodeSpec::Activation(std::string id) {
  return Node(std::move(id), ProgramOp::kActivation);
}
ProgramNodeSpec ProgramNodeSpec::Hook(std::string id, std::string hook, HookRun run) {
  ProgramNodeSpec n = Node(std::move(id), ProgramOp::kHook);
  n.name = std::move(hook);
  n.run = run;
  return n;
}
ProgramNodeSpec ProgramNodeSpec::Saved(std::string id, std::string name) {
  ProgramNodeSpec n = Node(std::move(id), ProgramOp::kSaved);
  n.name = std::move(name);
  return n;
}
ProgramNodeSpec ProgramNodeSpec::Weight(std::string id, std::string name) {
  ProgramNodeSpec n = Node(std::move(id), ProgramOp::kWeight);
  n.name = std::move(name);
  return n;
}
ProgramNodeSpec ProgramNodeSpec::Literal(std::string id, at::Tensor value) {
  ProgramNodeSpec n = Node(std::move(id), ProgramOp::kLiteral);
  n.literal = std::move(value);
  return n;
}
ProgramNodeSpec ProgramNodeSpec::Constant(std::string id, double value) {
  ProgramNodeSpec n = Node(std::move(id), ProgramOp::kConstant);
  n.scalar = value;
  return n;
}
ProgramNodeSpec ProgramNodeSpec::Op(std::string id, ProgramOp op, std::vector<std::string> inputs) {
  ProgramNodeSpec n = Node(std::move(id), op);
  n.inputs = std::move(inputs);
  return n;
}
ProgramNodeSpec ProgramNodeSpec::Index(std::string id, std::string input,
                                       std::vector<RegionAxis> region) {
  ProgramNodeSpec n = Op(std::move(id), ProgramOp::kIndex, {std::move(input)});
  n.region = std::move(region);
  return n;
}
ProgramNodeSpec ProgramNodeSpec::Write(std::string id, std::string target, std::string value,
                                       std::vector<RegionAxis> region) {
  ProgramNodeSpec n = Op(std::move(id), ProgramOp::kWrite, {std::move(target), std::move(value)});
  n.region = std::move(region);
  return n;
}
ProgramNodeSpec ProgramNodeSpec::Reduce(std::string id, ProgramOp op, std::string input,
                                        std::vector<int64_t> axes, bool keepdim) {
  ProgramNodeSpec n = Op(std::move(id), op, {std::move(input)});
  n.axes = std::move(axes);
  n.keepdim = keepdim;
  return n;
}
ProgramNodeSpec ProgramNodeSpec::Einsum(std::string id, std::string equation,
                                        std::vector<std::string> inputs) {
  ProgramNodeSpec n = Op(std::move(id), ProgramOp::kEinsum, std::move(inputs));
  n.name = std::move(equation);
  return n;
}

const char* ProgramOpName(ProgramOp op) {
  switch (op) {
    case ProgramOp::kActivation:
      return "activation";
    case ProgramOp::kHook:
      return "hook";
    case ProgramOp::kSaved:
      return "saved";
    case ProgramOp::kWeight:
      return "weight";
    case ProgramOp::kLiteral:
      return "literal";
    case ProgramOp::kConstant:
      return "constant";
    case ProgramOp::kAdd:
      return "add";
    case ProgramOp::kSub:
      return "sub";
    case ProgramOp::kMul:
      return "mul";
    case ProgramOp::kDiv:
      return "div";
    case ProgramOp::kPow:
      return "pow";
    case ProgramOp::kMaximum:
      return "maximum";
    case ProgramOp::kMinimum:
      return "minimum";
    case ProgramOp::kNeg:
      return "neg";
    case ProgramOp::kAbs:
      return "abs";
    case ProgramOp::kExp:
      return "exp";
    case ProgramOp::kLog:
      return "log";
    case ProgramOp::kSqrt:
      return "sqrt";
    case ProgramOp::kTanh:
      return "tanh";
    case ProgramOp::kRelu:
      return "relu";
    case ProgramOp::kSigmoid:
      return "sigmoid";
    case ProgramOp::kLt:
      return "lt";
    case ProgramOp::kLe:
      return "le";
    case ProgramOp::kGt:
      return "gt";
    case ProgramOp::kGe:
      return "ge";
    case ProgramOp::kEq:
      return "eq";
    case ProgramOp::kNe:
      return "ne";
    case ProgramOp::kWhere:
      return "where";
    case ProgramOp::kIndex:
      return "index";
    case ProgramOp::kReshape:
      return "reshape";
    case ProgramOp::kPermute:
      return "permute";
    case ProgramOp::kMatmul:
      return "matmul";
    case ProgramOp::kEinsum:
      return "einsum";
    case ProgramOp::kSum:
      return "sum";
    case ProgramOp::kMean:
      return "mean";
    case ProgramOp::kMax:
      return "max";
    case ProgramOp::kMin:
      return "min";
    case ProgramOp::kNorm:
      return "norm";
    case ProgramOp::kSoftmax:
      return "softmax";
    case ProgramOp::kLogSoftmax:
      return "log_softmax";
    case ProgramOp::kProjectOnto:
      return "project_onto";
    case ProgramOp::kProjectOut:
      return "project_out";
    case ProgramOp::kWrite:
      return "write";
  }
  return "unknown";
}

absl::StatusOr<at::Tensor> ProgramValues::Get(const std::string& name) const {
  for (const auto& [n, t] : saved) {
    if (n == name) return t;
  }
  return absl::NotFoundError(absl::StrCat("no saved value named '", name, "'"));
}

namespace {

using Shape = std::vector<int64_t>;

struct ValueType {
  Shape shape;
  bool is_bool = false;
};

std::string ShapeStr(const Shape& s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }
std::string TypeStr(const ValueType& t) {
  return absl::StrCat(t.is_bool ? "bool " : "", ShapeStr(t.shape));
}

// Saturates at INT64_MAX, so a hostile shape cannot overflow a limit check.
int64_t NumElements(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) {
      n = std::numeric_limits<int64_t>::max();
    } else {
      n *= d;
    }
  }
  for (int64_t d : s) {
    if (d == 0) return 0;
  }
  return n;
}

// NumPy broadcasting of two shapes; nullopt when they do not broadcast.
std::optional<Shape> Broadcast(const Shape& a, const Shape& b) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1) return std::nullopt;
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// One axis of a region, resolved against its axis: the indices it selects.
struct ResolvedAxis {
  RegionAxis::Kind kind = RegionAxis::Kind::kAll;
  int64_t at = 0;                         // kAt, in [0, n)
  int64_t start = 0, stop = 0, step = 1;  // kSlice, clamped; kAll = [0, n)
  std::vector<int64_t> list;              // kList, in [0, n)
  int64_t length() const {
    switch (kind) {
      case RegionAxis::Kind::kAt:
        return 1;
      case RegionAxis::Kind::kList:
        return static_cast<int64_t>(list.size());
      default:
        return stop <= start ? 0 : (stop - start + step - 1) / step;
    }
  }
};

// A compiled node: operands by position in the program's topological order,
// leaves resolved.
struct CNode {
  ProgramOp op;
  std::string label;  // "node 'x' (add)"
  std::vector<int> in;
  ValueType type;
  at::Tensor value;  // kWeight, kLiteral, kConstant: resolved at compile time
  int hook_id = -1;  // kHook
  std::string name;  // kHook (full name), kSaved, kEinsum's equation
  HookRun run = HookRun::kThis;
  std::vector<int64_t> axes;  // normalised to [0, rank)
  Shape shape;                // kReshape
  bool keepdim = false;
  double p = 2;                      // kNorm
  std::vector<ResolvedAxis> region;  // kIndex, kWrite: one per leading axis
};

std::optional<int64_t> NormalizeIndex(int64_t i, int64_t n) {
  if (i < -n || i >= n) return std::nullopt;
  return i < 0 ? i + n : i;
}

bool IsElementwiseBinary(ProgramOp op) {
  switch (op) {
    case ProgramOp::kAdd:
    case ProgramOp::kSub:
    case ProgramOp::kMul:
    case ProgramOp::kDiv:
    case ProgramOp::kPow:
    case ProgramOp::kMaximum:
    case ProgramOp::kMinimum:
      return true;
    default:
      return false;
  }
}
bool IsUnary(ProgramOp op) {
  switch (op) {
    case ProgramOp::kNeg:
    case ProgramOp::kAbs:
    case ProgramOp::kExp:
    case ProgramOp::kLog:
    case ProgramOp::kSqrt:
    case ProgramOp::kTanh:
    case ProgramOp::kRelu:
    case ProgramOp::kSigmoid:
      return true;
    default:
      return false;
  }
}
bool IsComparison(ProgramOp op) {
  switch (op) {
    case ProgramOp::kLt:
    case ProgramOp::kLe:
    case ProgramOp::kGt:
    case ProgramOp::kGe:
    case ProgramOp::kEq:
    case ProgramOp::kNe:
      return true;
    default:
      return false;
  }
}
bool IsReduction(ProgramOp op) {
  switch (op) {
    case ProgramOp::kSum:
    case ProgramOp::kMean:
    case ProgramOp::kMax:
    case ProgramOp::kMin:
    case ProgramOp::kNorm:
      return true;
    default:
      return false;
  }
}
bool IsLeaf(ProgramOp op) {
  switch (op) {
    case ProgramOp::kActivation:
    case ProgramOp::kHook:
    case ProgramOp::kSaved:
    case ProgramOp::kWeight:
    case ProgramOp::kLiteral:
    case ProgramOp::kConstant:
      return true;
    default:
      return false;
  }
}

// How many operands an operation takes: {min, max}.
std::pair<size_t, size_t> Arity(ProgramOp op) {
  if (IsLeaf(op)) return {0, 0};
  if (IsElementwiseBinary(op) || IsComparison(op) || op == ProgramOp::kMatmul ||
      op == ProgramOp::kProjectOnto || op == ProgramOp::kProjectOut || op == ProgramOp::kWrite) {
    return {2, 2};
  }
  if (op == ProgramOp::kWhere) return {3, 3};
  if (op == ProgramOp::kEinsum) return {1, 3};
  return {1, 1};
}

}  // namespace

struct ProgramPlan::Compiled {
  int index = 0;  // in the request
  std::string hook;
  int hook_id = -1;
  std::vector<CNode> nodes;  // topological order
  int output = -1;
  std::vector<std::pair<std::string, int>> saves;
};

namespace {

// Errors of one node: "programs[0] (on blocks.0.attn.hook_z) node 'x' (add): ...".
class NodeErrors {
 public:
  NodeErrors(std::string prefix) : prefix_(std::move(prefix)) {}
  absl::Status Invalid(const std::string& label, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(prefix_, " ", label, ": ", what));
  }
  absl::Status Exhausted(const std::string& label, const std::string& what) const {
    return absl::ResourceExhaustedError(absl::StrCat(prefix_, " ", label, ": ", what));
  }
  const std::string& prefix() const { return prefix_; }

 private:
  std::string prefix_;
};

absl::StatusOr<std::vector<ResolvedAxis>> ResolveRegion(const std::vector<RegionAxis>& region,
                                                        const Shape& shape, const NodeErrors& err,
                                                        const std::string& label) {
  const int64_t rank = static_cast<int64_t>(shape.size());
  int ellipses = 0;
  for (const RegionAxis& s : region) ellipses += s.kind == RegionAxis::Kind::kEllipsis;
  if (ellipses > 1) return err.Invalid(label, "a region may hold one ellipsis (...) at most");
  const int64_t named = static_cast<int64_t>(region.size()) - ellipses;
  if (named > rank) {
    return err.Invalid(label, absl::StrCat("the region names ", named, " axes but the value ",
                                           ShapeStr(shape), " has ", rank));
  }
  std::vector<RegionAxis> full;
  for (const RegionAxis& s : region) {
    if (s.kind == RegionAxis::Kind::kEllipsis) {
      for (int64_t i = 0; i < rank - named; ++i) full.push_back(All());
    } else {
      full.push_back(s);
    }
  }
  std::vector<ResolvedAxis> out;
  for (size_t axis = 0; axis < full.size(); ++axis) {
    const RegionAxis& s = full[axis];
    const int64_t n = shape[axis];
    ResolvedAxis r;
    r.kind = s.kind;
    switch (s.kind) {
      case RegionAxis::Kind::kEllipsis:
      case RegionAxis::Kind::kAll:
        r.kind = RegionAxis::Kind::kAll;
        r.start = 0;
        r.stop = n;
        break;
      case RegionAxis::Kind::kAt: {
        auto i = NormalizeIndex(s.at, n);
        if (!i) {
          return err.Invalid(label, absl::StrCat("index ", s.at, " is out of range for axis ", axis,
                                                 " of size ", n, " in ", ShapeStr(shape)));
        }
        r.at = *i;
        break;
      }
      case RegionAxis::Kind::kSlice: {
        if (s.step <= 0) {
          return err.Invalid(
              label, absl::StrCat("slice step ", s.step, " on axis ", axis, " must be positive"));
        }
        auto clamp = [n](std::optional<int64_t> v, int64_t dflt) {
          if (!v) return dflt;
          int64_t x = *v < 0 ? *v + n : *v;
          return std::min(std::max<int64_t>(x, 0), n);
        };
        r.start = clamp(s.start, 0);
        r.stop = clamp(s.stop, n);
        r.step = s.step;
        break;
      }
      case RegionAxis::Kind::kList: {
        if (s.list.empty())
          return err.Invalid(label, absl::StrCat("empty index list on axis ", axis));
        for (int64_t v : s.list) {
          auto i = NormalizeIndex(v, n);
          if (!i) {
            return err.Invalid(label, absl::StrCat("index ", v, " is out of range for axis ", axis,
                                                   " of size ", n, " in ", ShapeStr(shape)));
          }
          r.list.push_back(*i);
        }
        break;
      }
    }
    out.push_back(std::move(r));
  }
  return out;
}

// The shape input[region] has: kAt axes dropped, the others their length.
Shape RegionShape(const std::vector<ResolvedAxis>& region, const Shape& shape) {
  Shape out;
  for (size_t axis = 0; axis < shape.size(); ++axis) {
    if (axis >= region.size()) {
      out.push_back(shape[axis]);
    } else if (region[axis].kind != RegionAxis::Kind::kAt) {
      out.push_back(region[axis].length());
    }
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> NormalizeAxes(const std::vector<int64_t>& axes, size_t rank,
                                                   const NodeErrors& err, const std::string& label,
                                                   const Shape& shape) {
  std::vector<int64_t> out;
  for (int64_t a : axes) {
    auto i = NormalizeIndex(a, static_cast<int64_t>(rank));
    if (!i) {
      return err.Invalid(label, absl::StrCat("axis ", a, " is out of range for ", ShapeStr(shape)));
    }
    if (std::find(out.begin(), out.end(), *i) != out.end()) {
      return err.Invalid(label, absl::StrCat("axis ", a, " is named twice"));
    }
    out.push_back(*i);
  }
  return out;
}

// Checks an einsum equation against its operands; returns the output shape
// and the product of every index's size (its iteration space).
absl::StatusOr<std::pair<Shape, int64_t>> EinsumShape(const std::string& equation,
                                                      const std::vector<Shape>& operands,
                                                      const NodeErrors& err,
                                                      const std::string& label) {
  const size_t arrow = equation.find("->");
  if (arrow == std::string::npos) {
    return err.Invalid(
        label, absl::StrCat("einsum '", equation, "' needs an explicit output (\"ij,jk->ik\")"));
  }
  std::vector<std::string> terms;
  std::string lhs = equation.substr(0, arrow), rhs = equation.substr(arrow + 2);
  size_t begin = 0;
  for (size_t i = 0; i <= lhs.size(); ++i) {
    if (i == lhs.size() || lhs[i] == ',') {
      terms.push_back(lhs.substr(begin, i - begin));
      begin = i + 1;
    }
  }
  if (terms.size() != operands.size()) {
    return err.Invalid(
        label, absl::StrCat("einsum '", equation, "' has ", terms.size(),
                            " operand terms but the node has ", operands.size(), " inputs"));
  }
  std::map<char, int64_t> size;
  auto is_letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  for (size_t t = 0; t < terms.size(); ++t) {
    const std::string& term = terms[t];
    for (char c : term) {
      if (!is_letter(c)) {
        return err.Invalid(label, absl::StrCat("einsum '", equation,
                                               "': only letters name axes (no spaces, no ...)"));
      }
    }
    if (term.size() != operands[t].size()) {
      return err.Invalid(label, absl::StrCat("einsum term '", term, "' has ", term.size(),
                                             " axes but input ", t, " is ", ShapeStr(operands[t])));
    }
    for (size_t i = 0; i < term.size(); ++i) {
      auto [it, inserted] = size.emplace(term[i], operands[t][i]);
      if (!inserted && it->second != operands[t][i]) {
        return err.Invalid(label,
                           absl::StrCat("einsum '", equation, "': axis '", std::string(1, term[i]),
                                        "' has size ", it->second, " and ", operands[t][i]));
      }
    }
  }
  Shape out;
  std::set<char> seen;
  for (char c : rhs) {
    if (!is_letter(c) || !size.count(c) || !seen.insert(c).second) {
      return err.Invalid(label,
                         absl::StrCat("einsum '", equation, "': output axis '", std::string(1, c),
                                      "' must be a letter of the inputs, once"));
    }
    out.push_back(size[c]);
  }
  int64_t elements = 1;
  for (const auto& [c, n] : size) {
    if (n != 0 && elements > std::numeric_limits<int64_t>::max() / n) {
      elements = std::numeric_limits<int64_t>::max();
      break;
    }
    elements *= n;
  }
  return std::make_pair(out, elements);
}

absl::StatusOr<Shape> MatmulShape(const Shape& a, const Shape& b, const NodeErrors& err,
                                  const std::string& label) {
  auto mismatch = [&] {
    return err.Invalid(label, absl::StrCat("matmul of ", ShapeStr(a), " and ", ShapeStr(b),
                                           ": inner sizes differ or a shape is 0-d"));
  };
  if (a.empty() || b.empty()) return mismatch();
  if (a.size() == 1 && b.size() == 1) {
    if (a[0] != b[0]) return mismatch();
    return Shape{};
  }
  if (b.size() == 1) {
    if (a.back() != b[0]) return mismatch();
    return Shape(a.begin(), a.end() - 1);
  }
  if (a.size() == 1) {
    if (a[0] != b[b.size() - 2]) return mismatch();
    Shape out(b.begin(), b.end() - 2);
    out.push_back(b.back());
    return out;
  }
  if (a.back() != b[b.size() - 2]) return mismatch();
  auto batch = Broadcast(Shape(a.begin(), a.end() - 2), Shape(b.begin(), b.end() - 2));
  if (!batch) {
    return err.Invalid(label, absl::StrCat("matmul of ", ShapeStr(a), " and ", ShapeStr(b),
                                           ": batch axes do not broadcast"));
  }
  batch->push_back(a[a.size() - 2]);
  batch->push_back(b.back());
  return *batch;
}

// Infers node `n`'s type from its operands' (already in n.in order), filling
// normalised parameters. `elements` receives an einsum's iteration space.
absl::Status InferType(const ProgramNodeSpec& src, CNode& n, const std::vector<ValueType>& in,
                       const NodeErrors& err, int64_t* elements) {
  const std::string& label = n.label;
  if (IsElementwiseBinary(n.op) || IsComparison(n.op)) {
    auto s = Broadcast(in[0].shape, in[1].shape);
    if (!s) {
      return err.Invalid(label, absl::StrCat("shapes ", ShapeStr(in[0].shape), " and ",
                                             ShapeStr(in[1].shape), " do not broadcast"));
    }
    n.type = {*s, IsComparison(n.op)};
    return absl::OkStatus();
  }
  if (IsUnary(n.op)) {
    n.type = {in[0].shape, false};
    return absl::OkStatus();
  }
  switch (n.op) {
    case ProgramOp::kWhere: {
      if (!in[0].is_bool) {
        return err.Invalid(
            label, absl::StrCat("the condition must be bool (a comparison), got ", TypeStr(in[0])));
      }
      auto s = Broadcast(in[0].shape, in[1].shape);
      if (s) s = Broadcast(*s, in[2].shape);
      if (!s) {
        return err.Invalid(
            label, absl::StrCat("shapes ", ShapeStr(in[0].shape), ", ", ShapeStr(in[1].shape),
                                " and ", ShapeStr(in[2].shape), " do not broadcast"));
      }
      n.type = {*s, in[1].is_bool && in[2].is_bool};
      return absl::OkStatus();
    }
    case ProgramOp::kIndex: {
      LG_ASSIGN_OR_RETURN(n.region, ResolveRegion(src.region, in[0].shape, err, label));
      n.type = {RegionShape(n.region, in[0].shape), in[0].is_bool};
      return absl::OkStatus();
    }
    case ProgramOp::kWrite: {
      if (in[0].is_bool) return err.Invalid(label, "the target of a write must be floating point");
      LG_ASSIGN_OR_RETURN(n.region, ResolveRegion(src.region, in[0].shape, err, label));
      for (size_t axis = 0; axis < n.region.size(); ++axis) {
        std::set<int64_t> seen(n.region[axis].list.begin(), n.region[axis].list.end());
        if (seen.size() != n.region[axis].list.size()) {
          return err.Invalid(label, absl::StrCat("the index list on axis ", axis,
                                                 " repeats an index; a write needs each once"));
        }
      }
      Shape region = RegionShape(n.region, in[0].shape);
      auto s = Broadcast(in[1].shape, region);
      if (!s || *s != region) {
        return err.Invalid(label, absl::StrCat("the value ", ShapeStr(in[1].shape),
                                               " does not broadcast to the region ",
                                               ShapeStr(region), " of ", ShapeStr(in[0].shape)));
      }
      n.type = {in[0].shape, false};
      return absl::OkStatus();
    }
    case ProgramOp::kReshape: {
      int inferred = -1;
      int64_t known = 1;
      for (size_t i = 0; i < src.shape.size(); ++i) {
        if (src.shape[i] == -1 && inferred < 0) {
          inferred = static_cast<int>(i);
        } else if (src.shape[i] < 0) {
          return err.Invalid(label, absl::StrCat("shape ", ShapeStr(src.shape),
                                                 ": sizes are >= 0, with one -1 at most"));
        } else {
          known = NumElements({known, src.shape[i]});
        }
      }
      const int64_t total = NumElements(in[0].shape);
      n.shape = src.shape;
      if (inferred >= 0) {
        if (known == 0 || total % known != 0) {
          return err.Invalid(label, absl::StrCat("cannot reshape ", ShapeStr(in[0].shape), " to ",
                                                 ShapeStr(src.shape)));
        }
        n.shape[inferred] = total / known;
      } else if (known != total) {
        return err.Invalid(label, absl::StrCat("cannot reshape ", ShapeStr(in[0].shape), " (",
                                               total, " elements) to ", ShapeStr(src.shape)));
      }
      n.type = {n.shape, in[0].is_bool};
      return absl::OkStatus();
    }
    case ProgramOp::kPermute: {
      if (src.axes.size() != in[0].shape.size()) {
        return err.Invalid(label, absl::StrCat("permute names ", src.axes.size(), " axes of ",
                                               ShapeStr(in[0].shape)));
      }
      LG_ASSIGN_OR_RETURN(n.axes,
                          NormalizeAxes(src.axes, in[0].shape.size(), err, label, in[0].shape));
      Shape out;
      for (int64_t a : n.axes) out.push_back(in[0].shape[a]);
      n.type = {out, in[0].is_bool};
      return absl::OkStatus();
    }
    case ProgramOp::kMatmul: {
      LG_ASSIGN_OR_RETURN(Shape s, MatmulShape(in[0].shape, in[1].shape, err, label));
      n.type = {s, false};
      return absl::OkStatus();
    }
    case ProgramOp::kEinsum: {
      std::vector<Shape> shapes;
      for (const ValueType& t : in) shapes.push_back(t.shape);
      LG_ASSIGN_OR_RETURN(auto shape_and_size, EinsumShape(src.name, shapes, err, label));
      n.name = src.name;
      n.type = {shape_and_size.first, false};
      *elements = shape_and_size.second;
      return absl::OkStatus();
    }
    case ProgramOp::kSum:
    case ProgramOp::kMean:
    case ProgramOp::kMax:
    case ProgramOp::kMin:
    case ProgramOp::kNorm: {
      const Shape& s = in[0].shape;
      if (src.axes.empty()) {
        for (size_t i = 0; i < s.size(); ++i) n.axes.push_back(static_cast<int64_t>(i));
      } else {
        LG_ASSIGN_OR_RETURN(n.axes, NormalizeAxes(src.axes, s.size(), err, label, s));
      }
      if (n.op == ProgramOp::kMax || n.op == ProgramOp::kMin) {
        for (int64_t a : n.axes) {
          if (s[a] == 0) {
            return err.Invalid(
                label, absl::StrCat("max/min over the empty axis ", a, " of ", ShapeStr(s)));
          }
        }
      }
      if (n.op == ProgramOp::kNorm) {
        n.p = src.scalar == 0 ? 2.0 : src.scalar;
        if (!(n.p > 0) || std::isnan(n.p)) {
          return err.Invalid(label, absl::StrCat("norm p must be > 0, got ", src.scalar));
        }
      }
      n.keepdim = src.keepdim;
      Shape out;
      for (size_t i = 0; i < s.size(); ++i) {
        const bool reduced =
            std::find(n.axes.begin(), n.axes.end(), static_cast<int64_t>(i)) != n.axes.end();
        if (!reduced) {
          out.push_back(s[i]);
        } else if (n.keepdim) {
          out.push_back(1);
        }
      }
      n.type = {out, false};
      return absl::OkStatus();
    }
    case ProgramOp::kSoftmax:
    case ProgramOp::kLogSoftmax: {
      if (src.axes.size() != 1) {
        return err.Invalid(label,
                           absl::StrCat("softmax takes exactly one axis, got ", src.axes.size()));
      }
      LG_ASSIGN_OR_RETURN(n.axes,
                          NormalizeAxes(src.axes, in[0].shape.size(), err, label, in[0].shape));
      n.type = {in[0].shape, false};
      return absl::OkStatus();
    }
    case ProgramOp::kProjectOnto:
    case ProgramOp::kProjectOut: {
      const Shape& x = in[0].shape;
      const Shape& d = in[1].shape;
      auto s = Broadcast(x, d);
      if (x.empty() || d.empty() || !s || *s != x || d.back() != x.back()) {
        return err.Invalid(
            label, absl::StrCat("the direction ", ShapeStr(d), " must match the last axis of ",
                                ShapeStr(x), " and broadcast to it"));
      }
      n.type = {x, false};
      return absl::OkStatus();
    }
    default:
      return err.Invalid(label, "internal: no type rule");
  }
}

int64_t ValueBytes(const ValueType& t, at::ScalarType dtype) {
  return NumElements(
      {NumElements(t.shape), t.is_bool ? 1 : static_cast<int64_t>(c10::elementSize(dtype))});
}

// The programs' run-time state, shared by one run's hooks.
struct RunState {
  const ActivationCache* patch = nullptr;
  std::vector<at::Tensor> recorded;  // this-run activations by hook id
  std::shared_ptr<ProgramValues> values;
};

at::Tensor AsFloat(const at::Tensor& t, at::ScalarType dtype) {
  return t.scalar_type() == at::kBool ? t.to(dtype) : t;
}

at::Tensor IndexTensor(const ResolvedAxis& r, const at::Device& device) {
  switch (r.kind) {
    case RegionAxis::Kind::kAt:
      return torch::full({1}, r.at, torch::dtype(torch::kInt64).device(device));
    case RegionAxis::Kind::kList:
      return torch::tensor(r.list, torch::kInt64).to(device);
    default:
      return torch::arange(r.start, std::max(r.start, r.stop), r.step,
                           torch::dtype(torch::kInt64).device(device));
  }
}

at::Tensor ReadRegion(at::Tensor t, const std::vector<ResolvedAxis>& region) {
  for (int64_t axis = static_cast<int64_t>(region.size()) - 1; axis >= 0; --axis) {
    const ResolvedAxis& r = region[axis];
    switch (r.kind) {
      case RegionAxis::Kind::kAt:
        t = t.select(axis, r.at);
        break;
      case RegionAxis::Kind::kList:
        t = t.index_select(axis, IndexTensor(r, t.device()));
        break;
      case RegionAxis::Kind::kSlice:
        t = t.slice(axis, r.start, std::max(r.start, r.stop), r.step);
        break;
      default:
        break;
    }
  }
  return t;
}

// A copy of `target` with its region set to `value` (broadcast to the
// region): index_put over open-mesh indices, so every axis is independent.
at::Tensor WriteRegion(const at::Tensor& target, const at::Tensor& value,
                       const std::vector<ResolvedAxis>& region) {
  const int64_t k = static_cast<int64_t>(region.size());
  Shape region_shape = RegionShape(region, target.sizes().vec());
  at::Tensor v = value.to(target.scalar_type()).expand(region_shape);
  std::vector<at::indexing::TensorIndex> indices;
  for (int64_t axis = 0; axis < k; ++axis) {
    Shape view(static_cast<size_t>(k), 1);
    at::Tensor idx = IndexTensor(region[axis], target.device());
    view[axis] = idx.numel();
    indices.emplace_back(idx.reshape(view));
    if (region[axis].kind == RegionAxis::Kind::kAt) v = v.unsqueeze(axis);
  }
  if (k == 0) return v.clone();
  return target.clone().index_put_(indices, v);
}

at::Tensor EvalNode(const CNode& n, const std::vector<at::Tensor>& vals, const at::Tensor& act,
                    RunState& state, at::ScalarType dtype) {
  auto x = [&](int i) -> const at::Tensor& { return vals[n.in[i]]; };
  auto f = [&](int i) { return AsFloat(x(i), dtype); };
  switch (n.op) {
    case ProgramOp::kActivation:
      return act;
    case ProgramOp::kHook:
      if (n.run == HookRun::kThis) {
        if (state.recorded.size() <= static_cast<size_t>(n.hook_id) ||
            !state.recorded[n.hook_id].defined()) {
          throw RunError(RunError::Kind::kInvalidArgument,
                         absl::StrCat(n.label, ": ", n.name, " was not computed in this run"));
        }
        return state.recorded[n.hook_id];
      }
      return state.patch->Get(n.name).value();
    case ProgramOp::kSaved:
      return state.values->Get(n.name).value();
    case ProgramOp::kWeight:
    case ProgramOp::kLiteral:
    case ProgramOp::kConstant:
      return n.value;
    case ProgramOp::kAdd:
      return f(0) + f(1);
    case ProgramOp::kSub:
      return f(0) - f(1);
    case ProgramOp::kMul:
      return f(0) * f(1);
    case ProgramOp::kDiv:
      return f(0) / f(1);
    case ProgramOp::kPow:
      return at::pow(f(0), f(1));
    case ProgramOp::kMaximum:
      return at::maximum(f(0), f(1));
    case ProgramOp::kMinimum:
      return at::minimum(f(0), f(1));
    case ProgramOp::kNeg:
      return -f(0);
    case ProgramOp::kAbs:
      return f(0).abs();
    case ProgramOp::kExp:
      return f(0).exp();
    case ProgramOp::kLog:
      return f(0).log();
    case ProgramOp::kSqrt:
      return f(0).sqrt();
    case ProgramOp::kTanh:
      return f(0).tanh();
    case ProgramOp::kRelu:
      return f(0).relu();
    case ProgramOp::kSigmoid:
      return f(0).sigmoid();
    case ProgramOp::kLt:
      return f(0).lt(f(1));
    case ProgramOp::kLe:
      return f(0).le(f(1));
    case ProgramOp::kGt:
      return f(0).gt(f(1));
    case ProgramOp::kGe:
      return f(0).ge(f(1));
    case ProgramOp::kEq:
      return f(0).eq(f(1));
    case ProgramOp::kNe:
      return f(0).ne(f(1));
    case ProgramOp::kWhere:
      if (n.type.is_bool) return at::where(x(0), x(1), x(2));
      return at::where(x(0), f(1), f(2));
    case ProgramOp::kIndex:
      return ReadRegion(x(0), n.region);
    case ProgramOp::kWrite:
      return WriteRegion(x(0), f(1), n.region);
    case ProgramOp::kReshape:
      return x(0).reshape(n.shape);
    case ProgramOp::kPermute:
      return x(0).permute(n.axes);
    case ProgramOp::kMatmul:
      return at::matmul(f(0), f(1));
    case ProgramOp::kEinsum: {
      std::vector<at::Tensor> ops;
      for (size_t i = 0; i < n.in.size(); ++i) ops.push_back(f(static_cast<int>(i)));
      return at::einsum(n.name, ops);
    }
    case ProgramOp::kSum:
      return f(0).sum(n.axes, n.keepdim);
    case ProgramOp::kMean:
      return f(0).mean(n.axes, n.keepdim);
    case ProgramOp::kMax:
      return n.axes.empty() ? f(0).clone() : f(0).amax(n.axes, n.keepdim);
    case ProgramOp::kMin:
      return n.axes.empty() ? f(0).clone() : f(0).amin(n.axes, n.keepdim);
    case ProgramOp::kNorm:
      return at::linalg_vector_norm(
          f(0), n.p, n.axes.empty() ? at::OptionalIntArrayRef() : at::OptionalIntArrayRef(n.axes),
          n.keepdim);
    case ProgramOp::kSoftmax:
      return at::softmax(f(0), n.axes[0]);
    case ProgramOp::kLogSoftmax:
      return at::log_softmax(f(0), n.axes[0]);
    case ProgramOp::kProjectOnto:
    case ProgramOp::kProjectOut: {
      at::Tensor v = f(0), d = f(1);
      at::Tensor onto = (v * d).sum(-1, true) / (d * d).sum(-1, true) * d;
      return n.op == ProgramOp::kProjectOnto ? onto : v - onto;
    }
  }
  return {};
}

// Runs one compiled program on `act`; returns the replacement, if any.
std::optional<at::Tensor> RunProgram(const ProgramPlan::Compiled& p, const at::Tensor& act,
                                     RunState& state) {
  const at::ScalarType dtype = act.scalar_type();
  std::vector<at::Tensor> vals(p.nodes.size());
  for (size_t i = 0; i < p.nodes.size(); ++i) {
    const CNode& n = p.nodes[i];
    try {
      vals[i] = EvalNode(n, vals, act, state, dtype);
    } catch (const c10::Error& e) {
      throw RunError(RunError::Kind::kInvalidArgument,
                     absl::StrCat("programs[", p.index, "] (on ", p.hook, ") ", n.label, ": ",
                                  e.what_without_backtrace()));
    }
    if (vals[i].sizes() != at::IntArrayRef(n.type.shape)) {
      throw RunError(
          RunError::Kind::kInvalidArgument,
          absl::StrCat("internal: programs[", p.index, "] ", n.label, " computed ",
                       c10::str(vals[i].sizes()), " but was checked as ", ShapeStr(n.type.shape)));
    }
  }
  for (const auto& [name, node] : p.saves) state.values->saved.emplace_back(name, vals[node]);
  if (p.output < 0) return std::nullopt;
  return vals[p.output];
}

}  // namespace

ProgramPlan::ProgramPlan() = default;
ProgramPlan::~ProgramPlan() = default;
ProgramPlan::ProgramPlan(ProgramPlan&&) noexcept = default;
ProgramPlan& ProgramPlan::operator=(ProgramPlan&&) noexcept = default;

absl::StatusOr<ProgramPlan> ProgramPlan::Compile(const std::vector<HookProgramSpec>& programs,
                                                 const HookedTransformer& model,
                                                 const ProgramEnv& env,
                                                 const ProgramLimits& limits) {
  // The order the forward runs them: by hook, then as given.
  std::vector<std::pair<int, int>> order;  // (hook id, index)
  int64_t total_nodes = 0;
  for (size_t i = 0; i < programs.size(); ++i) {
    auto id = model.HookId(programs[i].hook);
    if (!id.ok()) {
      return absl::Status(id.status().code(),
                          absl::StrCat("programs[", i, "].hook: ", id.status().message()));
    }
    if (static_cast<size_t>(*id) >= env.hook_shapes.size()) {
      return absl::InternalError("ProgramEnv.hook_shapes does not cover every hook");
    }
    order.emplace_back(*id, static_cast<int>(i));
    total_nodes += static_cast<int64_t>(programs[i].nodes.size());
  }
  if (total_nodes > limits.max_nodes) {
    return absl::ResourceExhaustedError(absl::StrCat("the programs have ", total_nodes,
                                                     " nodes, over this worker's limit of ",
                                                     limits.max_nodes, " (max program nodes)"));
  }
  std::stable_sort(order.begin(), order.end(), [&model](const auto& a, const auto& b) {
    return model.ExecutionRank(a.first) < model.ExecutionRank(b.first);
  });

  ProgramPlan plan;
  std::map<std::string, ValueType> saved_types;  // saved so far, in run order
  std::set<std::string> patch_hooks, recorded_hooks;
  for (const auto& [hook_id, index] : order) {
    const HookProgramSpec& src = programs[index];
    auto compiled = std::make_shared<Compiled>();
    compiled->index = index;
    compiled->hook = model.hook_names()[hook_id];
    compiled->hook_id = hook_id;
    const NodeErrors err(absl::StrCat("programs[", index, "] (on ", compiled->hook, ")"));

    // Ids, then a topological order (depth-first), refusing dangling ids and cycles.
    std::unordered_map<std::string, int> by_id;
    for (size_t i = 0; i < src.nodes.size(); ++i) {
      const std::string& id = src.nodes[i].id;
      if (id.empty()) return err.Invalid(absl::StrCat("nodes[", i, "]"), "has no id");
      if (!by_id.emplace(id, static_cast<int>(i)).second) {
        return err.Invalid(absl::StrCat("nodes[", i, "]"), absl::StrCat("repeats id '", id, "'"));
      }
    }
    auto label = [&](int i) {
      return absl::StrCat("node '", src.nodes[i].id, "' (", ProgramOpName(src.nodes[i].op), ")");
    };
    for (size_t i = 0; i < src.nodes.size(); ++i) {
      const ProgramNodeSpec& node = src.nodes[i];
      auto [lo, hi] = Arity(node.op);
      if (node.inputs.size() < lo || node.inputs.size() > hi) {
        return err.Invalid(label(i), absl::StrCat("takes ", lo == hi ? "" : "from ", lo,
                                                  lo == hi ? "" : absl::StrCat(" to ", hi),
                                                  " inputs, got ", node.inputs.size()));
      }
      for (const std::string& in : node.inputs) {
        if (!by_id.count(in)) {
          return err.Invalid(label(i),
                             absl::StrCat("input '", in, "' is not a node of this program"));
        }
      }
    }
    std::vector<int> topo, state(src.nodes.size(), 0), stack;  // 0 new, 1 open, 2 done
    std::vector<int> position(src.nodes.size(), -1);
    // Depth-first without recursion (a long chain must not exhaust the stack):
    // each frame is (node, how many of its inputs are done).
    for (size_t root = 0; root < src.nodes.size(); ++root) {
      if (state[root] == 2) continue;
      std::vector<std::pair<int, size_t>> frames = {{static_cast<int>(root), 0}};
      state[root] = 1;
      stack = {static_cast<int>(root)};
      while (!frames.empty()) {
        auto& [i, next] = frames.back();
        const std::vector<std::string>& inputs = src.nodes[i].inputs;
        if (next == inputs.size()) {
          state[i] = 2;
          position[i] = static_cast<int>(topo.size());
          topo.push_back(i);
          frames.pop_back();
          stack.pop_back();
          continue;
        }
        const int child = by_id[inputs[next++]];
        if (state[child] == 2) continue;
        if (state[child] == 1) {
          std::vector<std::string> cycle;
          for (auto it = std::find(stack.begin(), stack.end(), child); it != stack.end(); ++it) {
            cycle.push_back(src.nodes[*it].id);
          }
          cycle.push_back(src.nodes[child].id);
          return err.Invalid(label(child),
                             absl::StrCat("is part of a cycle: ", absl::StrJoin(cycle, " -> ")));
        }
        state[child] = 1;
        stack.push_back(child);
        frames.emplace_back(child, 0);
      }
    }

    const Shape& act_shape = env.hook_shapes[hook_id];
    for (int i : topo) {
      const ProgramNodeSpec& node = src.nodes[i];
      CNode n;
      n.op = node.op;
      n.label = label(i);
      for (const std::string& in : node.inputs) n.in.push_back(position[by_id[in]]);
      std::vector<ValueType> in_types;
      for (int k : n.in) in_types.push_back(compiled->nodes[k].type);
      int64_t elements = 0;
      switch (node.op) {
        case ProgramOp::kActivation:
          n.type = {act_shape, false};
          break;
        case ProgramOp::kHook: {
          auto id = model.HookId(node.name);
          if (!id.ok()) {
            return absl::Status(id.status().code(), absl::StrCat(err.prefix(), " ", n.label, ": ",
                                                                 id.status().message()));
          }
          n.hook_id = *id;
          n.name = model.hook_names()[*id];
          n.run = node.run;
          if (node.run == HookRun::kPatch) {
            if (!env.has_patch_run) {
              return err.Invalid(n.label, absl::StrCat("reads ", n.name,
                                                       " of the patch run, but the request has "
                                                       "no patch input"));
            }
            patch_hooks.insert(n.name);
          } else {
            if (model.ExecutionRank(*id) >= model.ExecutionRank(hook_id)) {
              return err.Invalid(n.label,
                                 absl::StrCat(n.name, " is not computed before ", compiled->hook,
                                              " in the forward pass; read the hook's own "
                                              "activation with an 'activation' node"));
            }
            recorded_hooks.insert(n.name);
          }
          n.type = {env.hook_shapes[*id], false};
          break;
        }
        case ProgramOp::kSaved: {
          auto it = saved_types.find(node.name);
          if (it == saved_types.end()) {
            return err.Invalid(n.label, absl::StrCat("no program that runs before this one saves '",
                                                     node.name, "'"));
          }
          n.name = node.name;
          n.type = it->second;
          break;
        }
        case ProgramOp::kWeight: {
          auto w = model.Weight(node.name);
          if (!w.ok()) {
            return absl::Status(w.status().code(), absl::StrCat(err.prefix(), " ", n.label, ": ",
                                                                w.status().message()));
          }
          n.value = *w;
          n.type = {w->sizes().vec(), false};
          break;
        }
        case ProgramOp::kLiteral: {
          const at::Tensor& t = node.literal;
          if (!t.defined()) return err.Invalid(n.label, "has no value");
          const bool is_bool = t.scalar_type() == at::kBool;
          if (!is_bool && !at::isFloatingType(t.scalar_type())) {
            return err.Invalid(n.label, absl::StrCat("must be floating point or bool, got ",
                                                     c10::toString(t.scalar_type())));
          }
          if (!is_bool && at::isnan(t).any().item<bool>()) {
            return err.Invalid(n.label, "holds NaN; literals must be numbers (inf is allowed)");
          }
          n.value = t.to(model.device(), is_bool ? at::kBool : env.dtype).contiguous();
          n.type = {t.sizes().vec(), is_bool};
          break;
        }
        case ProgramOp::kConstant:
          if (std::isnan(node.scalar)) return err.Invalid(n.label, "is NaN");
          // Cast as a literal's values are: beyond the dtype's range is +-inf
          // (scalar_tensor in the dtype would throw instead).
          n.value = torch::scalar_tensor(node.scalar, torch::kDouble)
                        .to(torch::dtype(env.dtype).device(model.device()));
          n.type = {{}, false};
          break;
        default:
          LG_RETURN_IF_ERROR(InferType(node, n, in_types, err, &elements));
      }
      if (elements > limits.max_einsum_elements) {
        return err.Exhausted(n.label,
                             absl::StrCat("the einsum's index space has ", elements,
                                          " elements, over this worker's limit of ",
                                          limits.max_einsum_elements, " (max einsum elements)"));
      }
      if (node.op != ProgramOp::kActivation && node.op != ProgramOp::kHook &&
          node.op != ProgramOp::kSaved && node.op != ProgramOp::kWeight) {
        const int64_t bytes = ValueBytes(n.type, env.dtype);
        if (bytes > limits.max_bytes - plan.total_bytes_) {
          return err.Exhausted(
              n.label, absl::StrCat("the programs' values would take over ", limits.max_bytes,
                                    " bytes, this worker's limit (max program bytes); ",
                                    "this node alone is ", TypeStr(n.type)));
        }
        plan.total_bytes_ += bytes;
      }
      compiled->nodes.push_back(std::move(n));
    }
    if (!src.output.empty()) {
      auto it = by_id.find(src.output);
      if (it == by_id.end()) {
        return err.Invalid("output", absl::StrCat("'", src.output, "' is not a node"));
      }
      const CNode& out = compiled->nodes[position[it->second]];
      if (out.type.is_bool || out.type.shape != act_shape) {
        return err.Invalid(
            absl::StrCat("output '", src.output, "'"),
            absl::StrCat("is ", TypeStr(out.type), " but replaces the activation ",
                         ShapeStr(act_shape), ": it must be floating point of that shape"));
      }
      compiled->output = position[it->second];
    }
    for (const auto& [name, id] : src.saves) {
      auto it = by_id.find(id);
      if (name.empty()) return err.Invalid("saves", "a saved value needs a name");
      if (it == by_id.end()) {
        return err.Invalid(absl::StrCat("save '", name, "'"),
                           absl::StrCat("'", id, "' is not a node"));
      }
      if (saved_types.count(name)) {
        return err.Invalid(absl::StrCat("save '", name, "'"),
                           "the name is already saved by another program of this run");
      }
      const int node = position[it->second];
      saved_types[name] = compiled->nodes[node].type;
      compiled->saves.emplace_back(name, node);
      plan.saved_.push_back(
          {name, compiled->nodes[node].type.shape, compiled->nodes[node].type.is_bool});
    }
    plan.programs_.push_back(std::move(compiled));
  }
  plan.patch_hooks_.assign(patch_hooks.begin(), patch_hooks.end());
  plan.recorded_hooks_.assign(recorded_hooks.begin(), recorded_hooks.end());
  return plan;
}

std::vector<NamedHook> ProgramPlan::MakeHooks(const ActivationCache* patch_cache,
                                              std::shared_ptr<ProgramValues> values) const {
  auto state = std::make_shared<RunState>();
  state->patch = patch_cache;
  state->values = std::move(values);
  std::vector<NamedHook> hooks;
  for (const auto& program : programs_) {
    hooks.push_back({program->hook,
                     [state, program](const at::Tensor& act,
                                      const HookPointImpl&) -> std::optional<at::Tensor> {
                       return RunProgram(*program, act, *state);
                     }});
  }
  // After the programs at each hook point: what later programs read.
  for (const std::string& name : recorded_hooks_) {
    hooks.push_back(
        {name,
         [state](const at::Tensor& act, const HookPointImpl& hp) -> std::optional<at::Tensor> {
           if (state->recorded.size() <= static_cast<size_t>(hp.id())) {
             state->recorded.resize(hp.id() + 1);
           }
           state->recorded[hp.id()] = act;
           return std::nullopt;
         }});
  }
  return hooks;
}

}  // namespace lensgrid
