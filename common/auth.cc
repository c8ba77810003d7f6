#include "common/auth.h"

#include <arpa/inet.h>
#include <grpcpp/support/client_interceptor.h>
#include <openssl/crypto.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/echo.h"
#include "common/error_details.h"
#include "common/sha256.h"
#include "common/status_macros.h"

namespace lensgrid {
namespace {

constexpr size_t kMaxTokenFileBytes = size_t{4} << 20;
constexpr size_t kMaxNameBytes = 128;

// The whole file, or an error naming the flag and the path.
absl::StatusOr<std::string> ReadFlagFile(const std::string& flag, const std::string& path,
                                         size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " ", path, ": cannot read: ", std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": read error"));
  }
  std::string s = std::move(text).str();
  if (s.size() > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " ", path, ": over ", max_bytes, " bytes"));
  }
  return s;
}

// A PEM file that says what it holds (a path to the wrong kind of file fails
// here, naming the flag, rather than as "cannot listen" later).
absl::StatusOr<std::string> ReadPem(const std::string& flag, const std::string& path,
                                    absl::string_view what) {
  LG_ASSIGN_OR_RETURN(std::string pem, ReadFlagFile(flag, path, size_t{1} << 20));
  if (!absl::StrContains(pem, "-----BEGIN ")) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " ", path, ": not a PEM file (expected ", what, ")"));
  }
  return pem;
}

bool ValidName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.' &&
        c != '@') {
      return false;
    }
  }
  return true;
}

bool ValidSha256Hex(absl::string_view hex) {
  if (hex.size() != 64) return false;
  for (char c : hex) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

std::string RolesThatMay(const MethodRule& rule) {
  std::vector<std::string> roles;
  if (rule.submitter) roles.push_back("submitter");
  if (rule.worker) roles.push_back("worker");
  roles.push_back("admin");
  return absl::StrJoin(roles, " or ");
}

// Adds `authorization: Bearer TOKEN` to every call's initial metadata.
class BearerInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit BearerInterceptor(const std::string* value) : value_(value) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", *value_});
    }
    methods->Proceed();
  }

 private:
  const std::string* value_;
};

class BearerInterceptorFactory : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerInterceptorFactory(std::string token) : value_("Bearer " + std::move(token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    return new BearerInterceptor(&value_);
  }

 private:
  const std::string value_;  // lives as long as the channel (which owns this factory)
};

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kSubmitter:
      return "submitter";
    case Role::kWorker:
      return "worker";
    case Role::kAdmin:
      return "admin";
  }
  return "unknown";
}

std::optional<Role> ParseRole(absl::string_view name) {
  for (Role r : {Role::kSubmitter, Role::kWorker, Role::kAdmin}) {
    if (name == RoleName(r)) return r;
  }
  return std::nullopt;
}

absl::StatusOr<std::vector<TokenEntry>> ParseTokenTable(absl::string_view text,
                                                        absl::string_view source) {
  std::vector<TokenEntry> table;
  std::map<std::string, int> line_of_hash;
  std::map<std::string, std::pair<Role, int>> role_of_name;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    const auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(source, ":", line_no, ": ", why));
    };
    if (const size_t hash = line.find('#'); hash != absl::string_view::npos) {
      line = line.substr(0, hash);
    }
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (fields.empty()) continue;
    if (fields.size() != 3) {
      return bad(absl::StrCat("expected NAME ROLE SHA256_HEX_OF_TOKEN, found ", fields.size(),
                              " field", fields.size() == 1 ? "" : "s"));
    }
    TokenEntry e;
    if (!ValidName(fields[0])) {
      return bad(absl::StrCat("name ", Echo(fields[0]),
                              " is not 1-128 characters of letters, digits, - _ . @"));
    }
    e.name = std::string(fields[0]);
    std::optional<Role> role = ParseRole(fields[1]);
    if (!role.has_value()) {
      return bad(absl::StrCat("role ", Echo(fields[1]), " is not submitter, worker or admin"));
    }
    e.role = *role;
    if (!ValidSha256Hex(fields[2])) {
      return bad(
          "the third field is not a SHA-256 in hex (64 hex digits; printf %s \"$TOKEN\" | "
          "sha256sum)");
    }
    e.sha256_hex = absl::AsciiStrToLower(fields[2]);
    if (auto [it, added] = line_of_hash.emplace(e.sha256_hex, line_no); !added) {
      return bad(absl::StrCat("the same token as line ", it->second));
    }
    if (auto [it, added] = role_of_name.emplace(e.name, std::make_pair(e.role, line_no));
        !added && it->second.first != e.role) {
      return bad(absl::StrCat("name ", e.name, " has role ", RoleName(it->second.first),
                              " on line ", it->second.second));
    }
    table.push_back(std::move(e));
  }
  return table;
}

absl::StatusOr<std::vector<TokenEntry>> ReadTokenFile(const std::string& path) {
  LG_ASSIGN_OR_RETURN(std::string text, ReadFlagFile("--auth-tokens", path, kMaxTokenFileBytes));
  return ParseTokenTable(text, path);
}

const std::vector<MethodRule>& MethodRules() {
  // admin may call everything; the columns say who else may.
  static const auto* rules = new std::vector<MethodRule>{
      // lensgrid.v1.Coordinator (client-facing): a submitter's own jobs.
      {"SubmitJob", true, false},
      {"WatchJob", true, false},
      {"GetJob", true, false},
      {"GetResult", true, false},
      {"CancelJob", true, false},
      {"ListJobs", true, false},
      {"DeleteJob", true, false},
      // The workers (no job data): a submitter finds the Worker APIs it may
      // call, and the report's attention views come from one of them.
      {"ListWorkers", true, false},
      // The worker-facing RPCs (lensgrid.v1.WorkQueue).
      {"Register", false, true},
      {"LeaseShard", false, true},
      {"Heartbeat", false, true},
      {"CompleteShard", false, true},
      {"FailShard", false, true},
      // lensgrid.v1.Worker: a worker's own API (interactive runs).
      {"GetModelInfo", true, false},
      {"Tokenize", true, false},
      {"Detokenize", true, false},
      {"RunWithCache", true, false},
      {"RunWithInterventions", true, false},
      {"RunShard", true, false},
      {"GetWeights", true, false},
      {"Generate", true, false},
      {"AttachSharedMemory", true, false},
  };
  return *rules;
}

const MethodRule* FindMethodRule(absl::string_view method) {
  for (const MethodRule& r : MethodRules()) {
    if (method == r.method) return &r;
  }
  return nullptr;
}

absl::StatusOr<std::unique_ptr<Authorizer>> Authorizer::Open(const std::string& token_file) {
  if (token_file.empty()) return std::make_unique<Authorizer>(std::nullopt);
  LG_ASSIGN_OR_RETURN(std::vector<TokenEntry> table, ReadTokenFile(token_file));
  return std::make_unique<Authorizer>(std::move(table), token_file);
}

Authorizer::Authorizer(std::optional<std::vector<TokenEntry>> table, std::string path)
    : enabled_(table.has_value()), path_(std::move(path)) {
  if (table.has_value()) table_ = std::move(*table);
}

absl::StatusOr<size_t> Authorizer::Reload() {
  if (!enabled_ || path_.empty()) {
    return absl::FailedPreconditionError("no --auth-tokens file to reload");
  }
  LG_ASSIGN_OR_RETURN(std::vector<TokenEntry> table, ReadTokenFile(path_));
  absl::MutexLock lock(&mu_);
  table_ = std::move(table);
  return table_.size();
}

absl::StatusOr<Caller> Authorizer::Authorize(const grpc::CallbackServerContext& ctx,
                                             absl::string_view method) const {
  std::vector<absl::string_view> values;
  const auto range = ctx.client_metadata().equal_range("authorization");
  for (auto it = range.first; it != range.second; ++it) {
    values.emplace_back(it->second.data(), it->second.size());
  }
  return AuthorizeHeaders(values, method);
}

absl::StatusOr<Caller> Authorizer::AuthorizeHeaders(
    const std::vector<absl::string_view>& authorization, absl::string_view method) const {
  const MethodRule* rule = FindMethodRule(method);
  if (rule == nullptr) {
    return absl::InternalError(absl::StrCat("no authorization rule for method ", method));
  }
  if (!enabled_) return Caller::Anonymous();
  // ErrorInfo reasons for programs (a client can ask for a token, or say
  // which role it lacks), beside the messages.
  const auto unauthenticated = [&method](absl::string_view reason, absl::string_view message) {
    return WithErrorInfo(absl::UnauthenticatedError(message), std::string(reason),
                         {{"method", std::string(method)}});
  };
  if (authorization.empty()) {
    return unauthenticated(
        "MISSING_TOKEN",
        absl::StrCat(method,
                     " needs a token: send `authorization: Bearer TOKEN` (lensgrid: --token or "
                     "LENSGRID_TOKEN)"));
  }
  if (authorization.size() > 1) {
    return unauthenticated("MALFORMED_AUTHORIZATION", "more than one authorization metadata entry");
  }
  absl::string_view value = authorization[0];
  constexpr absl::string_view kScheme = "bearer ";
  if (value.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
    return unauthenticated("MALFORMED_AUTHORIZATION",
                           "the authorization metadata is not `Bearer TOKEN`");
  }
  const std::string presented = Sha256Hex(absl::StripAsciiWhitespace(value.substr(kScheme.size())));
  std::optional<Caller> found;
  {
    absl::MutexLock lock(&mu_);
    // Every entry is compared, in constant time, whether or not one matched.
    for (const TokenEntry& e : table_) {
      if (CRYPTO_memcmp(e.sha256_hex.data(), presented.data(), presented.size()) == 0) {
        found = Caller{e.name, e.role};
      }
    }
  }
  if (!found.has_value()) return unauthenticated("UNKNOWN_TOKEN", "unknown token");
  const bool allowed = found->role == Role::kAdmin ||
                       (found->role == Role::kSubmitter && rule->submitter) ||
                       (found->role == Role::kWorker && rule->worker);
  if (!allowed) {
    return WithErrorInfo(absl::PermissionDeniedError(
                             absl::StrCat(method, " needs role ", RolesThatMay(*rule), "; token \"",
                                          found->name, "\" has role ", RoleName(found->role))),
                         "ROLE_NOT_ALLOWED",
                         {{"method", std::string(method)},
                          {"role", RoleName(found->role)},
                          {"allowed_roles", RolesThatMay(*rule)}});
  }
  return *found;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerSecurity& s) {
  if (!s.tls()) {
    if (!s.tls_key.empty()) {
      return absl::InvalidArgumentError("--tls-key is given without --tls-cert");
    }
    if (!s.tls_client_ca.empty()) {
      return absl::InvalidArgumentError(
          "--tls-client-ca (mTLS) needs --tls-cert and --tls-key (the server's own certificate)");
    }
    return grpc::InsecureServerCredentials();
  }
  if (s.tls_key.empty()) return absl::InvalidArgumentError("--tls-cert is given without --tls-key");
  LG_ASSIGN_OR_RETURN(std::string cert, ReadPem("--tls-cert", s.tls_cert, "a certificate"));
  LG_ASSIGN_OR_RETURN(std::string key, ReadPem("--tls-key", s.tls_key, "a private key"));
  grpc::SslServerCredentialsOptions options(
      s.tls_client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                              : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  if (!s.tls_client_ca.empty()) {
    LG_ASSIGN_OR_RETURN(options.pem_root_certs,
                        ReadPem("--tls-client-ca", s.tls_client_ca, "a CA certificate"));
  }
  options.pem_key_cert_pairs.push_back({std::move(key), std::move(cert)});
  return grpc::SslServerCredentials(options);
}

bool IsLoopbackListen(absl::string_view listen) {
  if (absl::StartsWith(listen, "unix:") || absl::StartsWith(listen, "unix-abstract:")) return true;
  std::string host;
  if (absl::StartsWith(listen, "[")) {
    const size_t close = listen.find(']');
    if (close == absl::string_view::npos) return false;
    host = std::string(listen.substr(1, close - 1));
  } else {
    const size_t colon = listen.rfind(':');
    host = std::string(colon == absl::string_view::npos ? listen : listen.substr(0, colon));
  }
  if (absl::EqualsIgnoreCase(host, "localhost")) return true;
  in_addr v4;
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6;
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

absl::StatusOr<std::string> CheckListenSecurity(absl::string_view listen, const ServerSecurity& s) {
  if (IsLoopbackListen(listen)) return std::string();
  std::vector<std::string> missing;
  if (!s.tls()) missing.push_back("TLS (--tls-cert, --tls-key)");
  if (s.auth_tokens.empty()) missing.push_back("tokens (--auth-tokens)");
  if (missing.empty()) return std::string();
  const std::string what = absl::StrCat(
      "listening on ", listen, ", which is not loopback, without ", absl::StrJoin(missing, " or "));
  if (!s.insecure) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": anyone who can reach it could use it; give ",
                     absl::StrJoin(missing, " and "), ", listen on 127.0.0.1, or pass --insecure"));
  }
  return absl::StrCat("warning: --insecure: ", what);
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(const std::string& address,
                                                           const ClientTransport& t,
                                                           const grpc::ChannelArguments& args) {
  const std::string& p = t.flag_prefix;
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (t.tls()) {
    grpc::SslCredentialsOptions options;
    if (!t.tls_ca.empty()) {
      LG_ASSIGN_OR_RETURN(options.pem_root_certs,
                          ReadPem(p + "tls-ca", t.tls_ca, "a CA certificate"));
    }
    if (t.tls_cert.empty() != t.tls_key.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(t.tls_cert.empty() ? p + "tls-key" : p + "tls-cert", " is given without ",
                       t.tls_cert.empty() ? p + "tls-cert" : p + "tls-key"));
    }
    if (!t.tls_cert.empty()) {
      LG_ASSIGN_OR_RETURN(options.pem_cert_chain,
                          ReadPem(p + "tls-cert", t.tls_cert, "a certificate"));
      LG_ASSIGN_OR_RETURN(options.pem_private_key,
                          ReadPem(p + "tls-key", t.tls_key, "a private key"));
    }
    creds = grpc::SslCredentials(options);
  } else {
    if (!t.tls_key.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(p, "tls-key is given without ", p, "tls-cert"));
    }
    creds = grpc::InsecureChannelCredentials();
  }
  if (t.token.empty()) return grpc::CreateCustomChannel(address, creds, args);
  for (char c : t.token) {
    if (c <= 0x20 || c >= 0x7f) {
      return absl::InvalidArgumentError(absl::StrCat(
          p, "token holds a character a header cannot carry (only printable ASCII, no spaces)"));
    }
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> factories;
  factories.push_back(std::make_unique<BearerInterceptorFactory>(t.token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(address, creds, args,
                                                                 std::move(factories));
}

}  // namespace lensgrid
