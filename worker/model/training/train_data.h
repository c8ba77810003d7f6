// Seeded generators of the training data for the embedded default model.
// No LibTorch here: a row is token ids, n_ctx-free, always `seq_len` long.
//
//   LG_ASSIGN_OR_RETURN(auto tok, LoadTokenizerFromDir(dir));
//   TrainDataOptions opts;            // seq_len, mixture, ...
//   LG_ASSIGN_OR_RETURN(TrainData data, TrainData::Create(opts, d_vocab, tok.get()));
//   std::vector<int64_t> rows = data.Batch(/*batch=*/16, /*index=*/step);  // [16 * seq_len]
//
// Three kinds of rows, each starting with <|endoftext|> (= BOS):
//   repeats  filler from a noisy second-order chain over a small alphabet
//            (x[t+1] = PERM[x[t-1]] with probability 1 - chain_noise), which a
//            previous-token head predicts; into it, spans of uniform random tokens
//            (lengths in [min_span, max_span]) each copied 1..max_copies more times,
//            each copy after a gap of [0, max_gap] filler tokens, at varying
//            offsets: only an induction head
//            predicts a copy, and no position shortcut does.
//   chain    the filler alone.
//   triggers the filler, with a few random "trigger" tokens that are each
//            followed by their own random token every time they occur (several
//            times a row, as Bietti et al. 2023): an induction head predicts
//            every occurrence after the first.
//   ioi      templated sentences, each "<|endoftext|>When Mary and John went to the
//            store, John gave a drink to Mary.", packed; BABA and ABBA orders.
// Templates and names are split: the held-out ones never appear in training
// rows, and IoiPrompts(held_out=true) is built from them only.
// Batch(batch, index) is a pure function of (options, tokenizer, batch, index).
#ifndef LENSGRID_WORKER_MODEL_TRAINING_TRAIN_DATA_H_
#define LENSGRID_WORKER_MODEL_TRAINING_TRAIN_DATA_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/analysis/dataset.h"
#include "worker/model/tokenizer/tokenizer.h"

namespace lensgrid {

struct TrainDataOptions {
  uint64_t seed = 0;
  int64_t seq_len = 128;          // tokens per row, BOS included
  double repeats_fraction = 0.6;  // of rows; the rest after chain and ioi
  double chain_fraction = 0.1;
  double ioi_fraction = 0.3;  // 0 (or no tokenizer): no ioi rows
  double triggers_fraction = 0.0;
  int64_t max_triggers = 4;      // trigger tokens per row: 1..max_triggers
  double trigger_rate = 0.12;    // probability a position starts a trigger pair
  int64_t chain_alphabet = 128;  // filler tokens (a fixed random subset of the vocab)
  double chain_noise = 0.1;      // probability a filler token is drawn at random
  int64_t min_span = 4, max_span = 24, max_gap = 32;
  int64_t max_copies = 1;  // each span is copied 1..max_copies more times
  // Curriculum: in the first `half_repeat_batches` batches, repeats rows are
  // BOS + x + x with |x| = (seq_len - 1) / 2 instead. At that one offset a head
  // learns to copy (OV) through a positional shortcut within a few hundred
  // steps; the varying offsets that follow make it find the copy by content.
  int64_t half_repeat_batches = 0;
};

// A sentence with the answer cut off, for evaluation.
struct IoiExample {
  std::string text;   // "When Mary and John went to the store, John gave a drink to"
  std::string io, s;  // " Mary", " John"
};

class TrainData {
 public:
  // `d_vocab` counts the <|endoftext|> token, which is the last id. With a
  // tokenizer and ioi_fraction > 0, the IOI word lists are filtered to the
  // words that are one token (FAILED_PRECONDITION if too few remain).
  static absl::StatusOr<TrainData> Create(const TrainDataOptions& options, int64_t d_vocab,
                                          const Tokenizer* tokenizer);

  // Rows [index * batch, (index + 1) * batch) of the infinite stream, flattened
  // row-major: batch * seq_len ids.
  std::vector<int64_t> Batch(int64_t batch, int64_t index) const;
  // A held-out stream (another seed; held-out IOI templates and names).
  std::vector<int64_t> HeldOutBatch(int64_t batch, int64_t index) const;

  // One row of each kind, from `rng`.
  std::vector<int64_t> RepeatsRow(std::mt19937_64& rng) const;
  std::vector<int64_t> ChainRow(std::mt19937_64& rng) const;
  std::vector<int64_t> TriggersRow(std::mt19937_64& rng) const;
  std::vector<int64_t> HalfRepeatRow(std::mt19937_64& rng) const;  // BOS + x + x
  std::vector<int64_t> IoiRow(std::mt19937_64& rng, bool held_out) const;

  // IOI prompts (BOS + sentence without its final name; answer = IO, wrong =
  // S), as the `ioi` search dataset, from the training or held-out split.
  std::vector<Prompt> IoiPrompts(int64_t n, uint64_t seed, bool held_out) const;
  IoiExample IoiSentence(std::mt19937_64& rng, bool held_out) const;

  bool has_ioi() const { return tokenizer_ != nullptr && options_.ioi_fraction > 0; }
  int64_t eot() const { return d_vocab_ - 1; }
  const TrainDataOptions& options() const { return options_; }
  // Split sizes, for the model card.
  const std::vector<std::string>& train_templates() const { return templates_[0]; }
  const std::vector<std::string>& held_out_templates() const { return templates_[1]; }
  const std::vector<std::string>& train_names() const { return names_[0]; }
  const std::vector<std::string>& held_out_names() const { return names_[1]; }

 private:
  TrainData() = default;
  std::vector<int64_t> Rows(int64_t batch, int64_t index, uint64_t stream) const;

  TrainDataOptions options_;
  int64_t d_vocab_ = 0;
  const Tokenizer* tokenizer_ = nullptr;              // not owned; may be null
  std::vector<int64_t> alphabet_;                     // chain filler tokens
  std::vector<int64_t> perm_;                         // alphabet index -> alphabet index
  std::vector<std::string> templates_[2], names_[2];  // [0] train, [1] held out
  std::vector<std::string> places_, objects_;
};

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_TRAINING_TRAIN_DATA_H_
