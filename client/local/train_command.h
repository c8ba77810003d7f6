// `lensgrid train`: trains a small GPT-2-family model on data the project
// generates (worker/model/training/) and writes a complete model dir:
// config.json, model.safetensors (F16, Hugging Face layout, tied lm_head),
// vocab.json + merges.txt (GPT-2's first K merges), and MODEL_CARD.md with the
// data, the measured facts and the command that reproduces it.
//
//   lensgrid train --out DIR --seed S [--steps N] [--layers L] [--heads H] [--d-model D]
//                  [--attn-only] [--merges K] [--lr LR] [--warmup N] [--batch B] ...
#ifndef LENSGRID_CLIENT_LOCAL_TRAIN_COMMAND_H_
#define LENSGRID_CLIENT_LOCAL_TRAIN_COMMAND_H_

#include <iosfwd>

namespace lensgrid {

int RunTrainCommand(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_LOCAL_TRAIN_COMMAND_H_
