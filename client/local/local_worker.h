// The worker's own core (worker/core) in this process, behind the calls a client makes of a
// remote worker (client/attention_command.h's WorkerCalls), so `lensgrid run --program` and
// `lensgrid attention` without --worker run exactly the code a worker runs. LibTorch.
//
//   LG_ASSIGN_OR_RETURN(LocalWorker w, OpenLocalWorker("models/lensgrid-tiny", "cpu", false));
//   LG_ASSIGN_OR_RETURN(RunReply reply, w.calls.run_with_cache(request));
#ifndef LENSGRID_CLIENT_LOCAL_LOCAL_WORKER_H_
#define LENSGRID_CLIENT_LOCAL_LOCAL_WORKER_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "client/attention_command.h"
#include "lensgrid/v1/worker.pb.h"

namespace lensgrid {

struct LocalWorker {
  WorkerCalls calls;
  std::function<absl::StatusOr<RunReply>(const v1::RunWithInterventionsRequest&)>
      run_with_interventions;
};

absl::StatusOr<LocalWorker> OpenLocalWorker(const std::string& model_dir, const std::string& device,
                                            bool no_processing);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_LOCAL_LOCAL_WORKER_H_
