#include "worker/model/hook_names.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/echo.h"
#include "common/error_details.h"

namespace lensgrid {
namespace {

// Splits "scale4ln1" into ("scale", 4, "ln1") like TL's r"([a-z]+)(\d+)([a-z]?.*)".
bool SplitShorthand(absl::string_view s, std::string* name, int* layer, std::string* layer_type) {
  size_t i = 0;
  while (i < s.size() && std::islower(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 0 || i == s.size() || !std::isdigit(static_cast<unsigned char>(s[i]))) {
    return false;
  }
  size_t j = i;
  while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
  *name = std::string(s.substr(0, i));
  *layer = std::stoi(std::string(s.substr(i, j - i)));
  *layer_type = std::string(s.substr(j));
  return true;
}

size_t EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] =
          std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace

std::string ActName(absl::string_view name_in, std::optional<int> layer,
                    absl::string_view layer_type_in, int n_layers) {
  if ((absl::StrContains(name_in, ".") || absl::StartsWith(name_in, "hook_")) &&
      !layer.has_value() && layer_type_in.empty()) {
    return std::string(name_in);
  }
  std::string name(name_in), layer_type(layer_type_in);
  if (!layer.has_value()) {
    int parsed_layer;
    std::string parsed_name, parsed_type;
    if (SplitShorthand(name_in, &parsed_name, &parsed_layer, &parsed_type)) {
      name = parsed_name;
      layer = parsed_layer;
      layer_type = parsed_type;
    }
  }
  static const std::map<std::string, std::string> kNameAlias = {
      {"attn", "pattern"}, {"attn_logits", "attn_scores"},
      {"key", "k"},        {"query", "q"},
      {"value", "v"},      {"mlp_pre", "pre"},
      {"mlp_mid", "mid"},  {"mlp_post", "post"}};
  static const std::map<std::string, std::string> kTypeAlias = {
      {"a", "attn"}, {"m", "mlp"}, {"b", ""}, {"block", ""}, {"blocks", ""}, {"attention", "attn"}};
  static const std::set<std::string> kAttnNames = {
      "k", "v", "q", "z", "rot_k", "rot_q", "result", "pattern", "attn_scores"};
  static const std::set<std::string> kMlpNames = {"pre", "post", "mid", "pre_linear"};
  if (auto it = kNameAlias.find(name); it != kNameAlias.end()) name = it->second;
  std::string full;
  if (layer.has_value()) {
    int l = *layer;
    if (l < 0 && n_layers > 0) l += n_layers;
    full = absl::StrCat("blocks.", l, ".");
  }
  if (kAttnNames.count(name)) {
    layer_type = "attn";
  } else if (kMlpNames.count(name)) {
    layer_type = "mlp";
  } else if (auto it = kTypeAlias.find(layer_type); it != kTypeAlias.end()) {
    layer_type = it->second;
  }
  if (!layer_type.empty()) absl::StrAppend(&full, layer_type, ".");
  absl::StrAppend(&full, "hook_", name);
  if ((name == "scale" || name == "normalized") && !layer.has_value()) {
    full = "ln_final." + full;
  }
  return full;
}

std::vector<std::string> ClosestNames(absl::string_view unknown,
                                      const std::vector<std::string>& known, size_t max) {
  std::vector<std::pair<size_t, std::string>> scored;
  // No hook name is this long: a longer "name" has no plausible neighbour,
  // and its edit distances would cost len x known x name length.
  constexpr size_t kMaxSuggestFrom = 256;
  if (unknown.size() > kMaxSuggestFrom) return {};
  for (const auto& k : known) scored.emplace_back(EditDistance(unknown, k), k);
  std::stable_sort(scored.begin(), scored.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> out;
  for (const auto& [d, k] : scored) {
    if (out.size() >= max) break;
    // Only plausible typos: within a third of the name's length.
    if (d > std::max<size_t>(3, unknown.size() / 3)) break;
    out.push_back(k);
  }
  return out;
}

std::string UnknownHookMessage(absl::string_view unknown, const std::vector<std::string>& known) {
  std::vector<std::string> close = ClosestNames(unknown, known);
  std::string msg = absl::StrCat("unknown hook name ", Echo(unknown));
  if (!close.empty()) {
    absl::StrAppend(&msg, "; did you mean ",
                    absl::StrJoin(close, ", ",
                                  [](std::string* out, const std::string& s) {
                                    absl::StrAppend(out, "\"", s, "\"");
                                  }),
                    "?");
  } else {
    absl::StrAppend(&msg, " (the model has ", known.size(),
                    " hook points, e.g. \"blocks.0.attn.hook_pattern\")");
  }
  return msg;
}

absl::Status UnknownHookError(absl::string_view unknown, const std::vector<std::string>& known,
                              absl::string_view suffix) {
  absl::Status status =
      absl::NotFoundError(absl::StrCat(UnknownHookMessage(unknown, known), suffix));
  return WithErrorInfo(std::move(status), "UNKNOWN_HOOK",
                       {{"hook", std::string(unknown)},
                        {"closest", absl::StrJoin(ClosestNames(unknown, known), ",")}});
}

}  // namespace lensgrid
