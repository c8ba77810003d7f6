// The `lensgrid` command line: one subcommand per verb.
#include <cstring>
#include <iostream>
#include <string>

#include "client/hub/pull_command.h"
#include "client/init_command.h"
#include "client/jobs_command.h"
#include "client/run_command.h"
#include "client/search_command.h"
#include "client/tokenize_command.h"
#include "client/train_command.h"
#include "common/openblas_env.h"

namespace {

constexpr char kUsage[] =
    "usage: lensgrid <command> [flags]\n"
    "\n"
    "commands:\n"
    "  pull      download a model from the Hugging Face Hub: gpt2 | ORG/NAME [--revision REV]\n"
    "  run       one forward pass with cache: --model DIR|NAME (--prompt TEXT | --tokens IDS)\n"
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
    "`lensgrid <command> --help` shows a command's flags.\n";

}  // namespace

int main(int argc, char** argv) {
  lensgrid::EnsureOpenBlasCoreType(argv);
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    (argc < 2 ? std::cerr : std::cout) << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  if (command == "run") return lensgrid::RunRunCommand(argc - 1, argv + 1, std::cout, std::cerr);
  if (command == "search") {
    return lensgrid::RunSearchCommand(argc - 1, argv + 1, std::cout, std::cerr);
  }
  if (command == "jobs" || command == "workers" || command == "cancel" || command == "result") {
    return lensgrid::RunJobsCommand(argc - 1, argv + 1, std::cout, std::cerr);
  }
  if (command == "pull") return lensgrid::RunPullCommand(argc - 1, argv + 1, std::cout, std::cerr);
  if (command == "tokenize") return lensgrid::RunTokenizeCommand(argc - 1, argv + 1);
  if (command == "init") return lensgrid::RunInitCommand(argc - 1, argv + 1, std::cout, std::cerr);
  if (command == "train")
    return lensgrid::RunTrainCommand(argc - 1, argv + 1, std::cout, std::cerr);
  std::cerr << "lensgrid: unknown command \"" << command << "\"\n\n" << kUsage;
  return 2;
}
