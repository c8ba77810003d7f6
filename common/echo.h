// Quoting client input inside an error message without echoing it whole: a
// 1 MB job id or a 688 KB regex must not turn "unknown job" into "metadata
// size exceeds limit" on the client's side.
//
//   return absl::NotFoundError(absl::StrCat("unknown job ", Echo(job_id)));
//   // unknown job "aaaaaaaa…" (1048576 bytes)
#ifndef LENSGRID_COMMON_ECHO_H_
#define LENSGRID_COMMON_ECHO_H_

#include <cstddef>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace lensgrid {

// Longest piece of client input quoted in an error message. Default: 120.
inline constexpr size_t kMaxEchoBytes = 120;

// `text` in double quotes, cut to `max` bytes (never inside a UTF-8
// sequence) with an ellipsis and its full length when longer.
inline std::string Echo(absl::string_view text, size_t max = kMaxEchoBytes) {
  if (text.size() <= max) return absl::StrCat("\"", text, "\"");
  size_t cut = max;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) {
    --cut;  // a continuation byte: back up to the start of its character
  }
  return absl::StrCat("\"", text.substr(0, cut), "\xE2\x80\xA6\" (", text.size(), " bytes)");
}

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_ECHO_H_
