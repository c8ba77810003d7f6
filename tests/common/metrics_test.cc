// The metrics server: the HTTP responder, and a real scrape over a socket.
#include "common/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <prometheus/counter.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gtest/gtest.h"

namespace lensgrid {
namespace {

std::string Get(const std::string& address, const std::string& path) {
  const int port = std::stoi(address.substr(address.rfind(':') + 1));
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  const std::string req = "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n";
  EXPECT_EQ(::write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
  std::string got;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) got.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return got;
}

TEST(MetricsHttpResponse, RoutesAndMethods) {
  EXPECT_EQ(MetricsHttpResponse("GET /metrics HTTP/1.1", "a 1\n").rfind("HTTP/1.1 200 OK", 0), 0u);
  EXPECT_NE(MetricsHttpResponse("GET /metrics?x=1 HTTP/1.1", "a 1\n").find("\r\n\r\na 1\n"),
            std::string::npos);
  EXPECT_NE(MetricsHttpResponse("GET /metrics HTTP/1.1", "a 1\n").find("Content-Length: 4"),
            std::string::npos);
  EXPECT_EQ(MetricsHttpResponse("GET /nope HTTP/1.1", "").rfind("HTTP/1.1 404", 0), 0u);
  EXPECT_EQ(MetricsHttpResponse("POST /metrics HTTP/1.1", "").rfind("HTTP/1.1 405", 0), 0u);
  EXPECT_EQ(MetricsHttpResponse("garbage", "").rfind("HTTP/1.1 405", 0), 0u);
}

TEST(MetricsServer, ServesRegistryAndCollectors) {
  auto server = MetricsServer::Start("127.0.0.1:0");
  ASSERT_TRUE(server.ok()) << server.status();
  auto& family =
      prometheus::BuildCounter().Name("t_requests_total").Help("h").Register((*server)->registry());
  family.Add({{"method", "Run"}}).Increment(3);
  int scrapes = 0;
  (*server)->AddCollector([&scrapes] {
    ++scrapes;
    return std::vector<prometheus::MetricFamily>{
        GaugeFamily("t_depth", "h", 7),
        LabeledGaugeFamily("t_jobs", "h", "state", {{"queued", 2}})};
  });
  const std::string body = Get((*server)->address(), "/metrics");
  EXPECT_NE(body.find("t_requests_total{method=\"Run\"} 3"), std::string::npos) << body;
  EXPECT_NE(body.find("t_depth 7"), std::string::npos) << body;
  EXPECT_NE(body.find("t_jobs{state=\"queued\"} 2"), std::string::npos) << body;
  EXPECT_EQ(scrapes, 1);
  EXPECT_NE(Get((*server)->address(), "/other").find("404"), std::string::npos);
}

TEST(MetricsServer, BadListenAddressIsAnError) {
  EXPECT_EQ(MetricsServer::Start("nocolon").status().code(), absl::StatusCode::kInvalidArgument);
  auto first = MetricsServer::Start("127.0.0.1:0");
  ASSERT_TRUE(first.ok());
  auto second = MetricsServer::Start((*first)->address());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find("cannot serve metrics"), std::string::npos);
}

TEST(MetricsServer, BuildInfo) {
  auto server = MetricsServer::Start("127.0.0.1:0");
  ASSERT_TRUE(server.ok()) << server.status();
  (*server)->AddCollector([] { return std::vector{BuildInfoFamily("coordinator")}; });
  const std::string text = (*server)->Render();
  EXPECT_NE(text.find("lensgrid_build_info{component=\"coordinator\",version=\"" LENSGRID_VERSION
                      "\"} 1"),
            std::string::npos)
      << text;
}

}  // namespace
}  // namespace lensgrid
