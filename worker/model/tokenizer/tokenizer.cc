#include "worker/model/tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "worker/model/tokenizer/byte_level.h"
#include "worker/model/tokenizer/vocab_files.h"

namespace lensgrid {
namespace {

// Longer pieces are rare and would make the cache costly; they are merged each
// time.
constexpr size_t kMaxCachedPieceBytes = 64;
// Bounds memory in long-running workers; when full, the cache starts over.
constexpr size_t kMaxCacheEntries = 1 << 18;

// Debian's Abseil has its own string_view type
// (ABSL_OPTION_USE_STD_STRING_VIEW=0).
absl::string_view AsAbsl(std::string_view text) { return {text.data(), text.size()}; }

std::string Quoted(std::string_view text) {
  return nlohmann::json(std::string(text))
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

Tokenizer::Tokenizer(std::vector<Token> tokens, std::optional<int64_t> eot_token,
                     std::unique_ptr<BytePairMerger> merger,
                     std::unique_ptr<PreTokenizer> pre_tokenizer)
    : tokens_(std::move(tokens)),
      eot_token_(eot_token),
      merger_(std::move(merger)),
      pre_tokenizer_(std::move(pre_tokenizer)) {}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromContents(std::string_view vocab_json,
                                                                   std::string_view merges_txt,
                                                                   std::string_view vocab_name,
                                                                   std::string_view merges_name) {
  LG_ASSIGN_OR_RETURN(Vocab vocab, ParseVocabJson(vocab_json, vocab_name));
  LG_ASSIGN_OR_RETURN(std::vector<MergeLine> merge_lines, ParseMerges(merges_txt, merges_name));

  int32_t max_id = 0;
  for (const auto& [spelling, id] : vocab) max_id = std::max(max_id, id);
  std::vector<Token> tokens(static_cast<size_t>(max_id) + 1);
  for (const auto& [spelling, id] : vocab) {
    Token& token = tokens[id];
    token.present = true;
    token.spelling = spelling;
    // Spellings outside the byte alphabet are added tokens, decoded as written.
    token.bytes = ByteLevelDecode(spelling).value_or(spelling);
  }

  std::array<int32_t, 256> byte_ids;
  for (int b = 0; b < 256; ++b) {
    const std::string spelling = ByteLevelEncode(std::string(1, static_cast<char>(b)));
    auto it = vocab.find(spelling);
    if (it == vocab.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          AsAbsl(vocab_name), ": no token for byte 0x", absl::Hex(b, absl::kZeroPad2), " (spelled ",
          Quoted(spelling), "); a byte-level BPE vocabulary needs all 256 bytes"));
    }
    byte_ids[b] = it->second;
  }

  absl::flat_hash_map<uint64_t, MergeRule> merges;
  merges.reserve(merge_lines.size());
  for (size_t rank = 0; rank < merge_lines.size(); ++rank) {
    const MergeLine& line = merge_lines[rank];
    const std::string merged = line.left + line.right;
    for (const std::string* part : {&line.left, &line.right, &merged}) {
      if (!vocab.contains(*part)) {
        return absl::InvalidArgumentError(absl::StrCat(AsAbsl(merges_name), ":", line.line,
                                                       ": token ", Quoted(*part), " is not in ",
                                                       AsAbsl(vocab_name)));
      }
    }
    // A repeated pair keeps its last rank, as dict(zip(merges, ranks)) in
    // encoder.py does.
    merges.insert_or_assign(PairKey(vocab[line.left], vocab[line.right]),
                            MergeRule{static_cast<int32_t>(rank), vocab[merged]});
  }

  std::optional<int64_t> eot;
  if (auto it = vocab.find(kEndOfTextToken); it != vocab.end()) eot = it->second;
  LG_ASSIGN_OR_RETURN(std::unique_ptr<PreTokenizer> pre_tokenizer, PreTokenizer::Create());
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer(
      std::move(tokens), eot, std::make_unique<BytePairMerger>(byte_ids, std::move(merges)),
      std::move(pre_tokenizer)));
  // Equal files, equal identity: the vocab's length, then both files' bytes.
  std::string files = std::to_string(vocab_json.size()) + "\n";
  files.append(vocab_json).append(merges_txt);
  tokenizer->identity_ = Sha256Hex(files);
  return tokenizer;
}

std::vector<int64_t> Tokenizer::Encode(std::string_view text) const {
  std::vector<int64_t> ids;
  ids.reserve(text.size() / 4 + 4);
  EncodeTo(text, &ids);
  return ids;
}

void Tokenizer::EncodeTo(std::string_view text, std::vector<int64_t>* out) const {
  const std::string_view eot_text = kEndOfTextToken;
  while (eot_token_.has_value()) {
    const size_t hit = text.find(eot_text);
    if (hit == std::string_view::npos) break;
    EncodeOrdinary(text.substr(0, hit), out);
    out->push_back(*eot_token_);
    text.remove_prefix(hit + eot_text.size());
  }
  EncodeOrdinary(text, out);
}

void Tokenizer::EncodeOrdinary(std::string_view text, std::vector<int64_t>* out) const {
  pre_tokenizer_->Split(text, [&](std::string_view piece) { EncodePiece(piece, out); });
}

void Tokenizer::EncodePiece(std::string_view piece, std::vector<int64_t>* out) const {
  const bool cacheable = piece.size() > 1 && piece.size() <= kMaxCachedPieceBytes;
  if (cacheable) {
    absl::ReaderMutexLock lock(&cache_mu_);
    auto it = cache_.find(AsAbsl(piece));
    if (it != cache_.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  merger_->Encode(piece, &ids);
  out->insert(out->end(), ids.begin(), ids.end());
  if (cacheable) {
    absl::MutexLock lock(&cache_mu_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(std::string(piece), std::move(ids));
  }
}

absl::Status Tokenizer::CheckId(int64_t id) const {
  if (id < 0 || id >= vocab_size() || !tokens_[id].present) {
    return absl::InvalidArgumentError(
        absl::StrCat("token id ", id, " is not in the vocabulary (size ", vocab_size(), ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Tokenizer::DecodeBytes(absl::Span<const int64_t> ids) const {
  std::string bytes;
  for (int64_t id : ids) {
    LG_RETURN_IF_ERROR(CheckId(id));
    bytes += tokens_[id].bytes;
  }
  return bytes;
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int64_t> ids) const {
  LG_ASSIGN_OR_RETURN(std::string bytes, DecodeBytes(ids));
  return DecodeUtf8Lossy(bytes);
}

absl::StatusOr<std::vector<std::string>> Tokenizer::ToStrTokens(
    absl::Span<const int64_t> ids) const {
  std::vector<std::string> strs;
  strs.reserve(ids.size());
  for (int64_t id : ids) {
    LG_RETURN_IF_ERROR(CheckId(id));
    strs.push_back(DecodeUtf8Lossy(tokens_[id].bytes));
  }
  return strs;
}

absl::StatusOr<int64_t> Tokenizer::ToSingleToken(std::string_view text) const {
  const std::vector<int64_t> ids = Encode(text);
  if (ids.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(Quoted(text), " is ", ids.size(), " tokens [",
                                                   absl::StrJoin(ids, ", "),
                                                   "], not a single token"));
  }
  return ids[0];
}

absl::StatusOr<std::string> Tokenizer::TokenString(int64_t id) const {
  LG_RETURN_IF_ERROR(CheckId(id));
  return tokens_[id].spelling;
}

}  // namespace lensgrid
