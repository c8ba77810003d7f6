// Error details survive the wire: absl payloads -> google.rpc.Status in
// grpc::Status -> the same details back, and the standard messages parse
// them as any gRPC library's status helpers would.
#include "common/error_details.h"

#include <gtest/gtest.h>

#include <string>

#include "common/grpc_status.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

namespace lensgrid {
namespace {

TEST(ErrorDetailsTest, RoundTripsThroughGrpcStatus) {
  absl::Status s = absl::NotFoundError("unknown hook name \"blocks.0.hook_z\"");
  s = WithErrorInfo(std::move(s), "UNKNOWN_HOOK", {{"closest", "blocks.0.attn.hook_z"}});
  s = WithFieldViolation(std::move(s), "names_filter[0]", "not a hook of this model");
  s = WithQuotaViolation(std::move(s), "worker reply budget", "needs 9 GiB, 1 GiB left");

  grpc::Status wire = ToGrpcStatus(s);
  EXPECT_EQ(wire.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(wire.error_message(), "unknown hook name \"blocks.0.hook_z\"");

  // What another language's status helper sees in the trailer.
  google::rpc::Status standard;
  ASSERT_TRUE(standard.ParseFromString(wire.error_details()));
  EXPECT_EQ(standard.code(), 5);
  EXPECT_EQ(standard.message(), wire.error_message());
  ASSERT_EQ(standard.details_size(), 3);
  google::rpc::ErrorInfo info;
  ASSERT_TRUE(standard.details(0).UnpackTo(&info));
  EXPECT_EQ(standard.details(0).type_url(), "type.googleapis.com/google.rpc.ErrorInfo");
  EXPECT_EQ(info.reason(), "UNKNOWN_HOOK");
  EXPECT_EQ(info.domain(), "lensgrid.v1");
  EXPECT_EQ(info.metadata().at("closest"), "blocks.0.attn.hook_z");
  google::rpc::BadRequest bad;
  ASSERT_TRUE(standard.details(1).UnpackTo(&bad));
  EXPECT_EQ(bad.field_violations(0).field(), "names_filter[0]");

  absl::Status back = FromGrpcStatus(wire);
  EXPECT_EQ(back.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(back.message(), s.message());
  ErrorDetails d = GetErrorDetails(back);
  ASSERT_TRUE(d.info.has_value());
  EXPECT_EQ(d.info->reason, "UNKNOWN_HOOK");
  EXPECT_EQ(d.info->metadata.at("closest"), "blocks.0.attn.hook_z");
  ASSERT_EQ(d.field_violations.size(), 1u);
  EXPECT_EQ(d.field_violations[0].description, "not a hook of this model");
  ASSERT_EQ(d.quota_violations.size(), 1u);
  EXPECT_EQ(d.quota_violations[0].subject, "worker reply budget");
}

TEST(ErrorDetailsTest, NoDetailsSendsNoTrailer) {
  grpc::Status wire = ToGrpcStatus(absl::InvalidArgumentError("bad"));
  EXPECT_TRUE(wire.error_details().empty());
  EXPECT_TRUE(GetErrorDetails(FromGrpcStatus(wire)).empty());
  EXPECT_TRUE(GetErrorDetails(WithErrorInfo(absl::OkStatus(), "X")).empty());
}

TEST(ErrorDetailsTest, BoundedWhateverTheInput) {
  absl::Status s = absl::InvalidArgumentError("bad");
  const std::string huge(1 << 20, 'x');
  for (int i = 0; i < 1000; ++i) s = WithFieldViolation(std::move(s), huge, huge);
  s = WithErrorInfo(std::move(s), huge, {{huge, huge}});
  ErrorDetails d = GetErrorDetails(s);
  EXPECT_EQ(d.field_violations.size(), kMaxDetailItems);
  EXPECT_LE(d.field_violations[0].field.size(), kMaxDetailBytes + 3);
  EXPECT_LE(d.info->reason.size(), kMaxDetailBytes + 3);
  // Within a trailer any client reads (or dropped, never the call's failure).
  EXPECT_LE(ToGrpcStatus(s).error_details().size(), 4096u);
}

TEST(ErrorDetailsTest, GarbageFromThePeerIsIgnored) {
  grpc::Status wire(grpc::StatusCode::INTERNAL, "boom", std::string("\xff\x01garbage", 9));
  absl::Status back = FromGrpcStatus(wire);
  EXPECT_EQ(back.code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(GetErrorDetails(back).empty());
}

}  // namespace
}  // namespace lensgrid
