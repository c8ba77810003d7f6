#include "client/acdc_search.h"

#include <ostream>

#include "absl/strings/str_format.h"
#include "common/acdc_driver.h"
#include "common/status_macros.h"

namespace lensgrid {
namespace {

double Mean(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v) sum += x;
  return v.empty() ? 0.0 : sum / static_cast<double>(v.size());
}

}  // namespace

absl::StatusOr<AcdcSearch> RunAcdcSearch(const SearchContext& ctx, double threshold,
                                         const AcdcStepSearch& step,
                                         const FaithfulnessRunner& faithfulness,
                                         std::ostream* progress) {
  LG_ASSIGN_OR_RETURN(SearchNames names, NamesOfContext(ctx));
  const CircuitGraph graph = CircuitGraph::Build(ShapeOfContext(ctx));
  AcdcDriverOptions options;
  options.threshold = threshold;
  options.kl = names.metric == MetricKind::kKl;
  options.on_iteration = [progress](const AcdcIteration& it) {
    if (progress == nullptr || !it.evaluated) return;
    *progress << absl::StrFormat(
        "acdc: iteration %d/%d (%s): %d of %d candidates removed, %d edges left, %d evaluations, "
        "distance %.6g\n",
        it.iteration + 1, it.iterations, it.receiver, it.removed, it.candidates, it.edges_left,
        it.evaluations, it.distance);
  };
  auto run_step = [&](int iteration, const std::string& receiver,
                      const std::string& kept) -> absl::StatusOr<AcdcStepResult> {
    CircuitParams params;
    params.receivers = {receiver};
    params.kept_edges = kept;
    LG_ASSIGN_OR_RETURN(SearchValues v, step(iteration, params));
    if (v.outputs.empty()) return absl::InternalError("an acdc-step search has no output grid");
    return AcdcStepResult{v.outputs.front().mean, Mean(v.baseline)};
  };
  LG_ASSIGN_OR_RETURN(AcdcOutcome outcome, DriveAcdc(graph, options, run_step));

  AcdcSearch s;
  s.evaluations = outcome.evaluations;
  s.steps = outcome.steps;
  CircuitParams kept;
  kept.kept_edges = PackEdges(outcome.kept);
  LG_ASSIGN_OR_RETURN(SearchValues f, faithfulness(kept));
  if (f.outputs.empty()) return absl::InternalError("the faithfulness run has no output grid");
  s.values.names = names;
  s.values.names.method = Method::kAcdc;
  s.values.names.circuit = {};
  s.values.outputs.push_back(
      {"scores", {"edge"}, {static_cast<int64_t>(outcome.score.size())}, {}, outcome.score});
  s.values.baseline = f.baseline;    // the clean run
  s.values.reference = f.reference;  // the corrupted run
  s.circuit.shape = ShapeOfContext(ctx);
  s.circuit.scores = outcome.score;
  s.circuit.kept = outcome.kept;
  s.circuit.threshold = threshold;
  s.circuit.selection =
      absl::StrFormat("ACDC at threshold %g (%s), %d evaluations in %d steps", threshold,
                      options.kl ? "KL divergence" : absl::StrCat("|change| of ", ctx.metric),
                      outcome.evaluations, outcome.steps);
  LG_ASSIGN_OR_RETURN(s.circuit.faithfulness, FaithfulnessOf(f.outputs.front()));
  return s;
}

}  // namespace lensgrid
