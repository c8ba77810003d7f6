#include "common/acdc_driver.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/search_methods.h"

namespace lensgrid {

absl::StatusOr<AcdcOutcome> DriveAcdc(const CircuitGraph& graph, const AcdcDriverOptions& options,
                                      const AcdcStepRunner& step) {
  if (!(options.threshold >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the ACDC threshold must be >= 0, got ", options.threshold));
  }
  const std::vector<CircuitEdge>& edges = graph.edges();
  const auto groups = graph.ReceivingInputs();
  const size_t components = static_cast<size_t>(
      AcdcStepComponents({graph.shape().n_layers, graph.shape().n_heads, graph.shape().attn_only}));
  AcdcOutcome out;
  out.kept.assign(edges.size(), true);
  out.score.assign(edges.size(), 0.0);
  std::vector<int64_t> kept_out(graph.nodes().size(), 0);  // kept edges out of each node
  for (const CircuitEdge& e : edges) ++kept_out[e.sender];
  int64_t left = static_cast<int64_t>(edges.size());
  auto remove = [&](size_t e) {
    out.kept[e] = false;
    --kept_out[edges[e].sender];
    --left;
  };
  AcdcIteration it;
  it.iterations = static_cast<int>(groups.size());
  for (size_t g = groups.size(); g-- > 0;) {
    const auto [begin, end] = groups[g];
    const CircuitEdge& first = edges[begin];
    it.receiver = graph.ReceiverName(first.receiver, first.channel);
    std::vector<size_t> candidates;
    for (size_t e = begin; e < end; ++e) {
      if (out.kept[e]) candidates.push_back(e);
    }
    it.candidates = static_cast<int64_t>(candidates.size());
    it.removed = 0;
    it.evaluated = false;
    const bool reaches_nothing =
        first.receiver != graph.LogitsNode() && kept_out[first.receiver] == 0;
    if (reaches_nothing) {
      // Corrupting the inputs of a node whose output goes nowhere changes nothing: increase 0.
      for (size_t e : candidates) {
        if (0 < options.threshold) {
          remove(e);
          ++it.removed;
        }
      }
    } else if (!candidates.empty()) {
      std::vector<bool> kept = out.kept;
      absl::StatusOr<AcdcStepResult> r = step(it.iteration, it.receiver, PackEdges(kept));
      if (!r.ok()) return r.status();
      if (r->metric.size() != components) {
        return absl::InvalidArgumentError(absl::StrCat("ACDC step ", it.iteration, " returned ",
                                                       r->metric.size(), " values, not ",
                                                       components));
      }
      auto distance = [&](double m) { return options.kl ? m : std::fabs(m - r->clean); };
      const double base = distance(r->metric[0]);
      for (size_t e : candidates) {
        const double increase = distance(r->metric[1 + (e - begin)]) - base;
        out.score[e] = increase;
        if (increase < options.threshold) {
          remove(e);
          ++it.removed;
        }
      }
      out.evaluations += static_cast<int64_t>(candidates.size()) + 1;
      ++out.steps;
      it.distance = base;
      it.evaluated = true;
    }
    it.edges_left = left;
    it.evaluations = out.evaluations;
    if (options.on_iteration) options.on_iteration(it);
    ++it.iteration;
  }
  return out;
}

}  // namespace lensgrid
