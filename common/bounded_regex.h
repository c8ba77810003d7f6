// Regular expressions from clients, with bounds: a names filter such as
// "blocks\.[0-3]\.attn\.hook_(q|k)$" is fine, "(.*.*)*x" or 40 KB of nested
// groups must be an error, never a wedged thread or an overflowed stack.
// PCRE2 (Perl syntax, a superset of what TransformerLens users write) with a
// pattern length limit, a parenthesis nesting limit, and match and depth
// limits, so every Search() does bounded work.
//
//   LG_ASSIGN_OR_RETURN(BoundedRegex re, BoundedRegex::Compile(pattern));
//   LG_ASSIGN_OR_RETURN(bool hit, re.Search("blocks.0.attn.hook_pattern"));
#ifndef LENSGRID_COMMON_BOUNDED_REGEX_H_
#define LENSGRID_COMMON_BOUNDED_REGEX_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace lensgrid {

struct RegexLimits {
  size_t max_pattern_bytes = 1024;  // Default: 1 KiB
  uint32_t max_nesting = 32;        // parentheses. Default: 32
  uint32_t match_limit = 200000;    // backtracking steps per Search. Default: 200k
  uint32_t depth_limit = 1000;      // backtracking depth per Search. Default: 1000
};

class BoundedRegex {
 public:
  // INVALID_ARGUMENT for a pattern that does not compile (with PCRE2's message
  // and offset), is longer than max_pattern_bytes or nests deeper than
  // max_nesting.
  // `what` names the pattern in errors ("names regex": "bad names regex ...").
  static absl::StatusOr<BoundedRegex> Compile(absl::string_view pattern, RegexLimits limits = {},
                                              absl::string_view what = "regex");
  // Whether the pattern matches anywhere in `subject` (like std::regex_search).
  // RESOURCE_EXHAUSTED when the match needs more work than the limits allow.
  absl::StatusOr<bool> Search(absl::string_view subject) const;
  const std::string& pattern() const { return pattern_; }

 private:
  struct Compiled;
  BoundedRegex(std::string pattern, std::string what, std::shared_ptr<const Compiled> compiled)
      : pattern_(std::move(pattern)), what_(std::move(what)), compiled_(std::move(compiled)) {}
  std::string pattern_;
  std::string what_;
  std::shared_ptr<const Compiled> compiled_;
};

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_BOUNDED_REGEX_H_
