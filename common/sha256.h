// SHA-256 of bytes or of a file, as lowercase hex (OpenSSL's libcrypto).
#ifndef LENSGRID_COMMON_SHA256_H_
#define LENSGRID_COMMON_SHA256_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace lensgrid {

std::string Sha256Hex(absl::string_view bytes);
absl::StatusOr<std::string> Sha256FileHex(const std::string& path);

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_SHA256_H_
