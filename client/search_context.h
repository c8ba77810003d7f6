// What a search's output says about the search (result.json's "model", "dataset" and "run",
// the report's identity): the method, the model's identity and shape, the dataset, where it ran.
//
// A search through a coordinator learns it from the finished job's JobStatus (the coordinator
// prepared the job on a worker: model shape, pinned weights, prompt count and length), so the
// client needs no model files:
//
//   LG_ASSIGN_OR_RETURN(SearchContext ctx, ContextFromJobStatus(final_status));
//   ctx.normalize = flags.normalize;  // what only the client knows
//
// Jobs submitted before JobStatus carried its spec kept the client's own description as
// JobSpec.client_json (ContextToJson's text); ContextFromJson reads it back.
//
// No LibTorch, no gRPC: protobuf messages and JSON only.
#ifndef LENSGRID_CLIENT_SEARCH_CONTEXT_H_
#define LENSGRID_CLIENT_SEARCH_CONTEXT_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/search_methods.h"
#include "lensgrid/v1/coordinator.pb.h"
#include "nlohmann/json.hpp"

namespace lensgrid {

struct SearchContext {
  std::string method, metric, ablation;  // names, as the CLI spells them
  CircuitParams circuit;                 // circuit methods: ig_steps, receivers, kept_edges
  bool normalize = false;
  // The model: its id (the one workers serve it under; empty in-process), its dir (empty when
  // this process never saw the model's files), its weights and its shape.
  std::string model_id, model_dir, weights_sha256;
  std::optional<bool> processed;  // fold_ln etc.; unknown when no worker said
  int64_t n_layers = 0, n_heads = 0;
  bool attn_only = false;
  // The dataset.
  std::string dataset;
  int64_t n_prompts = 0, positions = 0;
  uint64_t seed = 0;
  int64_t seq_len = 0;  // induction: random tokens per half
  // Where it ran: {"where": "in-process"} or {"where": "coordinator", ...}.
  nlohmann::ordered_json run = nlohmann::ordered_json::object();
  double seconds = 0;
};

// {"method", "metric", "ablation", ["circuit": {"ig_steps", "receivers", "kept_edges": count}],
//  "normalize", "model": {["id"], "dir", "weights_sha256",
//  "processed" (null: unknown), "n_layers", "n_heads", "attn_only"}, "dataset": {"name",
//  "n_prompts", "seed", "seq_len", "positions"}, "run"}.
nlohmann::ordered_json ContextToJson(const SearchContext& ctx);
// ContextToJson's text (JobSpec.client_json of older jobs). INVALID_ARGUMENT naming the missing
// or mistyped field.
absl::StatusOr<SearchContext> ContextFromJson(const std::string& text);

// True when the status says what the job is (the coordinator prepared it: JobStatus.spec has
// the model's shape).
bool StatusDescribesJob(const v1::JobStatus& status);

// The context of a prepared job, from its status alone: method, metric and ablation (spec's
// enums, UNSPECIFIED as the coordinator reads it: logit-diff, zero), model id, pinned weights,
// shape (spec), dataset (spec.dataset: name, seed, seq_len; "inline" when the prompts were sent
// inline), n_prompts and positions (status.n_prompts, n_pos), run = {"where": "coordinator",
// "job_id"}, processed (spec.model, when the coordinator recorded it). What only the client
// knows (normalize, model_dir, seconds, the coordinator's address) is left at its default.
// FAILED_PRECONDITION when the job has not been prepared (no model shape yet); INVALID_ARGUMENT for
// an unknown method, metric or ablation.
absl::StatusOr<SearchContext> ContextFromJobStatus(const v1::JobStatus& status);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_SEARCH_CONTEXT_H_
