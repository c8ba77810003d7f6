// What a finished search writes, wherever it ran (in this process, on local
// workers, through a coordinator): the summary on stdout, DIR/result.json,
// DIR/result.safetensors and DIR/report.html.
//
//   SearchContext ctx = ...;                 // model identity, dataset, flags
//   LG_RETURN_IF_ERROR(WriteSearchOutput(result, ctx, views, "out/ioi", std::cout));
//
// SearchContext travels with a coordinator job (JobSpec.client_json), so that
// `lensgrid result JOB` writes the same output as the search that submitted it.
#ifndef LENSGRID_CLIENT_SEARCH_OUTPUT_H_
#define LENSGRID_CLIENT_SEARCH_OUTPUT_H_

#include <cstdint>
#include <iosfwd>
#include <string>

#include "absl/status/statusor.h"
#include "client/report.h"
#include "nlohmann/json.hpp"
#include "worker/model/analysis/search.h"

namespace lensgrid {

struct SearchContext {
  std::string method, metric, ablation;  // names, as the CLI spells them
  bool normalize = false;
  // The model.
  std::string model_dir, weights_sha256;
  bool processed = true;
  int64_t n_layers = 0, n_heads = 0;
  // The dataset.
  std::string dataset;
  int64_t n_prompts = 0, positions = 0;
  uint64_t seed = 0;
  int64_t seq_len = 0;  // induction: random tokens per half
  // Where it ran: {"where": "in-process"} or {"where": "coordinator", ...}.
  nlohmann::ordered_json run = nlohmann::ordered_json::object();
  double seconds = 0;
};

nlohmann::ordered_json ContextToJson(const SearchContext& ctx);
// INVALID_ARGUMENT naming the missing or mistyped field.
absl::StatusOr<SearchContext> ContextFromJson(const std::string& text);

// The SearchSpec the context names.
absl::StatusOr<SearchSpec> SpecOfContext(const SearchContext& ctx);

// Prints the summary and the top components to `out`; with a non-empty
// `output_dir`, also writes result.json, result.safetensors and report.html
// (with `attention`'s patterns) there.
// `detectors` (optional): a detect-heads result on the same dataset, written
// beside the main result (result.json "detectors", tensors "detectors.NAME").
absl::Status WriteSearchOutput(const SearchResult& result, const SearchContext& ctx,
                               const std::vector<AttentionView>& attention,
                               const std::string& output_dir, std::ostream& out,
                               const SearchResult* detectors = nullptr);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_SEARCH_OUTPUT_H_
