// The attention patterns a search report shows: the top heads of the search's
// first output (or, for layer-level outputs, every head of its top layer) on
// one prompt, as TransformerLens's cache["pattern", layer][head].
//
//   std::vector<AttentionView> views =
//       TopHeadViews(*model, tokenizer, dataset.prompts[0], result, /*max_heads=*/4);
//
// HeadsToShow (client/search_values.h) picks the heads; a search that ran on workers asks one
// of them for the patterns (client/worker_views.h) instead of loading the model here. LibTorch.
#ifndef LENSGRID_CLIENT_LOCAL_REPORT_VIEWS_H_
#define LENSGRID_CLIENT_LOCAL_REPORT_VIEWS_H_

#include <vector>

#include "absl/status/statusor.h"
#include "client/report.h"
#include "client/search_context.h"
#include "client/search_values.h"
#include "worker/model/analysis/dataset.h"
#include "worker/model/hooked_transformer.h"

namespace lensgrid {

// REQUIRES: tokenizer may be null (tokens are then shown as ids).
absl::StatusOr<std::vector<AttentionView>> TopHeadViews(const HookedTransformer& model,
                                                        const Tokenizer* tokenizer,
                                                        const Prompt& prompt,
                                                        const SearchValues& result,
                                                        int max_heads = 4);

// For a job from before JobStatus described it (`lensgrid result` of an old job): loads the
// model of ctx.model_dir (its weights hash must be ctx.weights_sha256) and shows `prompt`, or
// (null) the first prompt of the dataset rebuilt from ctx. Jobs that ran on a coordinator's
// workers otherwise get their patterns from a worker (client/worker_views.h).
absl::StatusOr<std::vector<AttentionView>> ViewsFromModelDir(const SearchContext& ctx,
                                                             const SearchValues& result,
                                                             const Prompt* prompt = nullptr,
                                                             int max_heads = 4);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_LOCAL_REPORT_VIEWS_H_
