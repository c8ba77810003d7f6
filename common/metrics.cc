#include "common/metrics.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"

namespace lensgrid {
namespace {

// Writes all of `data`; false on a closed or failing socket.
bool WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// The request's first line, read with a short timeout ("" on failure).
std::string ReadRequestLine(int fd) {
  std::string got;
  char buf[1024];
  while (got.find('\n') == std::string::npos && got.size() < 8192) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 2000) <= 0) return "";
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return "";
    got.append(buf, static_cast<size_t>(n));
  }
  std::string line = got.substr(0, got.find('\n'));
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

// "/lensgrid.v1.Coordinator/LeaseShard" -> "LeaseShard".
// Unary calls that wait for work by design (LeaseShard's wait_ms): their
// durations say how idle workers are, not how fast the server is.
bool IsLongPoll(const std::string& method) { return method == "LeaseShard"; }

std::string ShortMethod(const char* method) {
  std::string m = method == nullptr ? "" : method;
  const size_t slash = m.rfind('/');
  return slash == std::string::npos ? m : m.substr(slash + 1);
}

std::string CodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  const int i = static_cast<int>(code);
  return i >= 0 && i <= 16 ? kNames[i] : absl::StrCat(i);
}

struct RpcFamilies {
  prometheus::Family<prometheus::Counter>* requests;
  prometheus::Family<prometheus::Histogram>* latency;  // unary calls
  prometheus::Family<prometheus::Histogram>* streams;  // streams and long polls
};

class RpcMetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  RpcMetricsInterceptor(RpcFamilies families, std::string method, bool long_lived)
      : families_(families),
        method_(std::move(method)),
        long_lived_(long_lived),
        start_(std::chrono::steady_clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      families_.requests->Add({{"method", method_}, {"code", CodeName(status.error_code())}})
          .Increment();
      if (long_lived_) {
        families_.streams
            ->Add({{"method", method_}},
                  prometheus::Histogram::BucketBoundaries{0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60,
                                                          120, 300, 900, 1800, 3600})
            .Observe(seconds);
      } else {
        families_.latency
            ->Add({{"method", method_}},
                  prometheus::Histogram::BucketBoundaries{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                          0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
                                                          60})
            .Observe(seconds);
      }
    }
    methods->Proceed();
  }

 private:
  RpcFamilies families_;
  std::string method_;
  bool long_lived_;
  std::chrono::steady_clock::time_point start_;
};

class RpcMetricsFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcMetricsFactory(RpcFamilies families) : families_(families) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    std::string method = ShortMethod(info->method());
    const bool long_lived =
        info->type() != grpc::experimental::ServerRpcInfo::Type::UNARY || IsLongPoll(method);
    return new RpcMetricsInterceptor(families_, std::move(method), long_lived);
  }

 private:
  RpcFamilies families_;
};

prometheus::MetricFamily OneSample(const std::string& name, const std::string& help,
                                   prometheus::MetricType type, double value) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  prometheus::ClientMetric m;
  m.counter.value = value;
  m.gauge.value = value;
  f.metric.push_back(std::move(m));
  return f;
}

}  // namespace

std::string MetricsHttpResponse(const std::string& request_line, const std::string& body) {
  std::istringstream in(request_line);
  std::string method, target;
  in >> method >> target;
  const std::string path = target.substr(0, target.find('?'));
  auto reply = [](const std::string& status, const std::string& type, const std::string& text) {
    return absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", type,
                        "\r\nContent-Length: ", text.size(), "\r\nConnection: close\r\n\r\n", text);
  };
  if (method != "GET" && method != "HEAD") {
    return reply("405 Method Not Allowed", "text/plain", "only GET /metrics\n");
  }
  if (path != "/metrics" && path != "/") {
    return reply("404 Not Found", "text/plain", "metrics are at /metrics\n");
  }
  std::string r = reply("200 OK", "text/plain; version=0.0.4; charset=utf-8", body);
  if (method == "HEAD") r.resize(r.size() - body.size());
  return r;
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics-listen \"", listen, "\" is not HOST:PORT"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  const std::string port = listen.substr(colon + 1);
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics-listen \"", listen, "\": ", gai_strerror(rc)));
  }
  std::unique_ptr<MetricsServer> m(new MetricsServer());
  m->registry_ = std::make_shared<prometheus::Registry>();
  std::string error = "no address";
  for (addrinfo* a = found; a != nullptr && m->listen_fd_ < 0; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 64) == 0) {
      m->listen_fd_ = fd;
    } else {
      error = std::strerror(errno);
      ::close(fd);
    }
  }
  ::freeaddrinfo(found);
  if (m->listen_fd_ < 0) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen, ": ", error));
  }
  sockaddr_storage bound = {};
  socklen_t len = sizeof(bound);
  ::getsockname(m->listen_fd_, reinterpret_cast<sockaddr*>(&bound), &len);
  const int bound_port =
      ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  m->address_ = absl::StrCat(listen.substr(0, colon), ":", bound_port);
  if (::pipe2(m->wake_fd_, O_CLOEXEC) != 0) return absl::InternalError("pipe failed");
  m->thread_ = std::thread([raw = m.get()] { raw->Serve(); });
  return m;
}

MetricsServer::~MetricsServer() {
  if (thread_.joinable()) {
    const char x = 'x';
    (void)!::write(wake_fd_[1], &x, 1);
    thread_.join();
  }
  for (int fd : {listen_fd_, wake_fd_[0], wake_fd_[1]})
    if (fd >= 0) ::close(fd);
}

void MetricsServer::Serve() {
  while (true) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    const std::string line = ReadRequestLine(client);
    if (!line.empty()) WriteAll(client, MetricsHttpResponse(line, Render()));
    ::close(client);
  }
}

std::string MetricsServer::Render() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  {
    std::lock_guard<std::mutex> lock(collectors_mu_);
    for (const auto& collect : collectors_) {
      for (prometheus::MetricFamily& f : collect()) families.push_back(std::move(f));
    }
  }
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

void MetricsServer::AddCollector(std::function<std::vector<prometheus::MetricFamily>()> collect) {
  std::lock_guard<std::mutex> lock(collectors_mu_);
  collectors_.push_back(std::move(collect));
}

std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
RpcMetricsInterceptors(MetricsServer& metrics) {
  RpcFamilies families{&prometheus::BuildCounter()
                            .Name("lensgrid_rpc_requests_total")
                            .Help("RPCs finished, by method and status code")
                            .Register(metrics.registry()),
                       &prometheus::BuildHistogram()
                            .Name("lensgrid_rpc_latency_seconds")
                            .Help("unary RPC duration, start to finish (long polls excluded)")
                            .Register(metrics.registry()),
                       &prometheus::BuildHistogram()
                            .Name("lensgrid_rpc_stream_seconds")
                            .Help("streaming RPCs and long polls, start to finish")
                            .Register(metrics.registry())};
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> out;
  out.push_back(std::make_unique<RpcMetricsFactory>(families));
  return out;
}

prometheus::MetricFamily CounterFamily(const std::string& name, const std::string& help,
                                       double value) {
  return OneSample(name, help, prometheus::MetricType::Counter, value);
}

prometheus::MetricFamily GaugeFamily(const std::string& name, const std::string& help,
                                     double value) {
  return OneSample(name, help, prometheus::MetricType::Gauge, value);
}

prometheus::MetricFamily LabeledGaugeFamily(const std::string& name, const std::string& help,
                                            const std::string& label,
                                            const std::map<std::string, double>& values) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = prometheus::MetricType::Gauge;
  for (const auto& [key, value] : values) {
    prometheus::ClientMetric m;
    m.label.push_back({label, key});
    m.gauge.value = value;
    f.metric.push_back(std::move(m));
  }
  return f;
}

prometheus::MetricFamily BuildInfoFamily(const std::string& component) {
  prometheus::MetricFamily f = GaugeFamily(
      "lensgrid_build_info", "1, labelled with the build's version and the component", 1);
  f.metric[0].label = {{"component", component}, {"version", LENSGRID_VERSION}};
  return f;
}

}  // namespace lensgrid
