// Prometheus metrics of one process (prometheus-cpp), served as text at
// GET /metrics on --metrics-listen HOST:PORT. The contract (names, labels) is
// in deploy/README.md.
//
//   LG_ASSIGN_OR_RETURN(auto metrics, MetricsServer::Start("0.0.0.0:9090"));
//   builder.experimental().SetInterceptorCreators(RpcMetricsInterceptors(*metrics));
//   metrics->AddCollector([&] { return std::vector{CounterFamily("x_total", "...", n)}; });
//
// Counters kept elsewhere (the scheduler's, the executor's) are read at
// scrape time by collectors, so the code that counts needs no Prometheus.
//
// The HTTP side is a minimal GET responder on one ordinary thread, not
// prometheus-cpp's Exposer: Debian's civetweb starts its threads with a fixed
// 100 KiB stack, too small for a process that loads LibTorch (their
// thread-local storage alone exceeds it, and pthread_create fails).
#ifndef LENSGRID_COMMON_METRICS_H_
#define LENSGRID_COMMON_METRICS_H_

#include <grpcpp/support/server_interceptor.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace lensgrid {

class MetricsServer {
 public:
  // `listen` is HOST:PORT; port 0 picks a free one (see address()).
  // INVALID_ARGUMENT / UNAVAILABLE when it cannot listen there.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen);
  ~MetricsServer();

  prometheus::Registry& registry() { return *registry_; }
  // HOST:PORT it listens on.
  const std::string& address() const { return address_; }
  // `collect` runs on every scrape (from the HTTP server's thread).
  // REQUIRES: called before the first scrape can matter (at startup).
  void AddCollector(std::function<std::vector<prometheus::MetricFamily>()> collect);
  // The text exposition format of everything registered and collected.
  std::string Render() const;

 private:
  MetricsServer() = default;
  void Serve();
  std::shared_ptr<prometheus::Registry> registry_;
  mutable std::mutex collectors_mu_;
  std::vector<std::function<std::vector<prometheus::MetricFamily>()>> collectors_;
  int listen_fd_ = -1;
  int wake_fd_[2] = {-1, -1};  // written by the destructor to stop Serve()
  std::thread thread_;
  std::string address_;
};

// The HTTP response to one request's first line ("GET /metrics HTTP/1.1"):
// 200 with `body` for GET /metrics (or /), 404 for other paths, 405 for
// other methods. Pure; exposed for tests.
std::string MetricsHttpResponse(const std::string& request_line, const std::string& body);

// A gRPC server interceptor factory recording lensgrid_rpc_requests_total
// {method, code} and the duration of each call into `metrics`: unary calls in
// lensgrid_rpc_latency_seconds{method} (buckets from 0.5 ms to 60 s), streams
// and long polls (LeaseShard) in lensgrid_rpc_stream_seconds{method} (10 ms to
// an hour), so a worker idling in a long poll never reads as a slow server.
std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
RpcMetricsInterceptors(MetricsServer& metrics);

// lensgrid_build_info{component, version} 1 (version: CMake's PROJECT_VERSION).
prometheus::MetricFamily BuildInfoFamily(const std::string& component);

// One-sample families for collectors.
prometheus::MetricFamily CounterFamily(const std::string& name, const std::string& help,
                                       double value);
prometheus::MetricFamily GaugeFamily(const std::string& name, const std::string& help,
                                     double value);
// One gauge per label value: name{label="key"} value.
prometheus::MetricFamily LabeledGaugeFamily(const std::string& name, const std::string& help,
                                            const std::string& label,
                                            const std::map<std::string, double>& values);

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_METRICS_H_
