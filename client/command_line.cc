#include "client/command_line.h"

#include <limits.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>

#include "client/hub/pull_command.h"
#include "client/tokenize_command.h"

namespace lensgrid {
namespace {

constexpr char kUsage[] =
    "usage: lensgrid <command> [flags]\n"
    "\n"
    "commands:\n"
    "  pull      download a model from the Hugging Face Hub: gpt2 | ORG/NAME [--revision REV]\n"
    "  run       one forward pass with cache: --model DIR|NAME (--prompt TEXT | --tokens IDS)\n"
    "  attention one layer's attention patterns as HTML: --model DIR|NAME --prompt TEXT\n"
    "            --layer L --output view.html\n"
    "  search    a circuit search: --model DIR --dataset NAME --method M\n"
    "            (--in-process | --local N | --coordinator ADDR) [--output DIR]\n"
    "  jobs      a coordinator's jobs: --coordinator ADDR\n"
    "  workers   a coordinator's workers: --coordinator ADDR\n"
    "  cancel    cancel a job: JOB --coordinator ADDR\n"
    "  result    write a finished job's output: JOB --coordinator ADDR --output DIR\n"
    "  tokenize  GPT-2 token ids of text (or --decode ids): (--model DIR | --tokenizer DIR)\n"
    "  init      write a random GPT-2-family checkpoint: --out DIR\n"
    "  train     train a small model with real circuits: --out DIR --seed S\n"
    "\n"
    "`lensgrid <command> --help` shows a command's flags. run and attention (without --worker),\n"
    "search --in-process, init and train run in lensgrid-local (LibTorch), beside lensgrid.\n";

bool Has(const std::vector<std::string>& args, const std::string& flag) {
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == flag || args[i].rfind(flag + "=", 0) == 0) return true;
  }
  return false;
}

int Missing(const std::string& command, std::ostream& err) {
  err << "lensgrid " << command << ": runs in " << kLibTorchExecutable
      << " (the executable with LibTorch, beside lensgrid)\n";
  return 2;
}

}  // namespace

const char* CommandUsage() { return kUsage; }

std::vector<std::string> Args(int argc, char** argv) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  return args;
}

bool NeedsLibTorch(const std::vector<std::string>& args) {
  if (args.empty()) return false;
  const std::string& command = args[0];
  if (command == "init" || command == "train") return true;
  if (Has(args, "--help") || Has(args, "-h")) return false;  // the same flags here
  if (command == "run" || command == "attention") return !Has(args, "--worker");
  if (command == "search") return Has(args, "--in-process");
  return false;
}

std::string LibTorchExecutableBeside(const std::string& self) {
  const size_t slash = self.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : self.substr(0, slash);
  return dir + "/" + kLibTorchExecutable;
}

int ExecLibTorchExecutable(char** argv, std::ostream& err) {
  char self[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) {
    err << "lensgrid: cannot find this executable (/proc/self/exe: " << std::strerror(errno)
        << "), so not " << kLibTorchExecutable << " beside it either\n";
    return 127;
  }
  self[n] = '\0';
  const std::string path = LibTorchExecutableBeside(self);
  const std::string command = argv[1] != nullptr ? argv[1] : "";
  if (::access(path.c_str(), X_OK) != 0) {
    err << "lensgrid " << command << ": needs LibTorch, which runs in " << path << ": "
        << std::strerror(errno) << " (install " << kLibTorchExecutable << " beside lensgrid)\n";
    return 127;
  }
  argv[0] = const_cast<char*>(path.c_str());
  ::execv(path.c_str(), argv);
  err << "lensgrid " << command << ": cannot run " << path << ": " << std::strerror(errno) << "\n";
  return 127;
}

int RunCommandLine(int argc, char** argv, const LocalCommands& local) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    (argc < 2 ? std::cerr : std::cout) << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  if (command == "run") return RunRunCommand(argc - 1, argv + 1, std::cout, std::cerr, local.run);
  if (command == "attention") {
    return RunAttentionCommand(argc - 1, argv + 1, std::cout, std::cerr, local.attention);
  }
  if (command == "search") {
    return RunSearchCommand(argc - 1, argv + 1, std::cout, std::cerr, local.search);
  }
  if (command == "jobs" || command == "workers" || command == "cancel" || command == "result") {
    return RunJobsCommand(argc - 1, argv + 1, std::cout, std::cerr, local.model_dir_views);
  }
  if (command == "pull") return RunPullCommand(argc - 1, argv + 1, std::cout, std::cerr);
  if (command == "tokenize") return RunTokenizeCommand(argc - 1, argv + 1);
  if (command == "init") {
    if (!local.init) return Missing(command, std::cerr);
    return local.init(argc - 1, argv + 1, std::cout, std::cerr);
  }
  if (command == "train") {
    if (!local.train) return Missing(command, std::cerr);
    return local.train(argc - 1, argv + 1, std::cout, std::cerr);
  }
  std::cerr << "lensgrid: unknown command \"" << command << "\"\n\n" << kUsage;
  return 2;
}

}  // namespace lensgrid
