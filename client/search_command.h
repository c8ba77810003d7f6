// `lensgrid search`: a circuit search over a dataset.
//
//   lensgrid search --model DIR|NAME --dataset NAME|FILE.jsonl --method METHOD
//                   [--ablation zero|mean|resample] [--metric logit-diff|prob|prob-diff|loss|kl]
//                   [--n-prompts N] [--seed S] [--seq-len N] [--normalize] [--naive]
//                   --in-process [--output DIR]
//   lensgrid search --model ID --coordinator ADDR [--weights-sha256 HEX] ...
//   lensgrid search --model DIR|NAME --local N ...
//
// --in-process loads the model here. --coordinator names the model by the id its workers serve
// and reads no model file: the job carries the dataset's name and seed (or the JSONL file's
// bytes), a worker builds it, and the job's status says the model's shape and weights. --local
// starts a coordinator and N workers on the model dir and submits the same way.
//
// Writes DIR/result.json (method, metric, ablation, model identity, baseline
// metric, each result grid as nested lists with its axis names, components
// ranked by |delta|) and DIR/result.safetensors (the grids, per-prompt values,
// baselines), and prints the top 10 components.
#ifndef LENSGRID_CLIENT_SEARCH_COMMAND_H_
#define LENSGRID_CLIENT_SEARCH_COMMAND_H_

#include <iosfwd>

namespace lensgrid {

int RunSearchCommand(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_SEARCH_COMMAND_H_
