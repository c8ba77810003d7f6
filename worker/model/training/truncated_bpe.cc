#include "worker/model/training/truncated_bpe.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace lensgrid {
namespace {

namespace fs = std::filesystem;

absl::Status Read(const fs::path& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  std::ostringstream s;
  s << in.rdbuf();
  *out = s.str();
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteTruncatedGpt2Tokenizer(const std::string& gpt2_dir, int64_t merges,
                                         const std::string& out_dir) {
  if (merges < 0 || merges > 50000) {
    return absl::InvalidArgumentError(
        absl::StrCat("--merges ", merges, " is outside GPT-2's [0, 50000]"));
  }
  const fs::path dir(gpt2_dir);
  const bool openai = fs::exists(dir / "encoder.json");
  std::string vocab_text, merges_text;
  if (auto s = Read(dir / (openai ? "encoder.json" : "vocab.json"), &vocab_text); !s.ok()) {
    return s;
  }
  if (auto s = Read(dir / (openai ? "vocab.bpe" : "merges.txt"), &merges_text); !s.ok()) {
    return s;
  }
  nlohmann::json vocab = nlohmann::json::parse(vocab_text, nullptr, /*allow_exceptions=*/false);
  if (!vocab.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(gpt2_dir, ": vocabulary is not a JSON object"));
  }
  const int64_t kept = 256 + merges;
  std::vector<std::string> by_id(kept);
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) continue;
    const int64_t id = it.value().get<int64_t>();
    if (id >= 0 && id < kept) by_id[id] = it.key();
  }
  nlohmann::ordered_json out_vocab = nlohmann::ordered_json::object();
  for (int64_t id = 0; id < kept; ++id) {
    if (by_id[id].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(gpt2_dir, ": no token with id ", id, "; not GPT-2's vocabulary"));
    }
    out_vocab[by_id[id]] = id;
  }
  out_vocab["<|endoftext|>"] = kept;

  std::istringstream lines(merges_text);
  std::string line, out_merges = "#version: 0.2\n";
  int64_t n = 0;
  while (n < merges && std::getline(lines, line)) {
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    // Merge n must create id 256 + n, or the cut vocabulary would not match.
    const size_t space = line.find(' ');
    if (space == std::string::npos ||
        line.substr(0, space) + line.substr(space + 1) != by_id[256 + n]) {
      return absl::InvalidArgumentError(absl::StrCat(gpt2_dir, ": merge ", n, " (\"", line,
                                                     "\") does not create token ", 256 + n));
    }
    out_merges += line + "\n";
    ++n;
  }
  if (n < merges) {
    return absl::InvalidArgumentError(
        absl::StrCat(gpt2_dir, " has only ", n, " merges, ", merges, " asked"));
  }
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  std::ofstream vocab_out(fs::path(out_dir) / "vocab.json", std::ios::binary);
  vocab_out << out_vocab.dump() << "\n";
  std::ofstream merges_out(fs::path(out_dir) / "merges.txt", std::ios::binary);
  merges_out << out_merges;
  if (!vocab_out || !merges_out) {
    return absl::PermissionDeniedError(absl::StrCat("cannot write tokenizer files in ", out_dir));
  }
  return absl::OkStatus();
}

}  // namespace lensgrid
