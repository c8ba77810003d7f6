// Parsing JSON that came from a client or a file without letting its shape
// hurt the process: nlohmann's parser is iterative, but dump(), comparisons
// and our own walkers recurse, so 400 KB of "[[[[..." overflows a thread's
// stack. ParseJsonBounded checks the nesting depth with a linear scan first.
//
//   LG_ASSIGN_OR_RETURN(nlohmann::json prompt,
//                       ParseJsonBounded(jsonl_line, "prompt"));
#ifndef LENSGRID_COMMON_JSON_LIMITS_H_
#define LENSGRID_COMMON_JSON_LIMITS_H_

#include <cstddef>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace lensgrid {

// Deeper than any document lensgrid reads or writes (a shard spec is 4 deep).
inline constexpr int kMaxJsonDepth = 64;

// The deepest nesting of arrays and objects in `text`, counted outside
// strings; stops counting (and returns max_depth + 1) once past max_depth.
int JsonNestingDepth(absl::string_view text, int max_depth = kMaxJsonDepth);

// `text` as JSON. INVALID_ARGUMENT naming `what` when it is not JSON (with
// the byte offset of the error) or nests deeper than max_depth.
absl::StatusOr<nlohmann::json> ParseJsonBounded(absl::string_view text, absl::string_view what,
                                                int max_depth = kMaxJsonDepth);

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_JSON_LIMITS_H_
