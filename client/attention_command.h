// `lensgrid attention`: one layer's attention patterns on one prompt as a self-contained HTML
// page — the search report's attention viewer (client/report.h: per-head grids with token
// labels, hover values, a head selector), from a worker or from a model in this process.
//
//   lensgrid attention (--model DIR|NAME | --worker HOST:PORT) (--prompt TEXT | --tokens IDS)
//                      --layer L [--heads 0,3] --output view.html [--no-bos] [--no-processing]
//                      [--tls-ca F] [--tls-cert F --tls-key F] [--token T]
//
// The patterns are TransformerLens's cache["pattern", L][head] of the prompt (BOS prepended to
// --prompt unless --no-bos), at most kMaxAttentionTokens positions. No LibTorch here: without
// --worker, `lensgrid` hands the command to lensgrid-local, whose WorkerCalls run the worker's
// own core in its process.
#ifndef LENSGRID_CLIENT_ATTENTION_COMMAND_H_
#define LENSGRID_CLIENT_ATTENTION_COMMAND_H_

#include <functional>
#include <iosfwd>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "client/worker_client.h"
#include "common/auth.h"
#include "lensgrid/v1/worker.pb.h"

namespace lensgrid {

struct AttentionFlags {
  std::string model_dir;
  std::string worker;  // HOST:PORT: ask that worker instead of loading the model here
  std::string prompt;
  std::string tokens;
  int layer = 0;       // negative counts from the end
  std::string heads;   // "0,3"; empty: every head of the layer
  std::string output;  // the .html to write
  bool no_bos = false;
  bool no_processing = false;
  std::string device = "cpu";
  bool offline = false;
  ClientTransport transport;
};

// What the command needs of a worker, remote or in this process.
struct WorkerCalls {
  v1::ModelInfo info;
  std::function<absl::StatusOr<v1::TokenizeResponse>(const v1::TokenizeRequest&)> tokenize;
  std::function<absl::StatusOr<v1::DetokenizeResponse>(const v1::DetokenizeRequest&)> detokenize;
  std::function<absl::StatusOr<RunReply>(const v1::RunWithCacheRequest&)> run_with_cache;
};

// The model of flags.model_dir loaded in this process (lensgrid-local).
using OpenWorkerInProcess = std::function<absl::StatusOr<WorkerCalls>(const AttentionFlags&)>;

// Without `in_process`, `attention` without --worker is an error naming lensgrid-local.
int RunAttentionCommand(int argc, char** argv, std::ostream& out, std::ostream& err,
                        const OpenWorkerInProcess& in_process = nullptr);

// The page for `flags` from `worker`: "wrote PATH (N heads, T tokens)" on `out`.
absl::Status WriteAttentionPage(const AttentionFlags& flags, const WorkerCalls& worker,
                                std::ostream& out);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_ATTENTION_COMMAND_H_
