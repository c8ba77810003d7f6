// One edit of one activation: the intervention engine that both the Worker
// API's declarative interventions (worker/core/interventions.cc converts the
// messages) and the searches' ablations and patches (analysis/search.cc) run.
//
// The edited region is the activation's [:, positions, head] for an activation
// whose position axis is pos_axis and head axis head_axis (e.g. hook_z
// [batch, pos, head, d_head]: pos_axis 1, head_axis 2; hook_pattern
// [batch, head, query_pos, key_pos]: head_axis 1, pos_axis 2).
//
//   ActivationEdit e;
//   e.op = EditOp::kPatch;
//   e.head_axis = 2;
//   e.head = 3;
//   model->Run(in, {}, {{"blocks.0.attn.hook_z", EditHook({e}, {clean_z})}});
#ifndef LENSGRID_WORKER_MODEL_ACTIVATION_EDIT_H_
#define LENSGRID_WORKER_MODEL_ACTIVATION_EDIT_H_

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/hook_point.h"

namespace lensgrid {

enum class EditOp {
  kZero,
  kMean,   // `value` when given, else the region's mean over the batch
  kSet,    // region = value
  kAdd,    // region += value
  kScale,  // region *= scale
  kPatch,  // region = the same region of a source activation
};

struct ActivationEdit {
  EditOp op = EditOp::kZero;
  std::optional<int> head_axis;  // set: edit only `head` on this axis
  int64_t head = 0;
  std::optional<int> pos_axis;  // with `positions`
  at::Tensor positions;         // int64 [n] on the activation's device; undefined = all
  at::Tensor value;             // kMean (optional), kSet, kAdd: broadcasts to the region
  double scale = 1.0;           // kScale
};

// An edit as a client describes it, before it is checked against an
// activation (the Worker API's Intervention, converted).
struct EditRequest {
  EditOp op = EditOp::kZero;
  std::vector<int64_t> positions;  // negative counts from the end; empty = every position
  std::optional<int64_t> head;     // set: that head only
  at::Tensor value;                // kMean (optional), kSet, kAdd (required); else undefined
  double scale = 1.0;              // kScale
};

// Where an activation's axes are: what an edit of it may name.
struct ActivationLayout {
  std::vector<int64_t> shape;    // concrete, batch first
  std::optional<int> pos_axis;   // unset: no position axis
  std::optional<int> head_axis;  // unset: no head axis
};

// The one check of an edit: `request` on an activation laid out as `layout`
// (named `hook` in errors), with its value moved to `device` and `dtype`.
// INVALID_ARGUMENT saying what is wrong: positions outside the activation,
// repeated, or on one with no position axis; a head outside it or on one with
// no head axis; a value missing (set, add), not taken (zero, scale, patch),
// not floating point, or not broadcasting to the edited region.
absl::StatusOr<ActivationEdit> MakeEdit(const EditRequest& request, const ActivationLayout& layout,
                                        const std::string& hook, at::Device device,
                                        at::ScalarType dtype);

// The region of `t` an edit touches: a view, or a copy when positions are given.
at::Tensor EditRegion(const ActivationEdit& e, const at::Tensor& t);

// Applies `e` to `act` in place (a view writes through to its base). kPatch
// reads the same region of `source`, shaped like `act` or with batch 1
// (broadcast over the batch).
void ApplyEdit(const ActivationEdit& e, at::Tensor act, const at::Tensor& source = {});

// A hook applying `edits` in order to a copy of its activation; sources[i]
// is edit i's kPatch source (may be shorter than `edits` when none patch).
// The hook holds the edits and sources by value.
HookFn EditHook(std::vector<ActivationEdit> edits, std::vector<at::Tensor> sources = {});

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_ACTIVATION_EDIT_H_
