// Fuzz target: a model dir's tokenizer files. The input is
// vocab.json NUL merges.txt NUL text; each part goes through its parser, the
// pair through Tokenizer::FromContents, and the text through the resulting
// tokenizer. Properties: no crash; every id Encode returns is in the
// vocabulary; DecodeBytes(Encode(text)) == text.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "tests/fuzz/fuzz_check.h"
#include "worker/model/tokenizer/tokenizer.h"
#include "worker/model/tokenizer/vocab_files.h"

namespace {

// Ids may go up to kMaxVocabId (2^24) by design, and the tokenizer keeps a
// dense table by id: ~1 GB for one large id. Past this bound an input only
// measures the allocator, so it stops after the parsers.
constexpr int32_t kLargestIdToBuild = 1 << 16;

std::string_view NextPart(std::string_view* rest) {
  const size_t nul = rest->find('\0');
  std::string_view part = rest->substr(0, nul);
  rest->remove_prefix(nul == std::string_view::npos ? rest->size() : nul + 1);
  return part;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  const std::string_view vocab_json = NextPart(&rest);
  const std::string_view merges_txt = NextPart(&rest);
  const std::string_view text = rest;

  auto vocab = lensgrid::ParseVocabJson(vocab_json, "vocab.json");
  auto merges = lensgrid::ParseMerges(merges_txt, "merges.txt");
  if (!vocab.ok() || !merges.ok()) return 0;
  for (const auto& [spelling, id] : *vocab) {
    FUZZ_CHECK(id >= 0 && id <= lensgrid::kMaxVocabId, "ids in range");
    if (id > kLargestIdToBuild) return 0;
  }
  auto tokenizer = lensgrid::Tokenizer::FromContents(vocab_json, merges_txt);
  if (!tokenizer.ok()) return 0;
  const std::vector<int64_t> ids = (*tokenizer)->Encode(text);
  for (int64_t id : ids) {
    FUZZ_CHECK(id >= 0 && id < (*tokenizer)->vocab_size(), "ids in vocab");
  }
  auto bytes = (*tokenizer)->DecodeBytes(ids);
  FUZZ_CHECK(bytes.ok() && *bytes == text, "DecodeBytes(Encode(x)) == x");
  auto decoded = (*tokenizer)->Decode(ids);
  FUZZ_CHECK(decoded.ok(), "Decode of Encode's ids succeeds");
  auto pieces = (*tokenizer)->ToStrTokens(ids);
  FUZZ_CHECK(pieces.ok() && pieces->size() == ids.size(), "one piece per id");
  return 0;
}
