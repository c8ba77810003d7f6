#include "worker/model/activation_cache.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "worker/model/hook_names.h"

namespace lensgrid {

void ActivationCache::Put(const std::string& name, at::Tensor value) {
  for (auto& [n, t] : entries_) {
    if (n == name) {
      t = std::move(value);
      return;
    }
  }
  entries_.emplace_back(name, std::move(value));
}

absl::StatusOr<at::Tensor> ActivationCache::Get(absl::string_view name, std::optional<int> layer,
                                                absl::string_view layer_type) const {
  std::string full = ActName(name, layer, layer_type, n_layers_);
  for (const auto& [n, t] : entries_) {
    if (n == full) return t;
  }
  return UnknownHookError(
      full, names(), absl::StrCat(" (not in this cache of ", entries_.size(), " activations)"));
}

bool ActivationCache::Contains(absl::string_view name) const {
  for (const auto& [n, t] : entries_) {
    if (n == name) return true;
  }
  return false;
}

std::vector<std::string> ActivationCache::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [n, t] : entries_) out.push_back(n);
  return out;
}

int64_t ActivationCache::TotalBytes() const {
  int64_t total = 0;
  for (const auto& [n, t] : entries_) total += t.numel() * t.element_size();
  return total;
}

}  // namespace lensgrid
