// `lensgrid run` without --worker: loads the model dir here and runs it once (with a cache),
// as RunData, the values a run on a worker returns too (client/run_remote.h). LibTorch.
//
//   RunRunCommand(argc, argv, std::cout, std::cerr, RunInProcess(&RunInThisProcess));
#ifndef LENSGRID_CLIENT_LOCAL_RUN_IN_PROCESS_H_
#define LENSGRID_CLIENT_LOCAL_RUN_IN_PROCESS_H_

#include <iosfwd>

#include "absl/status/statusor.h"
#include "client/run_command.h"

namespace lensgrid {

// `out` takes the checkpoint's warnings (unused tensors).
absl::StatusOr<RunData> RunInThisProcess(const RunFlags& flags, std::ostream& out);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_LOCAL_RUN_IN_PROCESS_H_
