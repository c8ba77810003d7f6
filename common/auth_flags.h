// The security flags of every lensgrid binary, registered once here on a
// CLI11 app (lensgrid-coordinator, lensgrid-worker, the `lensgrid` commands
// that talk to a server). Each flag also reads an environment variable; the
// flag wins.
//
//   ServerSecurity security;
//   AddServerSecurityFlags(&app, &security);   // --tls-cert --tls-key --tls-client-ca
//                                              // --auth-tokens --insecure
//   ClientTransport to_server;
//   AddClientTransportFlags(&app, &to_server);  // --tls-ca --tls-cert --tls-key --token
//   ClientTransport to_coordinator;             // a worker, as the coordinator's client:
//   AddClientTransportFlags(&app, &to_coordinator, "coordinator");
//                                  // --coordinator-tls-ca ... LENSGRID_COORDINATOR_TOKEN
#ifndef LENSGRID_COMMON_AUTH_FLAGS_H_
#define LENSGRID_COMMON_AUTH_FLAGS_H_

#include <string>

#include "common/auth.h"

namespace CLI {
class App;
}  // namespace CLI

namespace lensgrid {

// --tls-cert (LENSGRID_TLS_CERT), --tls-key (LENSGRID_TLS_KEY), --tls-client-ca
// (LENSGRID_TLS_CLIENT_CA), --auth-tokens (LENSGRID_AUTH_TOKENS), --insecure.
void AddServerSecurityFlags(CLI::App* app, ServerSecurity* security);

// --tls-ca, --tls-cert, --tls-key, --token (LENSGRID_TLS_CA, ..., LENSGRID_TOKEN);
// with a `side` ("coordinator"): --coordinator-tls-ca, ... (LENSGRID_COORDINATOR_TLS_CA, ...).
void AddClientTransportFlags(CLI::App* app, ClientTransport* transport,
                             const std::string& side = "");

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_AUTH_FLAGS_H_
