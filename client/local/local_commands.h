// The LibTorch commands lensgrid-local adds to the command line (client/command_line.h): a run
// and a search in this process, the patterns of an old job from its model dir, init and train.
//
//   return RunCommandLine(argc, argv, LibTorchCommands());
#ifndef LENSGRID_CLIENT_LOCAL_LOCAL_COMMANDS_H_
#define LENSGRID_CLIENT_LOCAL_LOCAL_COMMANDS_H_

#include "client/command_line.h"

namespace lensgrid {

LocalCommands LibTorchCommands();

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_LOCAL_LOCAL_COMMANDS_H_
