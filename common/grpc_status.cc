#include "common/grpc_status.h"

#include <string>
#include <utility>

#include "common/error_details.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

namespace lensgrid {
namespace {

// Details larger than this are dropped (the message still says everything):
// gRPC clients refuse trailers over 8-16 KiB.
constexpr size_t kMaxDetailsBytes = 4096;

// The google.rpc.Status for `status`'s details; empty when it has none.
std::string EncodeDetails(const absl::Status& status) {
  ErrorDetails details = GetErrorDetails(status);
  if (details.empty()) return {};
  google::rpc::Status out;
  out.set_code(static_cast<int>(status.code()));
  out.set_message(std::string(status.message()));
  if (details.info.has_value()) {
    google::rpc::ErrorInfo info;
    info.set_reason(details.info->reason);
    info.set_domain(kErrorDomain);
    for (const auto& [k, v] : details.info->metadata) (*info.mutable_metadata())[k] = v;
    out.add_details()->PackFrom(info);
  }
  if (!details.field_violations.empty()) {
    google::rpc::BadRequest bad;
    for (const auto& f : details.field_violations) {
      auto* v = bad.add_field_violations();
      v->set_field(f.field);
      v->set_description(f.description);
    }
    out.add_details()->PackFrom(bad);
  }
  if (!details.quota_violations.empty()) {
    google::rpc::QuotaFailure quota;
    for (const auto& q : details.quota_violations) {
      auto* v = quota.add_violations();
      v->set_subject(q.subject);
      v->set_description(q.description);
    }
    out.add_details()->PackFrom(quota);
  }
  std::string bytes = out.SerializeAsString();
  return bytes.size() <= kMaxDetailsBytes ? bytes : std::string();
}

ErrorDetails DecodeDetails(const std::string& bytes) {
  ErrorDetails details;
  google::rpc::Status in;
  if (bytes.empty() || bytes.size() > kMaxDetailsBytes || !in.ParseFromString(bytes)) {
    return details;
  }
  for (const auto& any : in.details()) {
    if (google::rpc::ErrorInfo info; any.UnpackTo(&info)) {
      ErrorReason e{info.reason(), {info.metadata().begin(), info.metadata().end()}};
      details.info = std::move(e);
    } else if (google::rpc::BadRequest bad; any.UnpackTo(&bad)) {
      for (const auto& v : bad.field_violations()) {
        details.field_violations.push_back({v.field(), v.description()});
      }
    } else if (google::rpc::QuotaFailure quota; any.UnpackTo(&quota)) {
      for (const auto& v : quota.violations()) {
        details.quota_violations.push_back({v.subject(), v.description()});
      }
    }
  }
  return details;
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()),
                      EncodeDetails(status));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  absl::Status out(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  ErrorDetails details = DecodeDetails(status.error_details());
  return details.empty() ? out : WithErrorDetails(std::move(out), details);
}

}  // namespace lensgrid
