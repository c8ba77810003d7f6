// `lensgrid run --worker ADDR`: the same run as in-process, on a worker.
//
//   LG_ASSIGN_OR_RETURN(RunData data, RunRemote(request));
//   // data.logits, data.cache: bit-equal to the in-process run of the same model
//
// No LibTorch: the tensors are WireTensors (an in-process run converts its tensors to them,
// client/local/run_in_process.h).
#ifndef LENSGRID_CLIENT_RUN_REMOTE_H_
#define LENSGRID_CLIENT_RUN_REMOTE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/auth.h"
#include "common/tensor_chunks.h"
#include "lensgrid/v1/worker.pb.h"

namespace lensgrid {

// One run's results, wherever it ran, for printing and --output.
struct RunData {
  std::string model_dir;
  std::string weights_sha256;
  bool processed = true;
  int64_t n_layers = 0, n_heads = 0, d_model = 0;
  std::vector<int64_t> ids;
  std::optional<WireTensor> logits;  // [1, pos, vocab], or none (stop_at_layer)
  std::optional<double> loss;        // none: fewer than 2 tokens, or stop_at_layer
  std::vector<WireTensor> cache;     // named by hook
  std::vector<WireTensor> saved;     // hook programs' saved values, named "saved:NAME"
  // Each id's text when a tokenizer is available (locally or on the worker).
  std::function<absl::StatusOr<std::vector<std::string>>(const std::vector<int64_t>&)> str_tokens;
};

struct RemoteRunRequest {
  std::string worker;     // HOST:PORT
  std::string model_dir;  // optional: must hold the worker's weights when given
  std::string prompt;     // or
  std::vector<int64_t> tokens;
  bool no_bos = false;
  bool no_processing = false;  // must match how the worker loaded its weights
  std::vector<std::string> cache_regexes;
  std::optional<int> stop_at_layer;
  std::vector<v1::HookProgram> programs;  // run at their hooks (client/program_json.h)
  ClientTransport transport;              // TLS and token for the worker (common/auth.h)
};

absl::StatusOr<RunData> RunRemote(const RemoteRunRequest& request);

// The RunWithInterventions request of `request` for `ids` (one sequence):
// its programs, its cache regexes, the loss when there are 2 ids or more.
v1::RunWithInterventionsRequest ProgramRunRequest(const RemoteRunRequest& request,
                                                  const std::vector<int64_t>& ids);

// A worker's reply as RunData (without str_tokens): logits, loss, cache and
// saved values by name. INTERNAL for a loss that is not one value.
absl::StatusOr<RunData> RunDataFromReply(const v1::ModelInfo& info, const std::string& model_dir,
                                         const v1::RunHeader& header,
                                         std::vector<WireTensor> tensors);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_RUN_REMOTE_H_
