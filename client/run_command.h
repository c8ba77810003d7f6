// `lensgrid run`: one forward pass of a model dir in this process.
//
//   lensgrid run --model DIR (--prompt TEXT | --tokens 5,17,300) [--no-processing]
//                [--cache REGEX]... [--stop-at-layer N] [--output FILE.safetensors]
//                [--no-bos] [--device cpu|cuda:N] [--worker HOST:PORT]
//                [--program FILE.json]
//
// Prints the loss, the top-5 next tokens at the last position (with their
// strings when a tokenizer is available) and the cached names with shapes.
// --prompt prepends BOS (as TransformerLens's to_tokens) unless --no-bos;
// --tokens are taken as given. --worker HOST:PORT runs it on a lensgrid-worker
// instead (the same output, bit-equal). --output writes `logits` [batch, pos, vocab]
// F32 and each cached activation under its hook name as safetensors.
// --program runs hook programs (proto/lensgrid/v1/program.proto as JSON,
// client/program_json.h) at their hooks; their saved values are printed and
// written as "saved:NAME". In this process such a run goes through the worker's
// own core (worker/core), so it is the same code as on a worker.
//
// No LibTorch here: a run in this process is a RunInProcess that lensgrid-local passes in
// (client/local/run_in_process.h); `lensgrid` hands `run` without --worker to lensgrid-local.
#ifndef LENSGRID_CLIENT_RUN_COMMAND_H_
#define LENSGRID_CLIENT_RUN_COMMAND_H_

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/run_remote.h"

namespace lensgrid {

struct RunFlags {
  std::string model_dir;
  std::string prompt;
  std::string tokens;
  bool no_processing = false;
  bool no_bos = false;
  std::vector<std::string> cache_regexes;
  std::optional<int> stop_at_layer;
  std::string output;
  std::string program_file;  // hook programs as JSON
  std::string device = "cpu";
  int threads = 0;
  std::string worker;         // HOST:PORT: run there instead of in this process
  ClientTransport transport;  // --tls-ca, --tls-cert, --tls-key, --token (--worker)
  bool offline = false;
};

// Runs the model of flags.model_dir in this process (`out` takes its warnings).
using RunInProcess =
    std::function<absl::StatusOr<RunData>(const RunFlags& flags, std::ostream& out)>;

// Without `in_process`, `run` without --worker is an error naming lensgrid-local.
int RunRunCommand(int argc, char** argv, std::ostream& out, std::ostream& err,
                  const RunInProcess& in_process = nullptr);

// "5,17,300" (spaces allowed) -> ids. INVALID_ARGUMENT naming the bad item.
absl::StatusOr<std::vector<int64_t>> ParseTokenList(const std::string& text);

// A token's text for display: quoted, with control characters escaped.
std::string QuoteTokenText(const std::string& text);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_RUN_COMMAND_H_
