// The circuit-discovery methods of the search table (MethodKind::kCircuit: eap, eap-ig,
// path-patch, circuit-faithfulness) as searches: RunSearch (search.h) hands them here, so they
// shard, merge and travel like every other method.
//
// Each runs the clean prompt with edges of the circuit graph (common/circuit_graph.h) carrying
// the corrupted prompt's values; the result's baseline is the clean run's metric and its
// reference the corrupted run's.
//   eap, eap-ig  "scores" [edge]: EdgeAttribution (circuit.h), per prompt.
//   path-patch   "delta" [layer, head]: metric(clean run in which only the edges from that
//                head to the receivers carry its corrupted value) - metric(clean run); the
//                receivers are SearchSpec::circuit.receivers (default the logits). As the IOI
//                paper's path patching, through direct edges: every other path stays clean.
//   circuit-faithfulness  "metric" [circuit, clean, corrupted]: the metric with every edge
//                outside SearchSpec::circuit.kept_edges corrupted, and the two endpoints.
//   acdc-step    "metric" [candidate]: one ACDC iteration's evaluations (AcdcStepComponents in
//                common/search_methods.h); acdc itself is driven by common/acdc_driver.h.
#ifndef LENSGRID_WORKER_MODEL_ANALYSIS_CIRCUIT_SEARCH_H_
#define LENSGRID_WORKER_MODEL_ANALYSIS_CIRCUIT_SEARCH_H_

#include "absl/status/status.h"
#include "worker/model/analysis/search.h"

namespace lensgrid {

// Prompts [p_begin, p_end), components [c_begin, c_end) of the first grid (path-patch: sender
// heads, flat [layer, head]; the others: the whole grid), into result->outputs.front()
// (per_prompt), result->baseline and result->reference. REQUIRES: IsCircuit(spec.method),
// result->outputs from SearchOutputs, ranges checked. INVALID_ARGUMENT for parameters that do
// not fit the model (CheckCircuitParams).
absl::Status RunCircuitSearch(const HookedTransformer& model, const Dataset& dataset,
                              const SearchSpec& spec, const SearchOptions& options, int64_t p_begin,
                              int64_t p_end, int64_t c_begin, int64_t c_end, SearchResult* result);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_ANALYSIS_CIRCUIT_SEARCH_H_
