// `lensgrid search --method acdc`: ACDC driven (common/acdc_driver.h) over acdc-step searches
// run by a callback (in this process, or as one coordinator job per iteration), then the found
// circuit's faithfulness; the result as the SearchValues and CircuitFindings every search
// writes. No LibTorch.
//
//   LG_ASSIGN_OR_RETURN(AcdcSearch s, RunAcdcSearch(ctx, 0.05, run_step, run_faithfulness, &err));
//   WriteSearchOutput(s.values, ctx, {}, dir, out, nullptr, &s.circuit);
#ifndef LENSGRID_CLIENT_ACDC_SEARCH_H_
#define LENSGRID_CLIENT_ACDC_SEARCH_H_

#include <functional>
#include <iosfwd>

#include "absl/status/statusor.h"
#include "client/circuit_output.h"
#include "client/search_context.h"
#include "client/search_values.h"

namespace lensgrid {

struct AcdcSearch {
  SearchValues values;  // "scores" [edge]: each edge's distance increase when ACDC judged it
  CircuitFindings circuit;
  int64_t evaluations = 0;
  int steps = 0;
};

// One acdc-step search (method, metric as the context's; `params`: the receiving input and the
// circuit) for iteration `iteration`.
using AcdcStepSearch =
    std::function<absl::StatusOr<SearchValues>(int iteration, const CircuitParams& params)>;

// ctx: the model's shape and the metric (kl: the distance is the KL divergence; another metric
// is a task metric). Progress, one line per iteration that ran a step, goes to `progress` (may
// be null). INVALID_ARGUMENT for a bad threshold; a step's or the faithfulness run's error.
absl::StatusOr<AcdcSearch> RunAcdcSearch(const SearchContext& ctx, double threshold,
                                         const AcdcStepSearch& step,
                                         const FaithfulnessRunner& faithfulness,
                                         std::ostream* progress);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_ACDC_SEARCH_H_
