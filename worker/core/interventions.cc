#include "worker/core/interventions.h"

#include <torch/torch.h>

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/error_details.h"
#include "common/search_proto.h"
#include "common/status_macros.h"
#include "worker/core/wire_tensors.h"

// Reads the deprecated name fields on purpose: what older clients send.
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

namespace lensgrid {
namespace {

absl::StatusOr<EditOp> ToEditOp(v1::Intervention::Op op) {
  switch (op) {
    case v1::Intervention::ZERO:
      return EditOp::kZero;
    case v1::Intervention::MEAN:
      return EditOp::kMean;
    case v1::Intervention::SET:
      return EditOp::kSet;
    case v1::Intervention::ADD:
      return EditOp::kAdd;
    case v1::Intervention::SCALE:
      return EditOp::kScale;
    case v1::Intervention::PATCH:
      return EditOp::kPatch;
    default:
      return absl::InvalidArgumentError("op must be one of ZERO, MEAN, SET, ADD, SCALE, PATCH");
  }
}

// Converts the message; the library's MakeEdit checks it against the hook.
absl::StatusOr<ResolvedIntervention> Resolve(const v1::Intervention& in, const std::string& what,
                                             const HookedTransformer& model,
                                             const std::vector<HookShape>& hook_shapes,
                                             int64_t batch, int64_t pos) {
  auto fail = [&what](const absl::Status& s) { return InField(s, what); };
  ResolvedIntervention r;
  absl::StatusOr<int> id = model.HookId(in.hook());
  if (!id.ok()) return fail(id.status());
  r.hook = model.hook_names()[*id];
  EditRequest request;
  absl::StatusOr<EditOp> op = ToEditOp(in.op());
  if (!op.ok()) return fail(op.status());
  request.op = *op;
  request.positions.assign(in.positions().begin(), in.positions().end());
  if (in.has_head()) request.head = in.head();
  if (in.has_value()) {
    absl::StatusOr<at::Tensor> value = FromProto(in.value(), absl::StrCat(what, ".value"));
    if (!value.ok()) return value.status();
    request.value = *value;
  }
  request.scale = in.scale();
  const HookShape& shape = hook_shapes[*id];
  ActivationLayout layout{ConcreteShape(shape, batch, pos, pos, false), PosAxis(shape),
                          HeadAxis(r.hook)};
  absl::StatusOr<ActivationEdit> e =
      MakeEdit(request, layout, r.hook, model.device(), model.W_U().scalar_type());
  if (!e.ok()) return fail(e.status());
  r.edit = std::move(*e);
  return r;
}

}  // namespace

absl::StatusOr<std::vector<ResolvedIntervention>> ResolveInterventions(
    const google::protobuf::RepeatedPtrField<v1::Intervention>& interventions,
    const HookedTransformer& model, const std::vector<HookShape>& hook_shapes, int64_t batch,
    int64_t pos) {
  std::vector<ResolvedIntervention> out;
  for (int i = 0; i < interventions.size(); ++i) {
    LG_ASSIGN_OR_RETURN(ResolvedIntervention r,
                        Resolve(interventions[i], absl::StrCat("interventions[", i, "]"), model,
                                hook_shapes, batch, pos));
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<std::string> PatchHookNames(const std::vector<ResolvedIntervention>& plan) {
  std::vector<std::string> names;
  for (const auto& r : plan) {
    if (r.edit.op == EditOp::kPatch) names.push_back(r.hook);
  }
  return names;
}

std::vector<NamedHook> MakeHooks(const std::vector<ResolvedIntervention>& plan,
                                 const ActivationCache* patch_cache) {
  std::vector<NamedHook> hooks;
  for (const ResolvedIntervention& r : plan) {
    at::Tensor patch;
    if (r.edit.op == EditOp::kPatch && patch_cache != nullptr) {
      patch = patch_cache->Get(r.hook).value();
    }
    hooks.push_back({r.hook, EditHook({r.edit}, {patch})});
  }
  return hooks;
}

absl::StatusOr<std::optional<MetricKind>> RequestedMetric(const v1::Metric& metric) {
  if (metric.kind() != v1::SEARCH_METRIC_UNSPECIFIED) {
    LG_ASSIGN_OR_RETURN(MetricKind kind, MetricFromProto(metric.kind()));
    if (kind == MetricKind::kLoss || kind == MetricKind::kKl) {
      return absl::InvalidArgumentError(
          absl::StrCat("metric.kind ", MetricName(kind),
                       " is for searches (ForwardOptions.return_type gives the loss)"));
    }
    return kind;
  }
  switch (metric.legacy_kind()) {
    case v1::Metric::KIND_UNSPECIFIED:
      return std::optional<MetricKind>();
    case v1::Metric::LOGIT_DIFF:
      return MetricKind::kLogitDiff;
    case v1::Metric::LOGIT:
      return MetricKind::kLogit;
    case v1::Metric::PROB:
      return MetricKind::kProb;
    case v1::Metric::LOG_PROB:
      return MetricKind::kLogProb;
    default:
      break;  // an unknown number from the wire
  }
  return absl::InvalidArgumentError("metric.legacy_kind: unknown value");
}

absl::StatusOr<at::Tensor> ComputeMetric(MetricKind kind, const v1::Metric& metric,
                                         const at::Tensor& logits, const ForwardInput& input,
                                         const HookedTransformerConfig& cfg) {
  const int64_t batch = logits.size(0), pos = logits.size(1);
  auto ids = [&](const google::protobuf::RepeatedField<int64_t>& field,
                 absl::string_view name) -> absl::StatusOr<std::vector<int64_t>> {
    if (field.size() != 1 && field.size() != batch) {
      return absl::InvalidArgumentError(absl::StrCat(
          "metric.", name, ": give 1 or ", batch, " token ids (one per row), got ", field.size()));
    }
    for (int64_t id : field) {
      if (id < 0 || id >= cfg.d_vocab) {
        return absl::InvalidArgumentError(absl::StrCat("metric.", name, ": token id ", id,
                                                       " is outside the vocabulary [0, ",
                                                       cfg.d_vocab, ")"));
      }
    }
    std::vector<int64_t> v(field.begin(), field.end());
    v.resize(static_cast<size_t>(batch), v.front());  // one for every row
    return v;
  };
  const bool uses_wrongs = kind == MetricKind::kLogitDiff || kind == MetricKind::kProbDiff;
  if (!uses_wrongs && metric.wrong_tokens_size() > 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metric.wrong_tokens is only for ", "logit-diff and prob-diff, not ", MetricName(kind)));
  }
  torch::Tensor rows;  // [batch] position read in each row
  if (metric.has_position()) {
    int64_t p = metric.position() < 0 ? metric.position() + pos : metric.position();
    if (p < 0 || p >= pos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "metric.position ", metric.position(), " is outside the input's ", pos, " positions"));
    }
    rows = torch::full({batch}, p, torch::kInt64);
  } else if (input.attention_mask.defined()) {
    torch::Tensor index = torch::arange(1, pos + 1, torch::kInt64).unsqueeze(0);
    rows = (input.attention_mask.ne(0).to(torch::kInt64).cpu() * index).argmax(1);
  } else {
    rows = torch::full({batch}, pos - 1, torch::kInt64);
  }
  LG_ASSIGN_OR_RETURN(std::vector<int64_t> answers, ids(metric.answer_tokens(), "answer_tokens"));
  std::vector<int64_t> wrongs;
  if (uses_wrongs) {
    LG_ASSIGN_OR_RETURN(wrongs, ids(metric.wrong_tokens(), "wrong_tokens"));
  }
  // The library's metric over each row's logits at its position, as a search
  // reads a prompt's final token: [batch, 1, vocab].
  const torch::Tensor row_logits =
      logits
          .index(
              {torch::arange(batch, torch::kInt64).to(logits.device()), rows.to(logits.device())})
          .unsqueeze(1)
          .cpu();
  std::vector<Prompt> prompts(static_cast<size_t>(batch));
  std::vector<const Prompt*> views;
  for (int64_t i = 0; i < batch; ++i) {
    prompts[i].answers = {answers[i]};
    if (uses_wrongs) prompts[i].wrongs = {wrongs[i]};
    views.push_back(&prompts[i]);
  }
  MetricTargets targets = MakeMetricTargets(views, 1, cfg.d_vocab, torch::Tensor());
  torch::Tensor value = ::lensgrid::ComputeMetric(kind, row_logits, targets);
  return metric.per_prompt() ? value : value.mean();
}

}  // namespace lensgrid
