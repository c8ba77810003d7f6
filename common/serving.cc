#include "common/serving.h"

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <limits>

#include "absl/strings/str_cat.h"

namespace lensgrid {
namespace {

int ClampMs(int64_t ms) {
  return static_cast<int>(std::min<int64_t>(ms, std::numeric_limits<int>::max()));
}

}  // namespace

void AddConnectionFlags(CLI::App* app, ConnectionOptions* o, int64_t default_max_age_ms) {
  o->max_connection_age_ms = default_max_age_ms;
  const auto positive = CLI::Range(int64_t{1}, int64_t{1} << 40);
  app->add_option("--keepalive-ms", o->keepalive_ms, "ping an idle connection this often")
      ->capture_default_str()
      ->check(positive);
  app->add_option("--keepalive-timeout-ms", o->keepalive_timeout_ms,
                  "close a connection whose ping is unanswered this long")
      ->capture_default_str()
      ->check(positive);
  app->add_option("--max-connection-age-ms", o->max_connection_age_ms,
                  "send GOAWAY to a connection this old, so clients rebalance (0: never)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app->add_option("--max-connection-age-grace-ms", o->max_connection_age_grace_ms,
                  "then let its calls finish for at most this long (0: as long as they take)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
}

void ApplyConnectionOptions(const ConnectionOptions& o, grpc::ServerBuilder* builder) {
  // gRPC binds with SO_REUSEPORT by default: a second server on a taken port
  // would start and silently share it.
  builder->AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, ClampMs(o.keepalive_ms));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ClampMs(o.keepalive_timeout_ms));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Clients ping every 30 s (AddClientKeepalive); allow down to 10 s.
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  if (o.max_connection_age_ms > 0) {
    builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, ClampMs(o.max_connection_age_ms));
    builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                                o.max_connection_age_grace_ms > 0
                                    ? ClampMs(o.max_connection_age_grace_ms)
                                    : std::numeric_limits<int>::max());
  }
}

void AddClientKeepalive(grpc::ChannelArguments* args) {
  args->SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args->SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args->SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args->SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
}

absl::StatusOr<std::unique_ptr<HealthListener>> HealthListener::Start(const std::string& listen) {
  if (listen.empty() || listen.rfind(':') == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("--health-listen \"", listen, "\": expected HOST:PORT"));
  }
  grpc::EnableDefaultHealthCheckService(true);
  std::unique_ptr<HealthListener> h(new HealthListener());
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(4096);                   // a health check is a few bytes
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);  // a taken port is an error
  // gRPC builds no server without a service of its own; every other method is UNIMPLEMENTED.
  builder.RegisterCallbackGenericService(&h->unimplemented_);
  h->server_ = builder.BuildAndStart();
  if (h->server_ == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("--health-listen: cannot listen on \"", listen,
                                               "\" (a free port, an address of this machine)"));
  }
  h->address_ = absl::StrCat(listen.substr(0, listen.rfind(':')), ":", port);
  h->SetServing(false);
  return h;
}

HealthListener::~HealthListener() {
  if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
}

void HealthListener::AddServiceName(const std::string& service) { services_.push_back(service); }

void HealthListener::SetServing(bool serving) {
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);
  for (const auto& s : services_) health->SetServingStatus(s, serving);
}

}  // namespace lensgrid
