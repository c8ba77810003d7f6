// GPT-2's byte-level BPE tokenizer, exact to the id.
//
// Reads either spelling of the same data: Hugging Face `vocab.json` +
// `merges.txt`, or OpenAI's `encoder.json` + `vocab.bpe`. Truncated files
// (fewer merges, a smaller vocab) work. Encoding = split on "<|endoftext|>"
// (when the vocab has it), GPT-2's regex pre-tokenizer (pretokenizer.h), then
// byte-pair merges per piece (bpe.h) behind a per-piece cache. Decoding joins
// the tokens' bytes and replaces ill-formed UTF-8 as Python's errors="replace"
// does. All methods are thread-safe.
//
//   LG_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok,
//   LoadTokenizerForModel(model_dir)); std::vector<int64_t> ids =
//   tok->Encode("The cat sat on the mat.");
//   // [464, 3797, 3332, 319, 262, 2603, 13]
//   LG_ASSIGN_OR_RETURN(std::string text, tok->Decode(ids));
//   LG_ASSIGN_OR_RETURN(int64_t mary, tok->ToSingleToken(" Mary"));   // 5335
#ifndef LENSGRID_WORKER_MODEL_TOKENIZER_TOKENIZER_H_
#define LENSGRID_WORKER_MODEL_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "worker/model/tokenizer/bpe.h"
#include "worker/model/tokenizer/pretokenizer.h"

namespace lensgrid {

inline constexpr char kEndOfTextToken[] = "<|endoftext|>";

class Tokenizer {
 public:
  // Errors: NOT_FOUND for a missing file; INVALID_ARGUMENT naming the file (and
  // line, for merges) for malformed contents.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromHuggingFaceFiles(
      const std::string& vocab_json_path, const std::string& merges_txt_path);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromOpenAIFiles(
      const std::string& encoder_json_path, const std::string& vocab_bpe_path);
  // `dir` holds vocab.json + merges.txt (preferred) or encoder.json +
  // vocab.bpe.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromDirectory(const std::string& dir);
  // From file contents; the names only label error messages.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromContents(
      std::string_view vocab_json, std::string_view merges_txt,
      std::string_view vocab_name = "vocab.json", std::string_view merges_name = "merges.txt");

  // Ids of `text` (any bytes; ill-formed UTF-8 is encoded byte-wise).
  // "<|endoftext|>" in the text becomes eot_token() when the vocab has it. No
  // BOS is added.
  std::vector<int64_t> Encode(std::string_view text) const;
  void EncodeTo(std::string_view text, std::vector<int64_t>* out) const;

  // Text of `ids`; ill-formed UTF-8 becomes U+FFFD. INVALID_ARGUMENT naming the
  // first id that is not in the vocabulary.
  absl::StatusOr<std::string> Decode(absl::Span<const int64_t> ids) const;
  // The raw bytes of `ids`, no replacement: DecodeBytes(Encode(x)) == x for any
  // bytes x.
  absl::StatusOr<std::string> DecodeBytes(absl::Span<const int64_t> ids) const;
  // Each id decoded on its own, as TransformerLens's to_str_tokens.
  absl::StatusOr<std::vector<std::string>> ToStrTokens(absl::Span<const int64_t> ids) const;
  // The id of `text` when it encodes to exactly one token; INVALID_ARGUMENT
  // otherwise.
  absl::StatusOr<int64_t> ToSingleToken(std::string_view text) const;
  // The vocabulary's own spelling of `id` for display, e.g. 995 -> "Ġworld".
  absl::StatusOr<std::string> TokenString(int64_t id) const;

  // One past the largest id in the vocabulary (50257 for GPT-2).
  int64_t vocab_size() const { return static_cast<int64_t>(tokens_.size()); }
  std::optional<int64_t> eot_token() const { return eot_token_; }
  // sha256 (hex) of the files it was made from: workers report it so that a
  // job's prompts are tokenized the same way wherever they are built.
  const std::string& identity() const { return identity_; }

  // The merge step alone, for tests and benchmarks.
  const BytePairMerger& merger() const { return *merger_; }

 private:
  struct Token {
    bool present = false;
    std::string spelling;  // as in vocab.json
    std::string bytes;     // what it decodes to
  };
  Tokenizer(std::vector<Token> tokens, std::optional<int64_t> eot_token,
            std::unique_ptr<BytePairMerger> merger, std::unique_ptr<PreTokenizer> pre_tokenizer);

  void EncodeOrdinary(std::string_view text, std::vector<int64_t>* out) const;
  void EncodePiece(std::string_view piece, std::vector<int64_t>* out) const;
  absl::Status CheckId(int64_t id) const;

  std::vector<Token> tokens_;  // indexed by id
  std::optional<int64_t> eot_token_;
  std::unique_ptr<BytePairMerger> merger_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::string identity_;

  mutable absl::Mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_ ABSL_GUARDED_BY(cache_mu_);
};

// The tokenizer in `dir` (for `lensgrid tokenize --tokenizer DIR`).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerFromDir(const std::string& dir);

// The model dir's own tokenizer files when it has them, otherwise GPT-2's
// default files from $LENSGRID_BPE_DIR or, unset, the ones scripts/bootstrap
// installs. NOT_FOUND when neither.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerForModel(const std::string& model_dir);

// Where the default GPT-2 files are looked for ($LENSGRID_BPE_DIR, else the
// built-in path).
std::string DefaultBpeDir();

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_TOKENIZER_TOKENIZER_H_
