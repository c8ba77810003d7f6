// `lensgrid init`: writes a randomly initialised GPT-2-family checkpoint in
// Hugging Face layout (config.json + model.safetensors), for trying lensgrid
// without downloadable weights.
//
//   lensgrid init --out DIR [--preset gpt2|gpt2-medium|...] [--layers N] [--heads N]
//                 [--d-model N] [--vocab N] [--n-ctx N] [--seed S] [--f16]
#ifndef LENSGRID_CLIENT_LOCAL_INIT_COMMAND_H_
#define LENSGRID_CLIENT_LOCAL_INIT_COMMAND_H_

#include <iosfwd>

namespace lensgrid {

int RunInitCommand(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_LOCAL_INIT_COMMAND_H_
