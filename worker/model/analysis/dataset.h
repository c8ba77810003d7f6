// Prompts for circuit searches: built-in seeded generators and user JSONL.
// No LibTorch here: a dataset is token ids plus what the metrics read.
//
//   LG_ASSIGN_OR_RETURN(Dataset ds, MakeDataset({.name = "ioi", .n_prompts = 16, .seed = 0},
//                                               cfg, tokenizer.get()));
//
// Built-ins:
//   induction     BOS + N random tokens, then the same tokens again; the answer is
//                 the next repeated token (TransformerLens's induction setup); corrupted:
//                 another sequence of N random tokens, repeated the same way
//   ioi           Wang et al. (2022) BABA/ABBA templates, answer IO, wrong S; corrupted
//                 prompts use three unrelated names (ABC)
//   gender-bias   Vig et al. (2020) templates x professions, answer/wrong " he"/" she"
//                 by stereotype; corrupted = profession replaced by "person"
//   greater-than  "The {noun} lasted from the year 17YY to the year 17" (Hanna et al.
//                 2023); answers = years > YY, wrong = years <= YY; corrupted YY = 01
// User JSONL, one object a line: {"prompt": text | "tokens": [ids], "answer": text|id,
//   "wrong": text|id, "corrupted": text | "corrupted_tokens": [ids]}; "answers" / "wrongs"
//   (arrays) give answer sets, "loss_start" the first token the loss metric scores.
#ifndef LENSGRID_WORKER_MODEL_ANALYSIS_DATASET_H_
#define LENSGRID_WORKER_MODEL_ANALYSIS_DATASET_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/search_methods.h"
#include "worker/model/config.h"
#include "worker/model/tokenizer/tokenizer.h"

namespace lensgrid {

struct Prompt {
  std::vector<int64_t> tokens;            // the clean prompt, BOS included
  std::vector<int64_t> corrupted_tokens;  // same length, or empty
  std::vector<int64_t> answers;           // one id, or a set (greater-than)
  std::vector<int64_t> wrongs;
  int64_t loss_start = 1;  // the loss metric scores predictions of tokens[loss_start:]
  std::string text;        // for display; may be empty
  std::string origin;      // where it came from, for errors ("data.jsonl:3", "ioi #5")
};

struct Dataset {
  std::string name;
  std::vector<Prompt> prompts;
  // Batches pad to at least this many positions: a shard holding some of a
  // job's prompts pads like the whole job. Default: 0 (its longest prompt).
  int64_t pad_length = 0;
  bool has_corrupted() const;
  int64_t max_length() const;  // max(pad_length, the longest prompt)
};

struct DatasetSpec {
  std::string name;  // built-in name, or a path ending in .jsonl
  int64_t n_prompts = 16;
  uint64_t seed = 0;
  int64_t seq_len = 16;  // induction: random tokens per half
};

// The built-in names: BuiltinDatasetNames() in common/search_methods.h.

// REQUIRES: tokenizer != nullptr for every dataset except `induction`
// (and JSONL given only as ids).
absl::StatusOr<Dataset> MakeDataset(const DatasetSpec& spec, const HookedTransformerConfig& cfg,
                                    const Tokenizer* tokenizer);

// Parses JSONL text; `source` names the file in errors ("file.jsonl:3: ...").
absl::StatusOr<Dataset> ParseJsonlDataset(const std::string& text, const std::string& source,
                                          const HookedTransformerConfig& cfg,
                                          const Tokenizer* tokenizer);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_ANALYSIS_DATASET_H_
