// `lensgrid search`: a circuit search over a dataset.
//
//   lensgrid search --model DIR|NAME --dataset NAME|FILE.jsonl --method METHOD
//                   [--ablation zero|mean|resample] [--metric logit-diff|prob|prob-diff|loss|kl]
//                   [--n-prompts N] [--seed S] [--seq-len N] [--normalize] [--naive]
//                   --in-process [--output DIR]
//   lensgrid search --model ID --coordinator ADDR [--weights-sha256 HEX] ...
//   lensgrid search --model DIR|NAME --local N ...
//
// --in-process loads the model here. --coordinator names the model by the id its workers serve
// and reads no model file: the job carries the dataset's name and seed (or the JSONL file's
// bytes), a worker builds it, and the job's status says the model's shape and weights. --local
// starts a coordinator and N workers on the model dir and submits the same way.
//
// Writes DIR/result.json (method, metric, ablation, model identity, baseline
// metric, each result grid as nested lists with its axis names, components
// ranked by |delta|) and DIR/result.safetensors (the grids, per-prompt values,
// baselines), and prints the top 10 components.
//
// No LibTorch here: --in-process is a SearchInProcess that lensgrid-local passes in
// (client/local/search_in_process.h); `lensgrid` hands such a command line to lensgrid-local.
#ifndef LENSGRID_CLIENT_SEARCH_COMMAND_H_
#define LENSGRID_CLIENT_SEARCH_COMMAND_H_

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>

#include "absl/status/status.h"
#include "client/circuit_output.h"
#include "common/auth.h"

namespace lensgrid {

struct SearchFlags {
  std::string model_dir, dataset, method, ablation = "zero", metric, output;
  std::string model_flag;  // --model as given (model_dir: as resolved)
  int64_t n_prompts = 16, seq_len = 16;
  uint64_t seed = 0;
  bool normalize = false, naive = false, in_process = false, no_processing = false;
  bool detectors = false;
  int64_t local = 0;
  std::string coordinator, model_id, weights_sha256;
  // SubmitJobRequest.request_id: --request-id, else $LENSGRID_REQUEST_ID,
  // else a random one (a retry inside this run never starts a second job).
  std::string request_id;
  int64_t prompts_per_shard = 0, components_per_shard = 0;
  int threads = 0;
  // Circuit methods: eap-ig's steps (0: the default), path-patch's receivers, the circuit
  // eap/eap-ig select (top_k, or threshold when >= 0), circuit-faithfulness's edge list.
  int ig_steps = 0;
  std::vector<std::string> receivers;
  int64_t top_k = 0;
  double threshold = -1;
  std::string edges_file;
  ClientTransport transport;  // --tls-ca, --tls-cert, --tls-key, --token (--coordinator)
};

// The circuit parameters of the flags (kept_edges: filled from --edges once the model's shape
// is known), and how eap/eap-ig choose their circuit.
CircuitParams CircuitParamsOfFlags(const SearchFlags& flags);
CircuitChoice CircuitChoiceOfFlags(const SearchFlags& flags);
// A usage error for circuit flags given to a method that does not read them (empty: none).
std::string CircuitFlagsError(const SearchFlags& flags);

// --metric, else kl for acdc, else the dataset's DefaultMetric.
std::string MetricOfFlags(const SearchFlags& flags);

// The metric a method reads when none is given: what the dataset is about.
std::string DefaultMetric(const std::string& dataset);

// The id workers serve the model of --model under (--local starts them with it): --model-id,
// else a worker's default (common/model_id.h: the name of the model's dir, or the Hub name).
std::string ModelIdOfFlags(const SearchFlags& flags);

// Runs a parsed --in-process search and writes its output.
using SearchInProcess = std::function<absl::Status(const SearchFlags& flags, std::ostream& out)>;

// Without `in_process`, --in-process is an error naming lensgrid-local.
int RunSearchCommand(int argc, char** argv, std::ostream& out, std::ostream& err,
                     const SearchInProcess& in_process = nullptr);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_SEARCH_COMMAND_H_
