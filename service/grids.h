// The result grids of each search method, in pure C++ (no LibTorch): the
// coordinator's mirror of SearchOutputs() in worker/model/analysis/search.cc.
//
//   std::vector<Grid> grids = MethodGrids("ablate-heads", {12, 12, false},
//   20).value();
//   // -> {"delta", {"layer", "head"}, {12, 12}}
#ifndef LENSGRID_SERVICE_GRIDS_H_
#define LENSGRID_SERVICE_GRIDS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lensgrid::service {

struct ModelShape {
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  bool attn_only = false;
};

struct Grid {
  std::string name;
  std::vector<std::string> axes;
  std::vector<int64_t> shape;
  int64_t NumComponents() const;
};

// INVALID_ARGUMENT for an unknown method. n_pos = the longest prompt's length.
absl::StatusOr<std::vector<Grid>> MethodGrids(const std::string& method,
                                              const ModelShape& model,
                                              int64_t n_pos);
// detect-heads and dla compute every component at once: shard by prompts only.
bool ShardsByPromptsOnly(const std::string& method);
// Patching methods also return "reference" (the clean run's metric).
bool IsPatchingMethod(const std::string& method);
absl::Status ValidateMetric(const std::string& metric);
absl::Status ValidateAblation(const std::string& ablation);

}  // namespace lensgrid::service

#endif  // LENSGRID_SERVICE_GRIDS_H_
