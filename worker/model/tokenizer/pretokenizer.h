// GPT-2's pre-tokenizer: splits text into the pieces that BPE then encodes one
// at a time.
//
// The pattern is openai/gpt-2's
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// run by PCRE2 (UTF, JIT). GPT-2 ran it with Python's `regex` module, whose \s
// is the Unicode White_Space property; PCRE2's UCP \s also matches U+180E (and
// JavaScript's adds U+FEFF), so \s is spelled \p{White_Space} here.
// Letter/number classes come from PCRE2's Unicode tables.
//
// Ill-formed UTF-8 is still split: each byte that is not part of a well-formed
// sequence counts as one "other" character (neither letter, number nor space),
// as a Python str decoded with errors="surrogateescape" would, so it joins a
// punctuation run and BPE encodes it byte-wise.
//
//   auto pre = PreTokenizer::Create();   // once; Split is thread-safe
//   (*pre)->Split("Hello world", [](std::string_view piece) { ... });  //
//   "Hello", " world"
#ifndef LENSGRID_WORKER_MODEL_TOKENIZER_PRETOKENIZER_H_
#define LENSGRID_WORKER_MODEL_TOKENIZER_PRETOKENIZER_H_

#include <memory>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"

namespace lensgrid {

class PreTokenizer {
 public:
  // Compiles the pattern, and JIT-compiles it where PCRE2 supports JIT and
  // `allow_jit` (the interpreter gives the same pieces, slower).
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> Create(bool allow_jit = true);
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Calls `fn` on each pre-token of `text` (any bytes), in order; the pieces
  // are non-empty views into `text` that concatenate back to it.
  void Split(std::string_view text, absl::FunctionRef<void(std::string_view)> fn) const;

 private:
  struct Pattern;
  explicit PreTokenizer(std::unique_ptr<Pattern> pattern);
  // REQUIRES: `text` is well-formed UTF-8.
  void SplitValidUtf8(std::string_view text, absl::FunctionRef<void(std::string_view)> fn) const;

  std::unique_ptr<Pattern> pattern_;
};

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_TOKENIZER_PRETOKENIZER_H_
