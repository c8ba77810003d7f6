// The `lensgrid` command line, shared by its two executables:
//
//   lensgrid        (client/main.cc): no LibTorch. Runs every command that needs no model in
//                   this process (jobs, workers, cancel, result, pull, tokenize, search
//                   --coordinator/--local, run --worker); hands the rest to lensgrid-local.
//   lensgrid-local  (client/local/main.cc): links LibTorch and runs every command, the
//                   in-process ones (run, search --in-process, init, train) included.
//
//   if (NeedsLibTorch(Args(argc, argv))) return ExecLibTorchExecutable(argv, std::cerr);
//   return RunCommandLine(argc, argv, LocalCommands{});
#ifndef LENSGRID_CLIENT_COMMAND_LINE_H_
#define LENSGRID_CLIENT_COMMAND_LINE_H_

#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "client/attention_command.h"
#include "client/jobs_command.h"
#include "client/run_command.h"
#include "client/search_command.h"

namespace lensgrid {

// The file name of the LibTorch executable, found beside `lensgrid`.
inline constexpr char kLibTorchExecutable[] = "lensgrid-local";

// The top-level usage: every command, whichever executable runs it.
const char* CommandUsage();

// argv[1..] (the command and its flags).
std::vector<std::string> Args(int argc, char** argv);

// Whether the command line (`args`: the command, then its flags) runs in LibTorch: init, train,
// run without --worker, search --in-process. A command's --help is shown by either executable.
bool NeedsLibTorch(const std::vector<std::string>& args);

// kLibTorchExecutable in the directory of `self` (a path to the running executable).
std::string LibTorchExecutableBeside(const std::string& self);

// Replaces this process with kLibTorchExecutable beside /proc/self/exe, with the same
// arguments. Returns (127) only when that fails, after saying why on `err`, naming the file.
int ExecLibTorchExecutable(char** argv, std::ostream& err);

// What lensgrid-local adds to the command line: the in-process runs and the LibTorch commands.
struct LocalCommands {
  RunInProcess run;
  SearchInProcess search;
  ModelDirViews model_dir_views;
  OpenWorkerInProcess attention;
  std::function<int(int argc, char**argv, std::ostream&out, std::ostream&err)> init, train;
};

// Runs the command line; a command `local` lacks is an error naming lensgrid-local.
int RunCommandLine(int argc, char** argv, const LocalCommands& local);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_COMMAND_LINE_H_
