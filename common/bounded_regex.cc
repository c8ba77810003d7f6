#include "common/bounded_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/strings/str_cat.h"
#include "common/echo.h"

namespace lensgrid {
namespace {

std::string Pcre2Message(int code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(code, buffer, sizeof(buffer)) < 0) {
    return absl::StrCat("PCRE2 error ", code);
  }
  return reinterpret_cast<const char*>(buffer);
}

}  // namespace

struct BoundedRegex::Compiled {
  pcre2_code* code = nullptr;
  pcre2_match_context* match_context = nullptr;
  ~Compiled() {
    pcre2_match_context_free(match_context);
    pcre2_code_free(code);
  }
};

absl::StatusOr<BoundedRegex> BoundedRegex::Compile(absl::string_view pattern, RegexLimits limits,
                                                   absl::string_view what) {
  if (pattern.size() > limits.max_pattern_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", Echo(pattern), " is longer than the ",
                                                   limits.max_pattern_bytes, "-byte limit"));
  }
  std::unique_ptr<pcre2_compile_context, void (*)(pcre2_compile_context*)> context(
      pcre2_compile_context_create(nullptr), pcre2_compile_context_free);
  pcre2_set_parens_nest_limit(context.get(), limits.max_nesting);
  int error = 0;
  PCRE2_SIZE offset = 0;
  auto compiled = std::make_shared<Compiled>();
  compiled->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                 PCRE2_UTF, &error, &offset, context.get());
  if (compiled->code == nullptr) {
    const std::string why = Pcre2Message(error);
    if (error == PCRE2_ERROR_PARENTHESES_NEST_TOO_DEEP) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " ", Echo(pattern), " nests parentheses deeper than ", limits.max_nesting));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("bad ", what, " ", Echo(pattern), " at offset ", offset, ": ", why));
  }
  compiled->match_context = pcre2_match_context_create(nullptr);
  pcre2_set_match_limit(compiled->match_context, limits.match_limit);
  pcre2_set_depth_limit(compiled->match_context, limits.depth_limit);
  return BoundedRegex(std::string(pattern), std::string(what), std::move(compiled));
}

absl::StatusOr<bool> BoundedRegex::Search(absl::string_view subject) const {
  std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> data(
      pcre2_match_data_create_from_pattern(compiled_->code, nullptr), pcre2_match_data_free);
  const int rc = pcre2_match(compiled_->code, reinterpret_cast<PCRE2_SPTR>(subject.data()),
                             subject.size(), 0, 0, data.get(), compiled_->match_context);
  if (rc >= 0) return true;
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT) {
    return absl::ResourceExhaustedError(absl::StrCat(what_, " ", Echo(pattern_),
                                                     " needs too much backtracking to match ",
                                                     Echo(subject), " (", Pcre2Message(rc), ")"));
  }
  return absl::InvalidArgumentError(absl::StrCat(what_, " ", Echo(pattern_), " failed on ",
                                                 Echo(subject), ": ", Pcre2Message(rc)));
}

}  // namespace lensgrid
