// What a finished search writes, wherever it ran (in this process, on local
// workers, through a coordinator): the summary on stdout, DIR/result.json,
// DIR/result.safetensors and DIR/report.html. No LibTorch: the numbers are SearchValues
// (client/search_values.h).
//
//   SearchContext ctx = ...;                 // model identity, dataset, flags
//   LG_RETURN_IF_ERROR(WriteSearchOutput(result, ctx, views, "out/ioi", std::cout));
//
// SearchContext (client/search_context.h) is what the output says about the search; for a
// coordinator job it comes from the job's status, so `lensgrid result JOB` writes the same
// output as the search that submitted it.
#ifndef LENSGRID_CLIENT_SEARCH_OUTPUT_H_
#define LENSGRID_CLIENT_SEARCH_OUTPUT_H_

#include <cstdint>
#include <iosfwd>
#include <string>

#include "absl/status/statusor.h"
#include "client/circuit_output.h"
#include "client/report.h"
#include "client/search_context.h"
#include "client/search_values.h"

namespace lensgrid {

// Prints the summary and the top components to `out`; with a non-empty
// `output_dir`, also writes result.json, result.safetensors and report.html
// (with `attention`'s patterns) there.
// `detectors` (optional): a detect-heads result on the same dataset, written
// beside the main result (result.json "detectors", tensors "detectors.NAME").
// `circuit` (optional; eap, eap-ig, circuit-faithfulness): the circuit found,
// written as result.json "circuit", the tensor "circuit.kept" (1 kept, 0 not,
// per edge), DIR/circuit.dot and the summary's circuit lines. Edge grids'
// components are named by the circuit graph ("L0H1 -> L1H1.k").
absl::Status WriteSearchOutput(const SearchValues& result, const SearchContext& ctx,
                               const std::vector<AttentionView>& attention,
                               const std::string& output_dir, std::ostream& out,
                               const SearchValues* detectors = nullptr,
                               const CircuitFindings* circuit = nullptr);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_SEARCH_OUTPUT_H_
