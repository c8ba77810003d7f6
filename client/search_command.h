// `lensgrid search`: a circuit search over a dataset.
//
//   lensgrid search --model DIR --dataset NAME|FILE.jsonl --method METHOD
//                   [--ablation zero|mean|resample] [--metric logit-diff|prob|prob-diff|loss|kl]
//                   [--n-prompts N] [--seed S] [--seq-len N] [--normalize] [--naive]
//                   --in-process [--output DIR]
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
