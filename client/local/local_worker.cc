#include "client/local/local_worker.h"

#include <utility>

#include "common/status_macros.h"
#include "worker/core/worker_core.h"

namespace lensgrid {
namespace {

const CancelCheck kNeverCancelled = [] { return false; };

// A run's tensors as a client receives them (the bytes copied out of the tensors).
RunReply ToReply(RunResult result) {
  RunReply reply;
  reply.header = std::move(result.header);
  for (const TensorBytes& t : result.tensors) {
    reply.tensors.push_back(
        {t.name, t.dtype, t.shape,
         std::string(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size())});
  }
  return reply;
}

}  // namespace

absl::StatusOr<LocalWorker> OpenLocalWorker(const std::string& model_dir, const std::string& device,
                                            bool no_processing) {
  WorkerOptions options;
  options.model_dir = model_dir;
  options.device = device;
  options.no_processing = no_processing;
  LG_ASSIGN_OR_RETURN(std::unique_ptr<WorkerCore> owned, WorkerCore::Load(options));
  std::shared_ptr<const WorkerCore> core = std::move(owned);
  LocalWorker w;
  w.calls.info = core->Info();
  w.calls.tokenize = [core](const v1::TokenizeRequest& r) {
    return core->Tokenize(r, kNeverCancelled);
  };
  w.calls.detokenize = [core](const v1::DetokenizeRequest& r) { return core->Detokenize(r); };
  w.calls.run_with_cache = [core](const v1::RunWithCacheRequest& r) -> absl::StatusOr<RunReply> {
    LG_ASSIGN_OR_RETURN(RunResult result, core->RunWithCache(r, kNeverCancelled));
    return ToReply(std::move(result));
  };
  w.run_with_interventions =
      [core](const v1::RunWithInterventionsRequest& r) -> absl::StatusOr<RunReply> {
    LG_ASSIGN_OR_RETURN(RunResult result, core->RunWithInterventions(r, kNeverCancelled));
    return ToReply(std::move(result));
  };
  return w;
}

}  // namespace lensgrid
