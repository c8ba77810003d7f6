#include "client/local/local_commands.h"

#include <torch/torch.h>

#include "client/local/init_command.h"
#include "client/local/local_worker.h"
#include "client/local/report_views.h"
#include "client/local/run_in_process.h"
#include "client/local/search_in_process.h"
#include "client/local/train_command.h"
#include "common/status_macros.h"

namespace lensgrid {

LocalCommands LibTorchCommands() {
  LocalCommands local;
  local.run = &RunInThisProcess;
  local.search = &SearchInThisProcess;
  local.model_dir_views = [](const SearchContext& ctx, const SearchValues& values) {
    return ViewsFromModelDir(ctx, values);
  };
  local.attention = [](const AttentionFlags& flags) -> absl::StatusOr<WorkerCalls> {
    LG_ASSIGN_OR_RETURN(LocalWorker worker,
                        OpenLocalWorker(flags.model_dir, flags.device, flags.no_processing));
    return worker.calls;
  };
  local.init = &RunInitCommand;
  local.train = &RunTrainCommand;
  return local;
}

}  // namespace lensgrid
