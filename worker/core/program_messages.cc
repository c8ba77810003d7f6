#include "worker/core/program_messages.h"

#include <torch/torch.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/core/wire_tensors.h"

namespace lensgrid {
namespace {

absl::StatusOr<ProgramOp> ElementwiseOp(v1::Elementwise::Op op) {
  switch (op) {
    case v1::Elementwise::ADD:
      return ProgramOp::kAdd;
    case v1::Elementwise::SUB:
      return ProgramOp::kSub;
    case v1::Elementwise::MUL:
      return ProgramOp::kMul;
    case v1::Elementwise::DIV:
      return ProgramOp::kDiv;
    case v1::Elementwise::POW:
      return ProgramOp::kPow;
    case v1::Elementwise::MAXIMUM:
      return ProgramOp::kMaximum;
    case v1::Elementwise::MINIMUM:
      return ProgramOp::kMinimum;
    case v1::Elementwise::NEG:
      return ProgramOp::kNeg;
    case v1::Elementwise::ABS:
      return ProgramOp::kAbs;
    case v1::Elementwise::EXP:
      return ProgramOp::kExp;
    case v1::Elementwise::LOG:
      return ProgramOp::kLog;
    case v1::Elementwise::SQRT:
      return ProgramOp::kSqrt;
    case v1::Elementwise::TANH:
      return ProgramOp::kTanh;
    case v1::Elementwise::RELU:
      return ProgramOp::kRelu;
    case v1::Elementwise::SIGMOID:
      return ProgramOp::kSigmoid;
    case v1::Elementwise::LT:
      return ProgramOp::kLt;
    case v1::Elementwise::LE:
      return ProgramOp::kLe;
    case v1::Elementwise::GT:
      return ProgramOp::kGt;
    case v1::Elementwise::GE:
      return ProgramOp::kGe;
    case v1::Elementwise::EQ:
      return ProgramOp::kEq;
    case v1::Elementwise::NE:
      return ProgramOp::kNe;
    default:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("elementwise.op: unknown or unset value ", static_cast<int>(op)));
}

absl::StatusOr<ProgramOp> ReduceOp(v1::Reduce::Op op) {
  switch (op) {
    case v1::Reduce::REDUCE_SUM:
      return ProgramOp::kSum;
    case v1::Reduce::REDUCE_MEAN:
      return ProgramOp::kMean;
    case v1::Reduce::REDUCE_MAX:
      return ProgramOp::kMax;
    case v1::Reduce::REDUCE_MIN:
      return ProgramOp::kMin;
    case v1::Reduce::REDUCE_NORM:
      return ProgramOp::kNorm;
    default:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("reduce.op: unknown or unset value ", static_cast<int>(op)));
}

absl::StatusOr<std::vector<RegionAxis>> Region(
    const google::protobuf::RepeatedPtrField<v1::AxisSelector>& region) {
  std::vector<RegionAxis> out;
  for (int i = 0; i < region.size(); ++i) {
    const v1::AxisSelector& s = region[i];
    switch (s.kind_case()) {
      case v1::AxisSelector::kAll:
        out.push_back(All());
        break;
      case v1::AxisSelector::kAt:
        out.push_back(At(s.at()));
        break;
      case v1::AxisSelector::kSlice:
        out.push_back(
            Range(s.slice().has_start() ? std::optional<int64_t>(s.slice().start()) : std::nullopt,
                  s.slice().has_stop() ? std::optional<int64_t>(s.slice().stop()) : std::nullopt,
                  s.slice().step() == 0 ? 1 : s.slice().step()));
        break;
      case v1::AxisSelector::kList:
        out.push_back(
            List(std::vector<int64_t>(s.list().indices().begin(), s.list().indices().end())));
        break;
      case v1::AxisSelector::kEllipsis:
        out.push_back(Ellipsis());
        break;
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("region[", i, "]: set one of all, at, slice, list, ellipsis"));
    }
  }
  return out;
}

absl::StatusOr<ProgramNodeSpec> NodeFromProto(const v1::ProgramNode& m) {
  ProgramNodeSpec n;
  n.id = m.id();
  auto ids = [](const google::protobuf::RepeatedPtrField<std::string>& in) {
    return std::vector<std::string>(in.begin(), in.end());
  };
  switch (m.op_case()) {
    case v1::ProgramNode::kActivation:
      n.op = ProgramOp::kActivation;
      break;
    case v1::ProgramNode::kHook:
      n = ProgramNodeSpec::Hook(m.id(), m.hook().name(),
                                m.hook().from_patch_run() ? HookRun::kPatch : HookRun::kThis);
      break;
    case v1::ProgramNode::kSaved:
      n = ProgramNodeSpec::Saved(m.id(), m.saved());
      break;
    case v1::ProgramNode::kWeight:
      n = ProgramNodeSpec::Weight(m.id(), m.weight());
      break;
    case v1::ProgramNode::kLiteral: {
      LG_ASSIGN_OR_RETURN(at::Tensor t, FromProto(m.literal(), "literal"));
      n = ProgramNodeSpec::Literal(m.id(), t);
      break;
    }
    case v1::ProgramNode::kValues: {
      int64_t count = 1;
      for (int64_t d : m.values().shape()) {
        if (d < 0 || d > (int64_t{1} << 31)) {
          return absl::InvalidArgumentError(
              absl::StrCat("values.shape: size ", d, " is out of range"));
        }
        count *= d;
        if (count > (int64_t{1} << 31)) {
          return absl::InvalidArgumentError("values.shape: too many elements");
        }
      }
      if (count != m.values().values_size()) {
        return absl::InvalidArgumentError(absl::StrCat("values: the shape holds ", count,
                                                       " numbers, got ", m.values().values_size()));
      }
      std::vector<int64_t> shape(m.values().shape().begin(), m.values().shape().end());
      at::Tensor t =
          torch::tensor(std::vector<double>(m.values().values().begin(), m.values().values().end()),
                        torch::kFloat64)
              .reshape(shape);
      n = ProgramNodeSpec::Literal(m.id(), t);
      break;
    }
    case v1::ProgramNode::kConstant:
      n = ProgramNodeSpec::Constant(m.id(), m.constant());
      break;
    case v1::ProgramNode::kElementwise: {
      LG_ASSIGN_OR_RETURN(ProgramOp op, ElementwiseOp(m.elementwise().op()));
      n = ProgramNodeSpec::Op(m.id(), op, ids(m.elementwise().inputs()));
      break;
    }
    case v1::ProgramNode::kWhere:
      n = ProgramNodeSpec::Op(m.id(), ProgramOp::kWhere,
                              {m.where().condition(), m.where().if_true(), m.where().if_false()});
      break;
    case v1::ProgramNode::kIndex: {
      LG_ASSIGN_OR_RETURN(std::vector<RegionAxis> region, Region(m.index().region()));
      n = ProgramNodeSpec::Index(m.id(), m.index().input(), std::move(region));
      break;
    }
    case v1::ProgramNode::kWrite: {
      LG_ASSIGN_OR_RETURN(std::vector<RegionAxis> region, Region(m.write().region()));
      n = ProgramNodeSpec::Write(m.id(), m.write().target(), m.write().value(), std::move(region));
      break;
    }
    case v1::ProgramNode::kReshape:
      n = ProgramNodeSpec::Op(m.id(), ProgramOp::kReshape, {m.reshape().input()});
      n.shape.assign(m.reshape().shape().begin(), m.reshape().shape().end());
      break;
    case v1::ProgramNode::kPermute:
      n = ProgramNodeSpec::Op(m.id(), ProgramOp::kPermute, {m.permute().input()});
      n.axes.assign(m.permute().axes().begin(), m.permute().axes().end());
      break;
    case v1::ProgramNode::kMatmul:
      n = ProgramNodeSpec::Op(m.id(), ProgramOp::kMatmul, {m.matmul().a(), m.matmul().b()});
      break;
    case v1::ProgramNode::kEinsum:
      n = ProgramNodeSpec::Einsum(m.id(), m.einsum().equation(), ids(m.einsum().inputs()));
      break;
    case v1::ProgramNode::kReduce: {
      LG_ASSIGN_OR_RETURN(ProgramOp op, ReduceOp(m.reduce().op()));
      n = ProgramNodeSpec::Reduce(
          m.id(), op, m.reduce().input(),
          std::vector<int64_t>(m.reduce().axes().begin(), m.reduce().axes().end()),
          m.reduce().keepdim());
      n.scalar = m.reduce().p();
      break;
    }
    case v1::ProgramNode::kSoftmax:
      n = ProgramNodeSpec::Op(m.id(),
                              m.softmax().log() ? ProgramOp::kLogSoftmax : ProgramOp::kSoftmax,
                              {m.softmax().input()});
      n.axes = {m.softmax().axis()};
      break;
    case v1::ProgramNode::kProject:
      if (m.project().mode() != v1::Project::ONTO && m.project().mode() != v1::Project::OUT) {
        return absl::InvalidArgumentError("project.mode: set ONTO or OUT");
      }
      n = ProgramNodeSpec::Op(m.id(),
                              m.project().mode() == v1::Project::ONTO ? ProgramOp::kProjectOnto
                                                                      : ProgramOp::kProjectOut,
                              {m.project().input(), m.project().direction()});
      break;
    default:
      return absl::InvalidArgumentError(
          "no operation set (activation, hook, saved, weight, literal, values, constant, "
          "elementwise, where, index, write, reshape, permute, matmul, einsum, reduce, softmax, "
          "project)");
  }
  return n;
}

}  // namespace

absl::StatusOr<std::vector<HookProgramSpec>> ProgramsFromProto(
    const google::protobuf::RepeatedPtrField<v1::HookProgram>& programs) {
  std::vector<HookProgramSpec> out;
  for (int i = 0; i < programs.size(); ++i) {
    const v1::HookProgram& m = programs[i];
    HookProgramSpec p;
    p.hook = m.hook();
    p.output = m.output();
    for (int j = 0; j < m.nodes_size(); ++j) {
      absl::StatusOr<ProgramNodeSpec> node = NodeFromProto(m.nodes(j));
      if (!node.ok()) {
        return absl::Status(node.status().code(),
                            absl::StrCat("programs[", i, "].nodes[", j, "] ('", m.nodes(j).id(),
                                         "'): ", node.status().message()));
      }
      p.nodes.push_back(*std::move(node));
    }
    for (const v1::SavedValue& s : m.saves()) p.saves.emplace_back(s.name(), s.node());
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace lensgrid
