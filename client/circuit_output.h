// The circuit an edge method's scores select (eap, eap-ig), and how a circuit is written:
// result.json's "circuit", DIR/circuit.dot (Graphviz) and the summary lines. No LibTorch.
//
//   LG_ASSIGN_OR_RETURN(CircuitFindings c, FindCircuit(ctx, values.outputs.front(), {20, {}}));
//   c.faithfulness = FaithfulnessOf(faithfulness_values);   // a circuit-faithfulness run
//   nlohmann::ordered_json j = CircuitToJson(c);
//   std::string dot = CircuitToDot(c);
#ifndef LENSGRID_CLIENT_CIRCUIT_OUTPUT_H_
#define LENSGRID_CLIENT_CIRCUIT_OUTPUT_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/search_context.h"
#include "client/search_values.h"
#include "common/circuit_graph.h"
#include "nlohmann/json.hpp"

namespace lensgrid {

// How the circuit is chosen from the scores: the top_k edges by |score|, or every edge with
// |score| >= threshold. Neither: the top kDefaultTopK.
struct CircuitChoice {
  int64_t top_k = 0;
  std::optional<double> threshold;
};
inline constexpr int64_t kDefaultTopK = 20;

// A circuit-faithfulness run's means: the circuit's metric, the clean and corrupted runs'.
struct FaithfulnessValues {
  double circuit = 0, full = 0, corrupted = 0;
  double fraction() const { return full == 0 ? 0 : circuit / full; }
  double normalized() const {
    return full == corrupted ? 0 : (circuit - corrupted) / (full - corrupted);
  }
};

struct CircuitFindings {
  CircuitShape shape;
  std::vector<double> scores;  // one per edge (mean over prompts)
  std::vector<bool> kept;      // one per edge
  double threshold = 0;        // |score| >= threshold is kept (top-k: the k-th |score|)
  std::string selection;       // "top 20 edges by |score|"
  std::optional<FaithfulnessValues> faithfulness;
  int64_t n_kept() const;
};

// The shape of the context's model.
CircuitShape ShapeOfContext(const SearchContext& ctx);

// From an edge method's "scores" grid. INVALID_ARGUMENT when the grid is not one score per edge
// of the context's model, or for a negative or NaN threshold.
absl::StatusOr<CircuitFindings> FindCircuit(const SearchContext& ctx, const GridValues& scores,
                                            const CircuitChoice& choice);
// A given circuit (circuit-faithfulness: ctx.circuit.kept_edges), with its run's values
// ("metric" [circuit, clean, corrupted]) as the faithfulness. Scores: 1 kept, 0 not.
absl::StatusOr<CircuitFindings> GivenCircuit(const SearchContext& ctx, const GridValues& metric);
// The means of a circuit-faithfulness run's "metric" grid. INVALID_ARGUMENT for another grid.
absl::StatusOr<FaithfulnessValues> FaithfulnessOf(const GridValues& metric);

// The circuit of a finished search: eap / eap-ig select theirs from the scores (`choice`) and
// measure its faithfulness with `run_faithfulness` (a circuit-faithfulness search of the given
// circuit on the same prompts: in this process, or another job); circuit-faithfulness's is the
// given one; other methods have none (nullopt).
using FaithfulnessRunner = std::function<absl::StatusOr<SearchValues>(const CircuitParams&)>;
absl::StatusOr<std::optional<CircuitFindings>> CircuitOfSearch(
    const SearchValues& values, const SearchContext& ctx, const CircuitChoice& choice,
    const FaithfulnessRunner& run_faithfulness);

// {"graph": {n_layers, n_heads, attn_only}, "nodes": [...], "edges": [{name, sender, receiver,
// channel, score, kept}], "threshold", "selection", "kept", ["faithfulness": {circuit, full,
// corrupted, fraction, normalized}]}: what the report's circuit view reads.
nlohmann::ordered_json CircuitToJson(const CircuitFindings& c);
// The kept edges as a Graphviz digraph: nodes by layer (rank=same), edge width by |score|,
// colour by sign, q/k/v as edge labels.
std::string CircuitToDot(const CircuitFindings& c);

// A file of edge names ("L0H1 -> L1H1.k"), one a line; blank lines and '#' comments skipped;
// -> the packed mask of CircuitParams::kept_edges. INVALID_ARGUMENT "FILE:LINE: ..." for a name
// the graph does not have; NOT_FOUND for a file that cannot be read.
absl::StatusOr<std::string> ReadEdgeList(const std::string& path, const CircuitGraph& graph);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_CIRCUIT_OUTPUT_H_
