// Identity and transport for every lensgrid server and client: bearer tokens
// with roles, TLS (and mTLS) credentials, and the loopback-only safe default.
//
// Servers: one Authorizer per process, one check at the top of every handler.
//
//   LG_ASSIGN_OR_RETURN(auto auth, Authorizer::Open(flags.auth_tokens));  // "": anonymous
//   ...
//   absl::StatusOr<Caller> caller = auth->Authorize(*ctx, "SubmitJob");
//   if (!caller.ok()) return Done(ctx, caller.status());
//
// No `authorization` metadata, or a token not in the table: UNAUTHENTICATED.
// A known token whose role may not call the method: PERMISSION_DENIED naming
// the roles that may (never the token). Without a token file every caller is
// Caller::Anonymous(). Reload() re-reads the file (SIGHUP); a file that fails
// to parse keeps the old table.
//
// The token file (--auth-tokens FILE, LENSGRID_AUTH_TOKENS), one token a line:
//
//   # NAME  ROLE       SHA256_HEX_OF_TOKEN   (printf %s "$TOKEN" | sha256sum)
//   # alice: the token "example-token"
//   alice   submitter  4d1566a1d7df42a8517456d60ea06ed284e535cfe4c956aa6ee172dbcdf945f7
//
// ROLE is submitter, worker or admin. Presented tokens are hashed and
// compared with every entry in constant time.
//
// Clients: OpenChannel() makes a TLS channel when a CA or a certificate is
// given (plaintext otherwise) and sends `authorization: Bearer TOKEN` on every
// call when a token is given.
#ifndef LENSGRID_COMMON_AUTH_H_
#define LENSGRID_COMMON_AUTH_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/caller.h"

namespace lensgrid {

// "submitter", "worker", "admin".
const char* RoleName(Role role);
std::optional<Role> ParseRole(absl::string_view name);

struct TokenEntry {
  std::string name;
  Role role = Role::kSubmitter;
  std::string sha256_hex;  // 64 lowercase hex digits
};

// Parses a token file's text; `source` names it in errors ("FILE:LINE: what").
absl::StatusOr<std::vector<TokenEntry>> ParseTokenTable(absl::string_view text,
                                                        absl::string_view source);
// Reads and parses FILE (errors name --auth-tokens and the path).
absl::StatusOr<std::vector<TokenEntry>> ReadTokenFile(const std::string& path);

// Which roles may call a method (admin may call every method). Methods are
// named as in the protos ("SubmitJob", "Register", "RunWithCache"); the names
// of lensgrid.v1's services do not collide, so the name alone says which.
struct MethodRule {
  const char* method;
  bool submitter;
  bool worker;
};
// Every rule; tests check that every method of every lensgrid.v1 service has one.
const std::vector<MethodRule>& MethodRules();
// nullptr for a method with no rule (a bug: such a call gets INTERNAL).
const MethodRule* FindMethodRule(absl::string_view method);

class Authorizer {
 public:
  // `token_file` empty: no table, every caller is Caller::Anonymous().
  static absl::StatusOr<std::unique_ptr<Authorizer>> Open(const std::string& token_file);
  // A fixed table (tests, and what Open() wraps).
  explicit Authorizer(std::optional<std::vector<TokenEntry>> table, std::string path = "");

  // Whether callers must present a token (a table was given).
  bool enabled() const { return enabled_; }
  // Re-reads the token file; on error the old table stays and the error says why.
  // REQUIRES: enabled(). Returns the number of tokens now in the table.
  absl::StatusOr<size_t> Reload();

  // The caller of a call on `ctx`, if it may call `method`.
  absl::StatusOr<Caller> Authorize(const grpc::CallbackServerContext& ctx,
                                   absl::string_view method) const;
  // The same from the `authorization` metadata values the call carried.
  absl::StatusOr<Caller> AuthorizeHeaders(const std::vector<absl::string_view>& authorization,
                                          absl::string_view method) const;

 private:
  const bool enabled_;
  const std::string path_;
  mutable absl::Mutex mu_;
  std::vector<TokenEntry> table_ ABSL_GUARDED_BY(mu_);
};

// --tls-cert, --tls-key, --tls-client-ca, --auth-tokens, --insecure of a server.
struct ServerSecurity {
  std::string tls_cert;       // PEM certificate chain (TLS on when set)
  std::string tls_key;        // PEM private key of tls_cert
  std::string tls_client_ca;  // PEM CA: client certificates required and verified (mTLS)
  std::string auth_tokens;    // token file (Authorizer::Open)
  bool insecure = false;      // allow a non-loopback listen without TLS and tokens
  bool tls() const { return !tls_cert.empty(); }
};

// Insecure credentials, or SslServerCredentials from the files (errors name the
// flag and the path; a key without a certificate, or a client CA without
// either, is an error).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerSecurity& security);

// Whether HOST:PORT's host is loopback (127.0.0.0/8, ::1, localhost) or a unix socket.
bool IsLoopbackListen(absl::string_view listen);

// The safe default: a non-loopback `listen` needs TLS and tokens, or --insecure.
// FAILED_PRECONDITION saying why (the server exits 2); otherwise the warning
// to print at start ("" when there is none).
absl::StatusOr<std::string> CheckListenSecurity(absl::string_view listen,
                                                const ServerSecurity& security);

// A client's --tls-ca, --tls-cert, --tls-key and --token (a worker's link to
// its coordinator: --coordinator-tls-ca, ...; flag_prefix names them in errors).
struct ClientTransport {
  std::string tls_ca;    // PEM CA the server's certificate must chain to (TLS on when set)
  std::string tls_cert;  // PEM client certificate (mTLS; TLS on when set)
  std::string tls_key;   // PEM key of tls_cert
  std::string token;     // sent as `authorization: Bearer TOKEN`
  std::string flag_prefix = "--";
  bool tls() const { return !tls_ca.empty() || !tls_cert.empty(); }
};

// A channel to `address` with the transport's credentials and token (errors
// name the flag and the path of a file that cannot be read).
absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(const std::string& address,
                                                           const ClientTransport& transport,
                                                           const grpc::ChannelArguments& args);

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_AUTH_H_
