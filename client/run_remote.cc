#include "client/run_remote.h"

#include <cstring>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/wire_values.h"
#include "client/worker_client.h"
#include "common/checkpoint_files.h"
#include "common/status_macros.h"

namespace lensgrid {
namespace {

v1::Tensor TokensProto(const std::vector<int64_t>& ids) {
  v1::Tensor t;
  t.set_dtype(v1::I64);
  t.add_shape(1);
  t.add_shape(static_cast<int64_t>(ids.size()));
  t.set_data(reinterpret_cast<const char*>(ids.data()), ids.size() * sizeof(int64_t));
  return t;
}

}  // namespace

absl::StatusOr<RunData> RunRemote(const RemoteRunRequest& request) {
  LG_ASSIGN_OR_RETURN(std::shared_ptr<WorkerClient> worker,
                      WorkerClient::Connect(request.worker, {.transport = request.transport}));
  LG_RETURN_IF_ERROR(worker->WaitUntilReady(absl::Seconds(30)));
  LG_ASSIGN_OR_RETURN(v1::ModelInfo info, worker->GetModelInfo());
  if (info.processed() == request.no_processing) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the worker at ", request.worker, " serves ",
        info.processed() ? "processed" : "unprocessed", " weights; ",
        request.no_processing ? "drop --no-processing" : "add --no-processing",
        " or start the worker ", info.processed() ? "with" : "without", " --no-processing"));
  }
  std::string expected_sha;
  if (!request.model_dir.empty()) {
    // The identity of the dir's weights (one file or a sharded checkpoint), when it has any.
    absl::StatusOr<Checkpoint> checkpoint = FindCheckpoint(request.model_dir);
    if (checkpoint.ok()) {
      LG_ASSIGN_OR_RETURN(expected_sha, CheckpointSha256(*checkpoint));
    } else if (!absl::IsNotFound(checkpoint.status())) {
      return checkpoint.status();
    }
  }

  // Tokenized on the worker, then run as ids: the same ids as in-process.
  std::vector<int64_t> ids = request.tokens;
  if (!request.prompt.empty()) {
    v1::TokenizeRequest tokenize;
    tokenize.add_texts(request.prompt);
    tokenize.set_prepend_bos(!request.no_bos);
    LG_ASSIGN_OR_RETURN(v1::TokenizeResponse tokens, worker->Tokenize(tokenize));
    ids.assign(tokens.tokens(0).ids().begin(), tokens.tokens(0).ids().end());
  }
  v1::RunWithInterventionsRequest run = ProgramRunRequest(request, ids);
  run.set_expected_weights_sha256(expected_sha);
  absl::StatusOr<RunReply> reply;
  if (!run.has_cache() || run.programs_size() > 0) {
    reply = worker->RunWithInterventions(run);
  } else {
    v1::RunWithCacheRequest cache_run;
    *cache_run.mutable_input() = run.input();
    *cache_run.mutable_options() = run.options();
    *cache_run.mutable_cache() = run.cache();
    cache_run.set_expected_weights_sha256(expected_sha);
    reply = worker->RunWithCache(cache_run);
  }
  LG_RETURN_IF_ERROR(reply.status());
  LG_ASSIGN_OR_RETURN(
      RunData data,
      RunDataFromReply(info, request.model_dir.empty() ? info.model_dir() : request.model_dir,
                       reply->header, std::move(reply->tensors)));
  if (info.has_tokenizer()) {
    data.str_tokens =
        [worker](const std::vector<int64_t>& ids) -> absl::StatusOr<std::vector<std::string>> {
      v1::DetokenizeRequest detok;
      detok.mutable_ids()->Add(ids.begin(), ids.end());
      LG_ASSIGN_OR_RETURN(v1::DetokenizeResponse response, worker->Detokenize(detok));
      return std::vector<std::string>(response.str_tokens().begin(), response.str_tokens().end());
    };
  }
  return data;
}

v1::RunWithInterventionsRequest ProgramRunRequest(const RemoteRunRequest& request,
                                                  const std::vector<int64_t>& ids) {
  v1::RunWithInterventionsRequest run;
  *run.mutable_input()->mutable_tokens() = TokensProto(ids);
  v1::RunOptions* options = run.mutable_options();
  // Logits as the enum's zero: logits to every worker version (RETURN_LOGITS is 2.0's).
  options->set_return_type(ids.size() >= 2 ? v1::RETURN_BOTH : v1::RETURN_TYPE_UNSPECIFIED);
  if (request.stop_at_layer.has_value()) options->set_stop_at_layer(*request.stop_at_layer);
  if (!request.cache_regexes.empty()) {
    for (const auto& r : request.cache_regexes) run.mutable_cache()->add_regexes(r);
  }
  for (const v1::HookProgram& p : request.programs) *run.add_programs() = p;
  return run;
}

absl::StatusOr<RunData> RunDataFromReply(const v1::ModelInfo& info, const std::string& model_dir,
                                         const v1::RunHeader& header,
                                         std::vector<WireTensor> tensors) {
  RunData data;
  data.model_dir = model_dir;
  data.weights_sha256 = header.weights_sha256();
  data.processed = info.processed();
  data.n_layers = info.config().n_layers();
  data.n_heads = info.config().n_heads();
  data.d_model = info.config().d_model();
  const std::string& token_bytes = header.tokens().data();
  data.ids.resize(token_bytes.size() / sizeof(int64_t));
  std::memcpy(data.ids.data(), token_bytes.data(), data.ids.size() * sizeof(int64_t));
  for (WireTensor& t : tensors) {
    if (t.name == "logits") {
      data.logits = std::move(t);
    } else if (t.name == "loss") {
      LG_ASSIGN_OR_RETURN(std::vector<double> loss, WireToDoubles(t));
      if (loss.size() != 1) {
        return absl::InternalError(absl::StrCat("the worker's loss has ", loss.size(), " values"));
      }
      data.loss = loss[0];
    } else if (absl::StartsWith(t.name, "saved:")) {
      data.saved.push_back(std::move(t));
    } else {
      data.cache.push_back(std::move(t));
    }
  }
  return data;
}

}  // namespace lensgrid
