// `lensgrid pull`: a GPT-2-family model from the Hugging Face Hub (or an
// HF_ENDPOINT mirror) into the huggingface_hub cache.
//
//   lensgrid pull gpt2|gpt2-medium|gpt2-large|gpt2-xl|ORG/NAME[@REV]
//                 [--revision REV] [--cache-dir DIR] [--if-missing] [--quiet]
//
// Progress and notes go to stderr; the snapshot dir (usable as --model DIR)
// is the one line on stdout. Environment: HF_ENDPOINT, HF_TOKEN, HF_HOME,
// HF_HUB_CACHE (hub/hf_hub.h).
#ifndef LENSGRID_CLIENT_HUB_PULL_COMMAND_H_
#define LENSGRID_CLIENT_HUB_PULL_COMMAND_H_

#include <iosfwd>

namespace lensgrid {

int RunPullCommand(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_HUB_PULL_COMMAND_H_
