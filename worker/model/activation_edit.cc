#include "worker/model/activation_edit.h"

#include <torch/torch.h>

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace lensgrid {
namespace {

std::string Shape(at::IntArrayRef s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }

// True when `value` broadcasts to `region` (numpy rules, value on the right).
bool Broadcasts(at::IntArrayRef value, const std::vector<int64_t>& region) {
  if (value.size() > region.size()) return false;
  for (size_t i = 1; i <= value.size(); ++i) {
    const int64_t v = value[value.size() - i], r = region[region.size() - i];
    if (v != 1 && v != r) return false;
  }
  return true;
}

const char* OpName(EditOp op) {
  switch (op) {
    case EditOp::kZero:
      return "ZERO";
    case EditOp::kMean:
      return "MEAN";
    case EditOp::kSet:
      return "SET";
    case EditOp::kAdd:
      return "ADD";
    case EditOp::kScale:
      return "SCALE";
    case EditOp::kPatch:
      return "PATCH";
  }
  return "?";
}

// The position axis once the head axis (if any, and before it) is selected away.
int PosAxisAfterHead(const ActivationEdit& e) {
  return *e.pos_axis - (e.head_axis.has_value() && *e.head_axis < *e.pos_axis ? 1 : 0);
}

}  // namespace

absl::StatusOr<ActivationEdit> MakeEdit(const EditRequest& request, const ActivationLayout& layout,
                                        const std::string& hook, at::Device device,
                                        at::ScalarType dtype) {
  ActivationEdit e;
  e.op = request.op;
  e.pos_axis = layout.pos_axis;
  std::vector<int64_t> region = layout.shape;
  if (!request.positions.empty()) {
    if (!layout.pos_axis.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(hook, " has no position axis"));
    }
    const int64_t pos = layout.shape[*layout.pos_axis];
    std::vector<int64_t> positions;
    std::set<int64_t> seen;
    for (int64_t p : request.positions) {
      const int64_t q = p < 0 ? p + pos : p;
      if (q < 0 || q >= pos) {
        return absl::InvalidArgumentError(
            absl::StrCat("position ", p, " is outside the input's ", pos, " positions"));
      }
      if (!seen.insert(q).second) {
        return absl::InvalidArgumentError(absl::StrCat("position ", p, " is repeated"));
      }
      positions.push_back(q);
    }
    e.positions = torch::tensor(positions, torch::kInt64).to(device);
    region[*layout.pos_axis] = static_cast<int64_t>(positions.size());
  }
  if (request.head.has_value()) {
    if (!layout.head_axis.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat(hook,
                       " has no head axis; head is only for attn.hook_q/k/v/z/pattern/"
                       "attn_scores/result and the per-head inputs"));
    }
    const int64_t n_heads = layout.shape[*layout.head_axis];
    if (*request.head < 0 || *request.head >= n_heads) {
      return absl::InvalidArgumentError(
          absl::StrCat("head ", *request.head, " is outside [0, ", n_heads, ")"));
    }
    e.head_axis = layout.head_axis;
    e.head = *request.head;
    region.erase(region.begin() + *layout.head_axis);
  }
  const bool needs_value = request.op == EditOp::kSet || request.op == EditOp::kAdd;
  const bool takes_value = needs_value || request.op == EditOp::kMean;
  if (needs_value && !request.value.defined()) {
    return absl::InvalidArgumentError(absl::StrCat(OpName(request.op), " needs a value tensor"));
  }
  if (request.value.defined()) {
    if (!takes_value) {
      return absl::InvalidArgumentError(absl::StrCat(OpName(request.op), " takes no value tensor"));
    }
    if (!request.value.is_floating_point()) {
      return absl::InvalidArgumentError("value: dtype must be F32, F16 or BF16");
    }
    if (!Broadcasts(request.value.sizes(), region)) {
      return absl::InvalidArgumentError(absl::StrCat("value: shape ", Shape(request.value.sizes()),
                                                     " does not broadcast to the edited region ",
                                                     Shape(region), " of ", hook));
    }
    e.value = request.value.to(device, dtype);
  }
  if (request.op == EditOp::kScale) e.scale = request.scale;
  return e;
}

at::Tensor EditRegion(const ActivationEdit& e, const at::Tensor& t) {
  at::Tensor v = e.head_axis.has_value() ? t.select(*e.head_axis, e.head) : t;
  if (!e.positions.defined()) return v;
  return v.index_select(PosAxisAfterHead(e), e.positions);
}

void ApplyEdit(const ActivationEdit& e, at::Tensor act, const at::Tensor& source) {
  torch::Tensor region = EditRegion(e, act);
  torch::Tensor updated;
  switch (e.op) {
    case EditOp::kZero:
      updated = torch::zeros_like(region);
      break;
    case EditOp::kMean:
      if (e.value.defined()) {
        updated = e.value.expand_as(region);
      } else {
        // LibTorch's mean saves its input for the backward, and the copy
        // below overwrites that input: under autograd (gradients asked for
        // upstream) take the mean of a copy, or the backward fails.
        updated =
            (region.requires_grad() ? region.clone() : region).mean(0, true).expand_as(region);
      }
      break;
    case EditOp::kSet:
      updated = e.value.expand_as(region);
      break;
    case EditOp::kAdd:
      updated = region + e.value;
      break;
    case EditOp::kScale:
      updated = region * e.scale;
      break;
    case EditOp::kPatch:
      updated = EditRegion(e, source).expand_as(region);
      break;
  }
  torch::Tensor target = e.head_axis.has_value() ? act.select(*e.head_axis, e.head) : act;
  if (e.positions.defined()) {
    target.index_copy_(PosAxisAfterHead(e), e.positions, updated.contiguous());
  } else {
    target.copy_(updated);
  }
}

HookFn EditHook(std::vector<ActivationEdit> edits, std::vector<at::Tensor> sources) {
  return [edits = std::move(edits), sources = std::move(sources)](
             const torch::Tensor& act, const HookPointImpl&) -> std::optional<torch::Tensor> {
    torch::Tensor out = act.clone();
    for (size_t i = 0; i < edits.size(); ++i) {
      ApplyEdit(edits[i], out, i < sources.size() ? sources[i] : torch::Tensor());
    }
    return out;
  };
}

}  // namespace lensgrid
