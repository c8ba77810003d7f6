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
  ClientTransport transport;  // TLS and token for the worker (common/auth.h)
};

absl::StatusOr<RunData> RunRemote(const RemoteRunRequest& request);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_RUN_REMOTE_H_
