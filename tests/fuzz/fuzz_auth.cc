// Fuzz target: the two inputs of common/auth.h that come from outside — a
// token file (disk, --auth-tokens) and a call's `authorization` metadata
// (network). The first byte picks which.
// Properties: no crash; an accepted token file holds only valid names, roles
// and 64 lowercase hex digits, no hash twice; a refused one says FILE:LINE;
// a header is either a known token's caller (OK or PERMISSION_DENIED by the
// role table) or UNAUTHENTICATED, in fixed words that never echo the header.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "common/auth.h"
#include "common/sha256.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

const lensgrid::Authorizer& Fixed() {
  static const auto* auth = new lensgrid::Authorizer(std::vector<lensgrid::TokenEntry>{
      {"alice", lensgrid::Role::kSubmitter, lensgrid::Sha256Hex("alice-token")},
      {"pod", lensgrid::Role::kWorker, lensgrid::Sha256Hex("pod-token")}});
  return *auth;
}

void TokenFile(absl::string_view text) {
  auto table = lensgrid::ParseTokenTable(text, "fuzz");
  if (!table.ok()) {
    FUZZ_CHECK(table.status().code() == absl::StatusCode::kInvalidArgument,
               "a bad token file is INVALID_ARGUMENT");
    FUZZ_CHECK(absl::StartsWith(table.status().message(), "fuzz:"), "errors name the file");
    return;
  }
  std::set<std::string> hashes;
  for (const lensgrid::TokenEntry& e : *table) {
    FUZZ_CHECK(!e.name.empty() && e.name.size() <= 128, "names are 1-128 bytes");
    FUZZ_CHECK(e.name.find_first_of(" \t\r\n#") == std::string::npos, "names have no separators");
    FUZZ_CHECK(e.sha256_hex.size() == 64, "hashes are 64 hex digits");
    for (char c : e.sha256_hex) {
      FUZZ_CHECK((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'), "hashes are lowercase hex");
    }
    FUZZ_CHECK(hashes.insert(e.sha256_hex).second, "no token twice");
  }
}

void Header(absl::string_view header) {
  for (const char* method : {"SubmitJob", "Register"}) {
    auto caller = Fixed().AuthorizeHeaders({header}, method);
    if (caller.ok()) {
      FUZZ_CHECK(caller->name == "alice" || caller->name == "pod", "only known tokens pass");
      continue;
    }
    // Fixed messages only: nothing of the header comes back.
    const absl::string_view message = caller.status().message();
    if (caller.status().code() == absl::StatusCode::kUnauthenticated) {
      FUZZ_CHECK(message == "unknown token" ||
                     message == "the authorization metadata is not `Bearer TOKEN`",
                 "UNAUTHENTICATED says why in fixed words");
    } else {
      FUZZ_CHECK(caller.status().code() == absl::StatusCode::kPermissionDenied,
                 "a refused header is UNAUTHENTICATED or PERMISSION_DENIED");
      FUZZ_CHECK(absl::StartsWith(message, std::string(method) + " needs role "),
                 "PERMISSION_DENIED names the roles needed");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const absl::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1) {
    Header(rest);
  } else {
    TokenFile(rest);
  }
  return 0;
}
