#include "service/grids.h"

#include <algorithm>
#include <array>

#include "absl/strings/str_cat.h"
#include "common/echo.h"

namespace lensgrid::service {

namespace {
constexpr std::array<const char*, 10> kMethods = {
    "ablate-heads",       "ablate-layers",
    "patch-resid",        "patch-attn-out",
    "patch-mlp-out",      "patch-heads",
    "patch-heads-by-pos", "patch-pattern",
    "detect-heads",       "dla"};
bool OneOf(const std::string& s, std::initializer_list<const char*> names) {
  return std::any_of(names.begin(), names.end(),
                     [&](const char* n) { return s == n; });
}
}  // namespace

int64_t Grid::NumComponents() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::vector<Grid>> MethodGrids(const std::string& method,
                                              const ModelShape& model,
                                              int64_t n_pos) {
  if (std::find_if(kMethods.begin(), kMethods.end(), [&](const char* m) {
        return method == m;
      }) == kMethods.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown method ", Echo(method),
        " (ablate-heads, ablate-layers, patch-resid, patch-attn-out, "
        "patch-mlp-out, "
        "patch-heads, patch-heads-by-pos, patch-pattern, detect-heads, dla)"));
  }
  if (model.n_layers <= 0 || model.n_heads <= 0) {
    return absl::InvalidArgumentError("n_layers and n_heads must be positive");
  }
  const int64_t L = model.n_layers, H = model.n_heads,
                kinds = model.attn_only ? 1 : 2;
  if (OneOf(method, {"ablate-heads", "patch-heads", "patch-pattern"})) {
    return std::vector<Grid>{{"delta", {"layer", "head"}, {L, H}}};
  }
  if (method == "ablate-layers") {
    return std::vector<Grid>{
        {"delta", {"kind(attn,mlp)", "layer"}, {kinds, L}}};
  }
  if (method == "patch-heads-by-pos") {
    return std::vector<Grid>{
        {"delta", {"layer", "pos", "head"}, {L, n_pos, H}}};
  }
  if (method == "detect-heads") {
    return std::vector<Grid>{{"previous_token", {"layer", "head"}, {L, H}},
                             {"duplicate_token", {"layer", "head"}, {L, H}},
                             {"induction", {"layer", "head"}, {L, H}}};
  }
  if (method == "dla") {
    return std::vector<Grid>{
        {"heads", {"layer", "head"}, {L, H}},
        {"layers", {"kind(attn,mlp)", "layer"}, {kinds, L}}};
  }
  return std::vector<Grid>{{"delta", {"layer", "pos"}, {L, n_pos}}};
}

bool ShardsByPromptsOnly(const std::string& method) {
  return method == "detect-heads" || method == "dla";
}

bool IsPatchingMethod(const std::string& method) {
  return OneOf(method, {"patch-resid", "patch-attn-out", "patch-mlp-out",
                        "patch-heads", "patch-heads-by-pos", "patch-pattern"});
}

absl::Status ValidateMetric(const std::string& metric) {
  if (OneOf(metric, {"logit-diff", "prob", "prob-diff", "loss", "kl"}))
    return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("unknown metric ", Echo(metric),
                   " (logit-diff, prob, prob-diff, loss, kl)"));
}

absl::Status ValidateAblation(const std::string& ablation) {
  if (OneOf(ablation, {"zero", "mean", "resample"})) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown ablation ", Echo(ablation), " (zero, mean, resample)"));
}

}  // namespace lensgrid::service
