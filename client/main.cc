// `lensgrid`: the command line without LibTorch (client/command_line.h). A command line that
// needs LibTorch (NeedsLibTorch) is handed, with the same arguments, to lensgrid-local beside
// this executable.
#include <iostream>

#include "client/command_line.h"
#include "common/mutex_mode.h"
#include "common/openblas_env.h"

int main(int argc, char** argv) {
  lensgrid::UseReleaseMutexes();
  lensgrid::EnsureOpenBlasCoreType(argv);
  if (lensgrid::NeedsLibTorch(lensgrid::Args(argc, argv))) {
    return lensgrid::ExecLibTorchExecutable(argv, std::cerr);
  }
  return lensgrid::RunCommandLine(argc, argv, lensgrid::LocalCommands{});
}
