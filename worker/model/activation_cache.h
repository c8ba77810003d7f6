// Activations recorded by a run, by TransformerLens hook name, in the order the
// forward pass produced them.
//
//   ActivationCache cache;
//   model.RunWithCache(input, opts, cache_opts, &cache);
//   LG_ASSIGN_OR_RETURN(torch::Tensor p, cache.Get("pattern", 0));  // blocks.0.attn.hook_pattern
#ifndef LENSGRID_WORKER_MODEL_ACTIVATION_CACHE_H_
#define LENSGRID_WORKER_MODEL_ACTIVATION_CACHE_H_

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace lensgrid {

class ActivationCache {
 public:
  ActivationCache() = default;
  explicit ActivationCache(int n_layers) : n_layers_(n_layers) {}

  // Replaces any earlier value under `name` (a hook that fires more than once
  // per run keeps its last value), keeping first-insertion order.
  void Put(const std::string& name, at::Tensor value);

  // Exact name or TransformerLens shorthand ("pattern", 0) / "k6".
  // NOT_FOUND with the closest cached names otherwise.
  absl::StatusOr<at::Tensor> Get(absl::string_view name, std::optional<int> layer = std::nullopt,
                                 absl::string_view layer_type = "") const;
  bool Contains(absl::string_view name) const;

  const std::vector<std::pair<std::string, at::Tensor>>& entries() const { return entries_; }
  std::vector<std::string> names() const;
  size_t size() const { return entries_.size(); }
  int64_t TotalBytes() const;

 private:
  int n_layers_ = 0;
  std::vector<std::pair<std::string, at::Tensor>> entries_;
};

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_ACTIVATION_CACHE_H_
