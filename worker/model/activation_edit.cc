#include "worker/model/activation_edit.h"

#include <torch/torch.h>

namespace lensgrid {
namespace {

// The position axis once the head axis (if any, and before it) is selected away.
int PosAxisAfterHead(const ActivationEdit& e) {
  return *e.pos_axis - (e.head_axis.has_value() && *e.head_axis < *e.pos_axis ? 1 : 0);
}

}  // namespace

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
      updated =
          e.value.defined() ? e.value.expand_as(region) : region.mean(0, true).expand_as(region);
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
