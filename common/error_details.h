// Machine-readable details on an error (AIP-193), carried by absl::Status
// payloads inside lensgrid and sent as the standard google.rpc shapes
// (ErrorInfo, BadRequest, QuotaFailure in the grpc-status-details-bin
// trailer) by common/grpc_status.h. The status message stays the clear text
// it always was: details are for programs (a notebook suggesting the closest
// hook name, a client backing off on a quota), never instead of the message.
//
//   absl::Status s = absl::NotFoundError("unknown hook name \"blocks.0.hook_z\"");
//   s = WithErrorInfo(std::move(s), "UNKNOWN_HOOK", {{"closest", "blocks.0.attn.hook_z"}});
//   s = WithFieldViolation(std::move(s), "names_filter[0]", "not a hook of this model");
//   GetErrorDetails(s).info->reason;  // "UNKNOWN_HOOK"
//
// No protobuf here (worker/model uses it without linking protos): payloads
// are small JSON documents under lensgrid's own type URLs. Every string is
// cut to kMaxDetailBytes, and a status keeps at most kMaxDetailItems field or
// quota violations and metadata entries, so details never make a trailer too
// large for a client to read.
#ifndef LENSGRID_COMMON_ERROR_DETAILS_H_
#define LENSGRID_COMMON_ERROR_DETAILS_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace lensgrid {

// ErrorInfo.domain of every lensgrid error.
inline constexpr char kErrorDomain[] = "lensgrid.v1";
inline constexpr size_t kMaxDetailBytes = 256;
inline constexpr size_t kMaxDetailItems = 16;

struct ErrorReason {
  std::string reason;  // UPPER_SNAKE_CASE, stable: programs switch on it
  std::map<std::string, std::string> metadata;
};
struct FieldViolation {
  std::string field;  // a path into the request: "spec.n_prompts", "names_filter[2]"
  std::string description;
};
struct QuotaViolation {
  std::string subject;  // the limit: "worker reply budget", "--max-shards"
  std::string description;
};
struct ErrorDetails {
  std::optional<ErrorReason> info;
  std::vector<FieldViolation> field_violations;
  std::vector<QuotaViolation> quota_violations;
  bool empty() const {
    return !info.has_value() && field_violations.empty() && quota_violations.empty();
  }
};

// Each returns `status` with the detail added (an OK status is returned as
// it is). A second ErrorInfo replaces the first.
absl::Status WithErrorInfo(absl::Status status, const std::string& reason,
                           const std::map<std::string, std::string>& metadata = {});
absl::Status WithFieldViolation(absl::Status status, const std::string& field,
                                const std::string& description);
absl::Status WithQuotaViolation(absl::Status status, const std::string& subject,
                                const std::string& description);
// `status` about a request field: the message prefixed with "FIELD: ", its
// details kept, and a BadRequest field violation naming FIELD added.
absl::Status InField(const absl::Status& status, const std::string& field);
// Everything attached to `status`; a payload that does not parse is skipped.
ErrorDetails GetErrorDetails(const absl::Status& status);
// Replaces every detail of `status` with `details` (FromGrpcStatus uses it).
absl::Status WithErrorDetails(absl::Status status, const ErrorDetails& details);

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_ERROR_DETAILS_H_
