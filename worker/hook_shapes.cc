#include "worker/hook_shapes.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace lensgrid {

HookShape InferHookShape(absl::Span<const int64_t> probe_a, absl::Span<const int64_t> probe_b) {
  HookShape out;
  int pos_axes = 0;
  for (size_t i = 0; i < probe_a.size() && i < probe_b.size(); ++i) {
    if (probe_a[i] == kProbePosA && probe_b[i] == kProbePosB) ++pos_axes;
  }
  int pos_seen = 0;
  for (size_t i = 0; i < probe_a.size(); ++i) {
    const int64_t b = i < probe_b.size() ? probe_b[i] : probe_a[i];
    if (probe_a[i] == b) {
      out.shape.push_back(probe_a[i]);
      out.axes.push_back("");
    } else if (probe_a[i] == kProbeBatchA && b == kProbeBatchB) {
      out.shape.push_back(-1);
      out.axes.push_back("batch");
    } else {
      out.shape.push_back(-1);
      out.axes.push_back(pos_axes < 2 ? "pos" : (pos_seen++ == 0 ? "query_pos" : "key_pos"));
    }
  }
  return out;
}

std::vector<int64_t> ConcreteShape(const HookShape& shape, int64_t batch, int64_t pos,
                                   int64_t cached_pos, bool remove_batch_dim) {
  std::vector<int64_t> out;
  for (size_t i = 0; i < shape.shape.size(); ++i) {
    const std::string& axis = shape.axes[i];
    if (axis == "batch") {
      if (!remove_batch_dim) out.push_back(batch);
    } else if (axis == "pos" || axis == "query_pos") {
      out.push_back(cached_pos);
    } else if (axis == "key_pos") {
      out.push_back(pos);
    } else {
      out.push_back(shape.shape[i]);
    }
  }
  return out;
}

std::optional<int> PosAxis(const HookShape& shape) {
  for (size_t i = 0; i < shape.axes.size(); ++i) {
    if (shape.axes[i] == "pos" || shape.axes[i] == "query_pos") return static_cast<int>(i);
  }
  return std::nullopt;
}

std::optional<int> HeadAxis(absl::string_view name) {
  if (absl::EndsWith(name, "attn.hook_pattern") || absl::EndsWith(name, "attn.hook_attn_scores")) {
    return 1;  // [batch, head, query_pos, key_pos]
  }
  for (absl::string_view suffix :
       {"attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z", "attn.hook_result",
        "hook_attn_in", "hook_q_input", "hook_k_input", "hook_v_input"}) {
    if (absl::EndsWith(name, suffix)) return 2;  // [batch, pos, head, ...]
  }
  return std::nullopt;
}

std::optional<int> HookLayer(absl::string_view name) {
  if (!absl::StartsWith(name, "blocks.")) return std::nullopt;
  std::vector<absl::string_view> parts = absl::StrSplit(name, '.');
  int layer;
  if (parts.size() < 2 || !absl::SimpleAtoi(parts[1], &layer)) return std::nullopt;
  return layer;
}

namespace {
int64_t SliceBound(std::optional<int64_t> v, int64_t dflt, int64_t n) {
  if (!v.has_value()) return dflt;
  int64_t x = *v < 0 ? *v + n : *v;
  return std::clamp<int64_t>(x, 0, n);
}
}  // namespace

int64_t SliceLength(std::optional<int64_t> start, std::optional<int64_t> stop, int64_t n) {
  return std::max<int64_t>(0, SliceBound(stop, n, n) - SliceBound(start, 0, n));
}

int64_t SliceStart(std::optional<int64_t> start, int64_t n) { return SliceBound(start, 0, n); }

}  // namespace lensgrid
