#include "client/local/local_commands.h"

#include <torch/torch.h>

#include "client/local/init_command.h"
#include "client/local/report_views.h"
#include "client/local/run_in_process.h"
#include "client/local/search_in_process.h"
#include "client/local/train_command.h"

namespace lensgrid {

LocalCommands LibTorchCommands() {
  LocalCommands local;
  local.run = &RunInThisProcess;
  local.search = &SearchInThisProcess;
  local.model_dir_views = [](const SearchContext& ctx, const SearchValues& values) {
    return ViewsFromModelDir(ctx, values);
  };
  local.init = &RunInitCommand;
  local.train = &RunTrainCommand;
  return local;
}

}  // namespace lensgrid
