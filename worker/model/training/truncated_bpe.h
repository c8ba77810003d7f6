// GPT-2's byte-level BPE cut to its first K merges, as a model dir's own
// tokenizer files. In GPT-2's files merge i creates id 256 + i, so the cut
// keeps ids [0, 256 + K) and <|endoftext|> moves to id 256 + K: the model's
// d_vocab is 256 + K + 1. No LibTorch here.
//
//   LG_RETURN_IF_ERROR(WriteTruncatedGpt2Tokenizer(DefaultBpeDir(), 6000, "models/x"));
#ifndef LENSGRID_WORKER_MODEL_TRAINING_TRUNCATED_BPE_H_
#define LENSGRID_WORKER_MODEL_TRAINING_TRUNCATED_BPE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace lensgrid {

inline int64_t TruncatedGpt2VocabSize(int64_t merges) { return 256 + merges + 1; }

// Reads `gpt2_dir`'s encoder.json + vocab.bpe (or vocab.json + merges.txt) and
// writes out_dir/vocab.json and out_dir/merges.txt. INVALID_ARGUMENT when K is
// outside [0, 50000] or the files are not GPT-2's layout.
absl::Status WriteTruncatedGpt2Tokenizer(const std::string& gpt2_dir, int64_t merges,
                                         const std::string& out_dir);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_TRAINING_TRUNCATED_BPE_H_
