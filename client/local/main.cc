// `lensgrid-local`: every `lensgrid` command, the LibTorch ones included (run in this process,
// search --in-process, init, train). `lensgrid` hands those to it; it also runs the others.
#include "client/local/local_commands.h"
#include "common/mutex_mode.h"
#include "common/openblas_env.h"

int main(int argc, char** argv) {
  lensgrid::UseReleaseMutexes();
  lensgrid::EnsureOpenBlasCoreType(argv);
  return lensgrid::RunCommandLine(argc, argv, lensgrid::LibTorchCommands());
}
