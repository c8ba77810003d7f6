#include "common/auth.h"

#include <google/protobuf/descriptor.h>
#include <gtest/gtest.h>

#include "common/error_details.h"
#include "common/sha256.h"
#include "lensgrid/v1/coordinator.grpc.pb.h"
#include "lensgrid/v1/worker.grpc.pb.h"

namespace lensgrid {
namespace {

const std::string kAliceHash = Sha256Hex("alice-token");
const std::string kWorkerHash = Sha256Hex("worker-token");
const std::string kRootHash = Sha256Hex("root-token");

std::string Table() {
  return "# NAME ROLE SHA256\n"
         "\n"
         "alice submitter " +
         kAliceHash + "  # trailing comment\n\tpod-1\tworker\t" + kWorkerHash + "\nroot admin " +
         kRootHash + "\n";
}

TEST(TokenTableTest, ParsesNamesRolesAndHashes) {
  auto table = ParseTokenTable(Table(), "tokens");
  ASSERT_TRUE(table.ok()) << table.status();
  ASSERT_EQ(table->size(), 3u);
  EXPECT_EQ((*table)[0].name, "alice");
  EXPECT_EQ((*table)[0].role, Role::kSubmitter);
  EXPECT_EQ((*table)[0].sha256_hex, kAliceHash);
  EXPECT_EQ((*table)[1].name, "pod-1");
  EXPECT_EQ((*table)[1].role, Role::kWorker);
  EXPECT_EQ((*table)[2].role, Role::kAdmin);
}

TEST(TokenTableTest, UppercaseHexIsLowered) {
  std::string upper = kAliceHash;
  for (char& c : upper) c = static_cast<char>(std::toupper(c));
  auto table = ParseTokenTable("a admin " + upper, "f");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ((*table)[0].sha256_hex, kAliceHash);
}

TEST(TokenTableTest, EmptyAndCommentOnlyAreEmptyTables) {
  auto table = ParseTokenTable("# nobody yet\n\n   \n", "f");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_TRUE(table->empty());
}

struct BadLine {
  std::string line2;   // the file is "# first\n" or `line1`, then this
  std::string expect;  // in the message, after "tokens:2: "
  std::string line1 = "# first";
};

TEST(TokenTableTest, BadLinesNameFileLineAndWhat) {
  const std::vector<BadLine> cases = {
      {"alice submitter", "expected NAME ROLE SHA256_HEX_OF_TOKEN, found 2 fields"},
      {"alice submitter " + kAliceHash + " extra",
       "expected NAME ROLE SHA256_HEX_OF_TOKEN, found 4 fields"},
      {"alice owner " + kAliceHash, "role \"owner\" is not submitter, worker or admin"},
      {"alice submitter abc123", "the third field is not a SHA-256 in hex"},
      {"alice submitter " + kAliceHash.substr(1) + "z", "the third field is not a SHA-256 in hex"},
      {"al/ice submitter " + kAliceHash, "name \"al/ice\" is not"},
      {"bob admin " + kWorkerHash, "the same token as line 1", "pod worker " + kWorkerHash},
      {"root submitter " + kAliceHash, "name root has role worker on line 1",
       "root worker " + kWorkerHash},
  };
  for (const BadLine& c : cases) {
    auto table = ParseTokenTable(c.line1 + "\n" + c.line2 + "\n", "tokens");
    ASSERT_FALSE(table.ok()) << c.line2;
    EXPECT_EQ(table.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(table.status().message().find("tokens:2: " + c.expect), std::string::npos)
        << table.status();
  }
}

TEST(TokenTableTest, MissingFileNamesFlagAndPath) {
  auto table = ReadTokenFile("/nonexistent/tokens");
  ASSERT_FALSE(table.ok());
  EXPECT_NE(table.status().message().find("--auth-tokens /nonexistent/tokens"), std::string::npos)
      << table.status();
}

Authorizer WithTable() { return Authorizer(ParseTokenTable(Table(), "t").value()); }

TEST(AuthorizerTest, RolesPerMethod) {
  Authorizer auth = WithTable();
  auto alice = auth.AuthorizeHeaders({"Bearer alice-token"}, "SubmitJob");
  ASSERT_TRUE(alice.ok()) << alice.status();
  EXPECT_EQ(alice->name, "alice");
  EXPECT_EQ(alice->role, Role::kSubmitter);
  EXPECT_TRUE(auth.AuthorizeHeaders({"bearer worker-token"}, "Register").ok());
  EXPECT_TRUE(auth.AuthorizeHeaders({"Bearer root-token"}, "Register").ok());
  EXPECT_TRUE(auth.AuthorizeHeaders({"Bearer root-token"}, "ListWorkers").ok());
  EXPECT_TRUE(auth.AuthorizeHeaders({"Bearer alice-token"}, "RunWithCache").ok());

  auto denied = auth.AuthorizeHeaders({"Bearer alice-token"}, "Register");
  EXPECT_EQ(denied.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(denied.status().message().find("needs role worker or admin"), std::string::npos)
      << denied.status();
  EXPECT_EQ(denied.status().message().find("alice-token"), std::string::npos);
  ErrorDetails why = GetErrorDetails(denied.status());
  ASSERT_TRUE(why.info.has_value());
  EXPECT_EQ(why.info->reason, "ROLE_NOT_ALLOWED");
  EXPECT_EQ(why.info->metadata.at("role"), "submitter");
  EXPECT_EQ(why.info->metadata.at("allowed_roles"), "worker or admin");
  EXPECT_EQ(auth.AuthorizeHeaders({"Bearer worker-token"}, "SubmitJob").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(auth.AuthorizeHeaders({"Bearer worker-token"}, "RunWithCache").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(auth.AuthorizeHeaders({"Bearer alice-token"}, "ListWorkers").ok());
  EXPECT_EQ(auth.AuthorizeHeaders({"Bearer worker-token"}, "ListWorkers").status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST(AuthorizerTest, MissingUnknownOrMalformedTokensAreUnauthenticated) {
  Authorizer auth = WithTable();
  for (const std::vector<absl::string_view>& headers :
       std::vector<std::vector<absl::string_view>>{{},
                                                   {"Bearer nope"},
                                                   {"alice-token"},
                                                   {"Basic alice-token"},
                                                   {"Bearer "},
                                                   {"Bearer alice-token", "Bearer root-token"}}) {
    auto caller = auth.AuthorizeHeaders(headers, "GetJob");
    EXPECT_EQ(caller.status().code(), absl::StatusCode::kUnauthenticated)
        << (headers.empty() ? "(none)" : headers[0]);
    EXPECT_EQ(caller.status().message().find("nope"), std::string::npos);
    ErrorDetails why = GetErrorDetails(caller.status());
    ASSERT_TRUE(why.info.has_value());
    EXPECT_EQ(why.info->reason, headers.empty()               ? "MISSING_TOKEN"
                                : headers[0] == "Bearer nope" ? "UNKNOWN_TOKEN"
                                                              : "MALFORMED_AUTHORIZATION")
        << (headers.empty() ? "(none)" : headers[0]);
    EXPECT_EQ(why.info->metadata.at("method"), "GetJob");
  }
}

TEST(AuthorizerTest, WithoutATableEveryoneIsAnonymousAdmin) {
  Authorizer auth(std::nullopt);
  EXPECT_FALSE(auth.enabled());
  auto caller = auth.AuthorizeHeaders({}, "Register");
  ASSERT_TRUE(caller.ok());
  EXPECT_EQ(caller->name, "anonymous");
  EXPECT_TRUE(caller->admin());
}

TEST(AuthorizerTest, AMethodWithoutARuleIsInternal) {
  Authorizer auth(std::nullopt);
  EXPECT_EQ(auth.AuthorizeHeaders({}, "Frobnicate").status().code(), absl::StatusCode::kInternal);
}

// Every method of every lensgrid.v1 service has a rule (a new RPC must say who may call it).
TEST(MethodRulesTest, EveryServiceMethodHasARule) {
  const google::protobuf::FileDescriptor* files[] = {
      v1::SubmitJobRequest::descriptor()->file(),  // coordinator.proto (its services)
      v1::TokenizeRequest::descriptor()->file()};
  int methods = 0;
  for (const auto* file : files) {
    for (int s = 0; s < file->service_count(); ++s) {
      const auto* service = file->service(s);
      for (int m = 0; m < service->method_count(); ++m) {
        ++methods;
        EXPECT_NE(FindMethodRule(service->method(m)->name()), nullptr)
            << service->full_name() << "/" << service->method(m)->name();
      }
    }
  }
  EXPECT_GT(methods, 15);
}

TEST(ListenTest, LoopbackAddresses) {
  for (const char* a : {"127.0.0.1:7070", "127.3.2.1:0", "localhost:7070", "[::1]:7070",
                        "LOCALHOST:1", "unix:/tmp/x.sock"}) {
    EXPECT_TRUE(IsLoopbackListen(a)) << a;
  }
  for (const char* a : {"0.0.0.0:7070", "[::]:7070", "10.0.0.1:7070", ":7070", "example.com:1",
                        "128.0.0.1:1", "[::2]:1"}) {
    EXPECT_FALSE(IsLoopbackListen(a)) << a;
  }
}

TEST(ListenTest, NonLoopbackNeedsTlsAndTokensOrInsecure) {
  ServerSecurity none;
  EXPECT_EQ(CheckListenSecurity("127.0.0.1:0", none).value(), "");
  auto refused = CheckListenSecurity("0.0.0.0:7070", none);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("--insecure"), std::string::npos);
  ServerSecurity tls_only{"c.pem", "k.pem", "", "", false};
  EXPECT_NE(CheckListenSecurity("0.0.0.0:7070", tls_only).status().message().find("--auth-tokens"),
            std::string::npos);
  ServerSecurity both{"c.pem", "k.pem", "", "tokens", false};
  EXPECT_EQ(CheckListenSecurity("0.0.0.0:7070", both).value(), "");
  ServerSecurity insecure;
  insecure.insecure = true;
  EXPECT_NE(CheckListenSecurity("0.0.0.0:7070", insecure).value().find("warning"),
            std::string::npos);
}

TEST(CredentialsTest, MissingFilesNameTheFlag) {
  ServerSecurity s{"/nonexistent/cert.pem", "/nonexistent/key.pem", "", "", false};
  auto creds = MakeServerCredentials(s);
  ASSERT_FALSE(creds.ok());
  EXPECT_NE(creds.status().message().find("--tls-cert /nonexistent/cert.pem"), std::string::npos)
      << creds.status();
  ServerSecurity no_key{"/nonexistent/cert.pem", "", "", "", false};
  EXPECT_NE(MakeServerCredentials(no_key).status().message().find("without --tls-key"),
            std::string::npos);

  ClientTransport t;
  t.flag_prefix = "--coordinator-";
  t.tls_ca = "/nonexistent/ca.pem";
  auto channel = OpenChannel("127.0.0.1:1", t, grpc::ChannelArguments());
  ASSERT_FALSE(channel.ok());
  EXPECT_NE(channel.status().message().find("--coordinator-tls-ca /nonexistent/ca.pem"),
            std::string::npos)
      << channel.status();
  ClientTransport bad_token;
  bad_token.token = "two words";
  EXPECT_FALSE(OpenChannel("127.0.0.1:1", bad_token, grpc::ChannelArguments()).ok());
}

}  // namespace
}  // namespace lensgrid
