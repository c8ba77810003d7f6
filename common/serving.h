// How lensgrid's servers keep connections healthy and balanced, and how a
// prober that has no credentials sees their health.
//
//   ConnectionOptions connections;
//   AddConnectionFlags(&app, &connections, /*default_max_age_ms=*/10 * 60 * 1000);
//   ApplyConnectionOptions(connections, &builder);
//   LG_ASSIGN_OR_RETURN(auto health, HealthListener::Start(flags.health_listen));  // "": none
//   health->SetServing(true);   // beside the main server's own health service
//
// Keepalive: the server pings an idle connection every keepalive_ms and
// closes it when no answer comes within keepalive_timeout_ms (a client that
// vanished without a FIN stops holding a long poll or a reply); clients may
// ping as often as every 10 s (ClientKeepaliveArguments sends every 30 s) also
// without calls in flight, so long polls through NATs and load balancers
// stay open.
//
// Maximum connection age: a connection older than max_connection_age_ms gets
// a GOAWAY, its calls in flight finish (within max_connection_age_grace_ms;
// 0 = as long as they take), and the client connects again, through the
// Service, possibly to another pod: clients rebalance across worker pods.
//
// Health listener (--health-listen HOST:PORT): a plaintext gRPC server with
// only grpc.health.v1, mirroring the main server's status. Kubernetes' gRPC
// probes speak neither TLS nor bearer tokens; this port tells them whether
// the server serves and nothing else, so the main port can require both.
#ifndef LENSGRID_COMMON_SERVING_H_
#define LENSGRID_COMMON_SERVING_H_

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace CLI {
class App;
}  // namespace CLI

namespace lensgrid {

struct ConnectionOptions {
  int64_t keepalive_ms = 60000;             // Default: 60 s
  int64_t keepalive_timeout_ms = 20000;     // Default: 20 s
  int64_t max_connection_age_ms = 0;        // 0 = unlimited
  int64_t max_connection_age_grace_ms = 0;  // 0 = calls in flight finish, however long
};

// --keepalive-ms, --keepalive-timeout-ms, --max-connection-age-ms (default
// `default_max_age_ms`), --max-connection-age-grace-ms.
void AddConnectionFlags(CLI::App* app, ConnectionOptions* options, int64_t default_max_age_ms);
void ApplyConnectionOptions(const ConnectionOptions& options, grpc::ServerBuilder* builder);
// A client's keepalive (every 30 s, 10 s timeout, also without calls), added to `args`.
void AddClientKeepalive(grpc::ChannelArguments* args);

class HealthListener {
 public:
  // Listens on `listen` (HOST:PORT, port 0 picks one); NOT_SERVING until
  // SetServing(true). INVALID_ARGUMENT / UNAVAILABLE when it cannot listen.
  static absl::StatusOr<std::unique_ptr<HealthListener>> Start(const std::string& listen);
  ~HealthListener();
  // Overall status and every name in `services` (e.g. "lensgrid.v1.Worker").
  void SetServing(bool serving);
  void AddServiceName(const std::string& service);
  const std::string& address() const { return address_; }

 private:
  HealthListener() = default;
  grpc::CallbackGenericService unimplemented_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::vector<std::string> services_;
};

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_SERVING_H_
