#include "common/json_limits.h"

#include "absl/strings/str_cat.h"

namespace lensgrid {

int JsonNestingDepth(absl::string_view text, int max_depth) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '[':
      case '{':
        if (++depth > deepest) deepest = depth;
        if (deepest > max_depth) return max_depth + 1;
        break;
      case ']':
      case '}':
        if (depth > 0) --depth;
        break;
      default:
        break;
    }
  }
  return deepest;
}

absl::StatusOr<nlohmann::json> ParseJsonBounded(absl::string_view text, absl::string_view what,
                                                int max_depth) {
  if (JsonNestingDepth(text, max_depth) > max_depth) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": JSON nests deeper than ", max_depth, " levels"));
  }
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": not valid JSON at byte ", e.byte, ": ",
                                                   absl::string_view(e.what()).substr(0, 200)));
  } catch (const nlohmann::json::exception& e) {  // out_of_range: "1e999"
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": not valid JSON: ", absl::string_view(e.what()).substr(0, 200)));
  }
}

}  // namespace lensgrid
