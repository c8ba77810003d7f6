// Parsers for the two BPE files, with errors that name the file and line.
//
//   vocab.json / encoder.json: one JSON object {"token spelling": id, ...}
//   merges.txt / vocab.bpe:    optional "#version: ..." line, then one merge
//   "left right" per
//                              line, highest priority first
#ifndef LENSGRID_WORKER_MODEL_TOKENIZER_VOCAB_FILES_H_
#define LENSGRID_WORKER_MODEL_TOKENIZER_VOCAB_FILES_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace lensgrid {

// Ids must be distinct integers in [0, kMaxVocabId].
inline constexpr int32_t kMaxVocabId = (1 << 24) - 1;

using Vocab = absl::flat_hash_map<std::string, int32_t>;

struct MergeLine {
  std::string left;
  std::string right;
  int line;  // 1-based, for error messages
};

absl::StatusOr<Vocab> ParseVocabJson(std::string_view contents, std::string_view file_name);
absl::StatusOr<std::vector<MergeLine>> ParseMerges(std::string_view contents,
                                                   std::string_view file_name);

// NOT_FOUND when `path` cannot be opened.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_TOKENIZER_VOCAB_FILES_H_
