#include "common/auth_flags.h"

#include <CLI/CLI.hpp>

#include "absl/strings/ascii.h"

namespace lensgrid {

void AddServerSecurityFlags(CLI::App* app, ServerSecurity* s) {
  const std::string group = "Security (README.md#security)";
  app->add_option("--tls-cert", s->tls_cert, "PEM certificate chain: serve TLS")
      ->envname("LENSGRID_TLS_CERT")
      ->group(group);
  app->add_option("--tls-key", s->tls_key, "PEM private key of --tls-cert")
      ->envname("LENSGRID_TLS_KEY")
      ->group(group);
  app->add_option("--tls-client-ca", s->tls_client_ca,
                  "PEM CA: require client certificates signed by it (mTLS)")
      ->envname("LENSGRID_TLS_CLIENT_CA")
      ->group(group);
  app->add_option("--auth-tokens", s->auth_tokens,
                  "token file (NAME ROLE SHA256_HEX_OF_TOKEN a line; reloaded on SIGHUP): "
                  "callers must send `authorization: Bearer TOKEN`")
      ->envname("LENSGRID_AUTH_TOKENS")
      ->group(group);
  app->add_flag("--insecure", s->insecure,
                "allow listening on a non-loopback address without TLS and tokens")
      ->group(group);
}

void AddClientTransportFlags(CLI::App* app, ClientTransport* t, const std::string& side) {
  const std::string flag = side.empty() ? "--" : "--" + side + "-";
  const std::string env =
      side.empty() ? "LENSGRID_" : "LENSGRID_" + absl::AsciiStrToUpper(side) + "_";
  const std::string whose = side.empty() ? "the server" : "the " + side;
  const std::string group = "Security (README.md#security)";
  t->flag_prefix = flag;
  app->add_option(flag + "tls-ca", t->tls_ca,
                  "PEM CA that " + whose + "'s certificate must chain to: connect with TLS")
      ->envname(env + "TLS_CA")
      ->group(group);
  app->add_option(flag + "tls-cert", t->tls_cert, "PEM client certificate (mTLS)")
      ->envname(env + "TLS_CERT")
      ->group(group);
  app->add_option(flag + "tls-key", t->tls_key, "PEM private key of " + flag + "tls-cert")
      ->envname(env + "TLS_KEY")
      ->group(group);
  app->add_option(flag + "token", t->token,
                  "bearer token sent to " + whose +
                      " (prefer the environment variable: "
                      "command lines are visible to other users)")
      ->envname(env + "TOKEN")
      ->group(group);
}

}  // namespace lensgrid
