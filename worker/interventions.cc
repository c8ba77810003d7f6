#include "worker/interventions.h"

#include <torch/torch.h>

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "worker/wire_tensors.h"

namespace lensgrid {
namespace {

std::string Shape(at::IntArrayRef s) {
  return absl::StrCat("[", absl::StrJoin(s, ", "), "]");
}

// True when `value` broadcasts to `region` (numpy rules, value on the right).
bool Broadcasts(at::IntArrayRef value, const std::vector<int64_t>& region) {
  if (value.size() > region.size()) return false;
  for (size_t i = 1; i <= value.size(); ++i) {
    int64_t v = value[value.size() - i], r = region[region.size() - i];
    if (v != 1 && v != r) return false;
  }
  return true;
}

absl::StatusOr<ResolvedIntervention> Resolve(
    const v1::Intervention& in, const std::string& what,
    const HookedTransformer& model, const std::vector<HookShape>& hook_shapes,
    int64_t batch, int64_t pos) {
  ResolvedIntervention r;
  absl::StatusOr<int> id = model.HookId(in.hook());
  if (!id.ok())
    return absl::Status(id.status().code(),
                        absl::StrCat(what, ": ", id.status().message()));
  r.hook = model.hook_names()[*id];
  r.op = in.op();
  if (r.op == v1::Intervention::OP_UNSPECIFIED ||
      !v1::Intervention::Op_IsValid(r.op)) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": op must be one of ZERO, MEAN, SET, ADD, SCALE, PATCH"));
  }
  const HookShape& shape = hook_shapes[*id];
  std::vector<int64_t> region = ConcreteShape(shape, batch, pos, pos, false);
  r.pos_axis = PosAxis(shape);
  if (in.positions_size() > 0) {
    if (!r.pos_axis.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": ", r.hook, " has no position axis"));
    }
    std::vector<int64_t> positions;
    std::set<int64_t> seen;
    for (int64_t p : in.positions()) {
      int64_t q = p < 0 ? p + pos : p;
      if (q < 0 || q >= pos) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": position ", p, " is outside the input's ",
                         pos, " positions"));
      }
      if (!seen.insert(q).second) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": position ", p, " is repeated"));
      }
      positions.push_back(q);
    }
    r.positions = torch::tensor(positions, torch::kInt64).to(model.device());
    region[*r.pos_axis] = static_cast<int64_t>(positions.size());
  }
  if (in.has_head()) {
    r.head_axis = HeadAxis(r.hook);
    if (!r.head_axis.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": ", r.hook,
          " has no head axis; head is only for attn.hook_q/k/v/z/pattern/"
          "attn_scores/result and the per-head inputs"));
    }
    const int64_t n_heads = model.cfg().n_heads;
    if (in.head() < 0 || in.head() >= n_heads) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": head ", in.head(), " is outside [0, ", n_heads, ")"));
    }
    r.head = in.head();
    region.erase(region.begin() + *r.head_axis);
  }
  const bool needs_value =
      r.op == v1::Intervention::SET || r.op == v1::Intervention::ADD;
  const bool takes_value = needs_value || r.op == v1::Intervention::MEAN;
  if (needs_value && !in.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": ", v1::Intervention::Op_Name(r.op), " needs a value tensor"));
  }
  if (in.has_value()) {
    if (!takes_value) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": ", v1::Intervention::Op_Name(r.op),
                       " takes no value tensor"));
    }
    const std::string value_what = absl::StrCat(what, ".value");
    LG_ASSIGN_OR_RETURN(at::Tensor value, FromProto(in.value(), value_what));
    if (!value.is_floating_point()) {
      return absl::InvalidArgumentError(
          absl::StrCat(value_what, ": dtype must be F32, F16 or BF16"));
    }
    if (!Broadcasts(value.sizes(), region)) {
      return absl::InvalidArgumentError(
          absl::StrCat(value_what, ": shape ", Shape(value.sizes()),
                       " does not broadcast to the edited region ",
                       Shape(region), " of ", r.hook));
    }
    r.value = value.to(model.device(), model.W_U().scalar_type());
  }
  if (r.op == v1::Intervention::SCALE) r.scale = in.scale();
  return r;
}

// The region of `t` an intervention edits (a view, or a copy when positions
// are given).
at::Tensor Region(const ResolvedIntervention& r, const at::Tensor& t) {
  at::Tensor v = r.head_axis.has_value() ? t.select(*r.head_axis, r.head) : t;
  if (!r.positions.defined()) return v;
  int axis = *r.pos_axis -
             (r.head_axis.has_value() && *r.head_axis < *r.pos_axis ? 1 : 0);
  return v.index_select(axis, r.positions);
}

}  // namespace

absl::StatusOr<std::vector<ResolvedIntervention>> ResolveInterventions(
    const google::protobuf::RepeatedPtrField<v1::Intervention>& interventions,
    const HookedTransformer& model, const std::vector<HookShape>& hook_shapes,
    int64_t batch, int64_t pos) {
  std::vector<ResolvedIntervention> out;
  for (int i = 0; i < interventions.size(); ++i) {
    LG_ASSIGN_OR_RETURN(
        ResolvedIntervention r,
        Resolve(interventions[i], absl::StrCat("interventions[", i, "]"), model,
                hook_shapes, batch, pos));
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<std::string> PatchHookNames(
    const std::vector<ResolvedIntervention>& plan) {
  std::vector<std::string> names;
  for (const auto& r : plan) {
    if (r.op == v1::Intervention::PATCH) names.push_back(r.hook);
  }
  return names;
}

std::vector<NamedHook> MakeHooks(const std::vector<ResolvedIntervention>& plan,
                                 const ActivationCache* patch_cache) {
  std::vector<NamedHook> hooks;
  for (const ResolvedIntervention& r : plan) {
    at::Tensor patch;
    if (r.op == v1::Intervention::PATCH && patch_cache != nullptr) {
      patch = patch_cache->Get(r.hook).value();
    }
    hooks.push_back(
        {r.hook,
         [&r, patch](const torch::Tensor& act,
                     const HookPointImpl&) -> std::optional<torch::Tensor> {
           torch::Tensor out = act.clone();
           torch::Tensor region = Region(r, out);
           torch::Tensor updated;
           switch (r.op) {
             case v1::Intervention::ZERO:
               updated = torch::zeros_like(region);
               break;
             case v1::Intervention::MEAN:
               updated = r.value.defined()
                             ? r.value.expand_as(region)
                             : region.mean(0, true).expand_as(region);
               break;
             case v1::Intervention::SET:
               updated = r.value.expand_as(region);
               break;
             case v1::Intervention::ADD:
               updated = region + r.value;
               break;
             case v1::Intervention::SCALE:
               updated = region * r.scale;
               break;
             case v1::Intervention::PATCH:
               updated = Region(r, patch);
               break;
             default:
               return std::nullopt;
           }
           torch::Tensor target =
               r.head_axis.has_value() ? out.select(*r.head_axis, r.head) : out;
           if (r.positions.defined()) {
             int axis =
                 *r.pos_axis -
                 (r.head_axis.has_value() && *r.head_axis < *r.pos_axis ? 1
                                                                        : 0);
             target.index_copy_(axis, r.positions, updated.contiguous());
           } else {
             target.copy_(updated);
           }
           return out;
         }});
  }
  return hooks;
}

absl::StatusOr<at::Tensor> ComputeMetric(const v1::Metric& metric,
                                         const at::Tensor& logits,
                                         const ModelInput& input,
                                         const ModelConfig& cfg) {
  const int64_t batch = logits.size(0), pos = logits.size(1);
  auto ids = [&](const google::protobuf::RepeatedField<int64_t>& field,
                 absl::string_view name) -> absl::StatusOr<torch::Tensor> {
    if (field.size() != 1 && field.size() != batch) {
      return absl::InvalidArgumentError(
          absl::StrCat("metric.", name, ": give 1 or ", batch,
                       " token ids (one per row), got ", field.size()));
    }
    for (int64_t id : field) {
      if (id < 0 || id >= cfg.d_vocab) {
        return absl::InvalidArgumentError(
            absl::StrCat("metric.", name, ": token id ", id,
                         " is outside the vocabulary [0, ", cfg.d_vocab, ")"));
      }
    }
    std::vector<int64_t> v(field.begin(), field.end());
    return torch::tensor(v, torch::kInt64).expand({batch}).to(logits.device());
  };
  if (!v1::Metric::Kind_IsValid(metric.kind())) {
    return absl::InvalidArgumentError("metric.kind: unknown value");
  }
  torch::Tensor rows;  // [batch] position read in each row
  if (metric.has_position()) {
    int64_t p =
        metric.position() < 0 ? metric.position() + pos : metric.position();
    if (p < 0 || p >= pos) {
      return absl::InvalidArgumentError(
          absl::StrCat("metric.position ", metric.position(),
                       " is outside the input's ", pos, " positions"));
    }
    rows = torch::full({batch}, p, torch::kInt64);
  } else if (input.attention_mask.defined()) {
    torch::Tensor index = torch::arange(1, pos + 1, torch::kInt64).unsqueeze(0);
    rows = (input.attention_mask.ne(0).to(torch::kInt64) * index).argmax(1);
  } else {
    rows = torch::full({batch}, pos - 1, torch::kInt64);
  }
  LG_ASSIGN_OR_RETURN(torch::Tensor answer,
                      ids(metric.answer_tokens(), "answer_tokens"));
  torch::Tensor row_logits =
      logits.to(torch::kFloat32)
          .index({torch::arange(batch, rows.options().device(logits.device())),
                  rows.to(logits.device())});  // [batch, vocab]
  auto pick = [](const torch::Tensor& t, const torch::Tensor& id) {
    return t.gather(1, id.unsqueeze(1)).squeeze(1);
  };
  torch::Tensor value;
  switch (metric.kind()) {
    case v1::Metric::LOGIT_DIFF: {
      LG_ASSIGN_OR_RETURN(torch::Tensor wrong,
                          ids(metric.wrong_tokens(), "wrong_tokens"));
      value = pick(row_logits, answer) - pick(row_logits, wrong);
      break;
    }
    case v1::Metric::LOGIT:
      value = pick(row_logits, answer);
      break;
    case v1::Metric::PROB:
      value = pick(torch::softmax(row_logits, -1), answer);
      break;
    case v1::Metric::LOG_PROB:
      value = pick(torch::log_softmax(row_logits, -1), answer);
      break;
    default:
      return absl::InvalidArgumentError("metric.kind is NONE");
  }
  if (metric.kind() != v1::Metric::LOGIT_DIFF &&
      metric.wrong_tokens_size() > 0) {
    return absl::InvalidArgumentError(
        "metric.wrong_tokens is only for LOGIT_DIFF");
  }
  return metric.per_prompt() ? value : value.mean();
}

}  // namespace lensgrid
