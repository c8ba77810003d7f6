// A finished search's numbers without LibTorch: what `lensgrid search` prints and writes
// (client/search_output.h), wherever the search ran. A coordinator's result arrives as wire
// tensors (client/search_remote.h); an in-process SearchResult is converted by
// client/local/torch_convert.h.
//
//   LG_ASSIGN_OR_RETURN(SearchNames names, NamesOfContext(ctx));
//   LG_ASSIGN_OR_RETURN(SearchValues values, ResultFromJob(job_result, names));
//   for (auto [flat, value] : RankGrid(values.outputs[0], 10)) GridComponentName(..., flat);
#ifndef LENSGRID_CLIENT_SEARCH_VALUES_H_
#define LENSGRID_CLIENT_SEARCH_VALUES_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "client/search_context.h"
#include "common/search_methods.h"

namespace lensgrid {

// The method, metric and ablation a search ran (worker/model/analysis/search.h's SearchSpec,
// without LibTorch).
struct SearchNames {
  Method method = Method::kAblateHeads;
  MetricKind metric = MetricKind::kLogitDiff;
  AblationKind ablation = AblationKind::kZero;
  CircuitParams circuit;
};

// The names of the context's method, metric and ablation; INVALID_ARGUMENT for an unknown one.
absl::StatusOr<SearchNames> NamesOfContext(const SearchContext& ctx);

// One output grid: row-major values.
struct GridValues {
  std::string name;                // "delta", "previous_token", ...
  std::vector<std::string> axes;   // e.g. {"layer", "head"}
  std::vector<int64_t> shape;      // grid shape
  std::vector<double> per_prompt;  // [n_prompts, product(shape)]
  std::vector<double> mean;        // product(shape): mean over prompts
};

struct SearchValues {
  SearchNames names;
  std::vector<GridValues> outputs;
  std::vector<double> baseline;   // [n_prompts] metric of the unintervened run
  std::vector<double> reference;  // patching: [n_prompts] metric of the clean run
};

// Components ranked by |mean|, largest first (ties: lower index first): (flat index, value), at
// most `k`.
std::vector<std::pair<int64_t, double>> RankGrid(const GridValues& grid, int64_t k);

// "L3H7", "L2 pos 5", "attn L1" ... for a flat index of `grid`.
std::string GridComponentName(const GridValues& grid, int64_t flat_index);

// The heads a report shows the attention patterns of: [(layer, head)], most important first,
// from the first output (a layer-level output: every head of its top layer).
std::vector<std::pair<int, int>> HeadsToShow(const SearchValues& values, int n_heads,
                                             int max_heads);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_SEARCH_VALUES_H_
