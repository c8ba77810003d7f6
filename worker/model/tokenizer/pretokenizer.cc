#include "worker/model/tokenizer/pretokenizer.h"

#include <string>
#include <vector>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/model/tokenizer/byte_level.h"

namespace lensgrid {
namespace {

constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\p{White_Space}\p{L}\p{N}]+)"
    R"(|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+)";

// Stands in for an ill-formed byte while matching: any "other" character would
// do.
constexpr std::string_view kStandIn = "\xEF\xBF\xBD";  // U+FFFD, category So

struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};

}  // namespace

struct PreTokenizer::Pattern {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Pattern() { pcre2_code_free(code); }
};

PreTokenizer::PreTokenizer(std::unique_ptr<Pattern> pattern) : pattern_(std::move(pattern)) {}
PreTokenizer::~PreTokenizer() = default;

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::Create(bool allow_jit) {
  auto pattern = std::make_unique<Pattern>();
  int error = 0;
  PCRE2_SIZE error_offset = 0;
  pattern->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kGpt2Pattern), PCRE2_ZERO_TERMINATED,
                                PCRE2_UTF | PCRE2_UCP, &error, &error_offset, nullptr);
  if (pattern->code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InternalError(absl::StrCat("PCRE2 rejected GPT-2's pattern at offset ",
                                            error_offset, ": ",
                                            reinterpret_cast<const char*>(message)));
  }
  // Without JIT (some architectures) the interpreter gives the same matches,
  // only slower.
  pattern->jit = allow_jit && pcre2_jit_compile(pattern->code, PCRE2_JIT_COMPLETE) == 0;
  return std::unique_ptr<PreTokenizer>(new PreTokenizer(std::move(pattern)));
}

void PreTokenizer::Split(std::string_view text,
                         absl::FunctionRef<void(std::string_view)> fn) const {
  if (IsValidUtf8(text)) return SplitValidUtf8(text, fn);

  // Match on a copy where each ill-formed byte is replaced by a stand-in
  // character, then map the piece boundaries back: original_offset[i] is the
  // byte of `text` that byte i came from.
  std::string valid;
  std::vector<size_t> original_offset;
  valid.reserve(text.size() + 16);
  original_offset.reserve(text.size() + 16);
  for (size_t pos = 0; pos < text.size();) {
    const int len = Utf8SequenceLength(text, pos);
    if (len > 0) {
      valid.append(text.substr(pos, len));
      for (int i = 0; i < len; ++i) original_offset.push_back(pos + i);
      pos += len;
    } else {
      valid.append(kStandIn);
      original_offset.insert(original_offset.end(), kStandIn.size(), pos);
      pos += 1;
    }
  }
  original_offset.push_back(text.size());
  SplitValidUtf8(valid, [&](std::string_view piece) {
    const size_t begin = original_offset[piece.data() - valid.data()];
    const size_t end = original_offset[piece.data() - valid.data() + piece.size()];
    fn(text.substr(begin, end - begin));
  });
}

void PreTokenizer::SplitValidUtf8(std::string_view text,
                                  absl::FunctionRef<void(std::string_view)> fn) const {
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> match(
      pcre2_match_data_create_from_pattern(pattern_->code, nullptr));
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    int rc = pattern_->jit ? pcre2_jit_match(pattern_->code, subject, text.size(), pos, 0,
                                             match.get(), nullptr)
                           : PCRE2_ERROR_JIT_STACKLIMIT;
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {  // or no JIT: use the interpreter
      rc = pcre2_match(pattern_->code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                       match.get(), nullptr);
    }
    // Every character starts a match, so a failure can only be a resource
    // limit (none seen on 64 MB runs); keep the rest as one piece rather than
    // dropping text.
    if (rc < 0) {
      fn(text.substr(pos));
      return;
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.get());
    const size_t begin = ovector[0], end = ovector[1];
    if (begin > pos) fn(text.substr(pos, begin - pos));  // unreachable for this pattern
    if (end == begin) {  // unreachable: no alternative matches the empty string
      fn(text.substr(begin));
      return;
    }
    fn(text.substr(begin, end - begin));
    pos = end;
  }
}

}  // namespace lensgrid
