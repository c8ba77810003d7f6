// The one thing the Hub downloader needs from the network: send one request,
// follow no redirect, hand over the status, the headers and the body. The
// libcurl adapter (curl_http_client.h) is the real one; tests pass a fake.
//
//   HttpRequest req{.method = "GET", .url = url, .headers = {"Range: bytes=100-"}};
//   LG_ASSIGN_OR_RETURN(HttpResponse res, client->Send(req,
//       [&](const HttpResponse& head) { return head.status == 206; },   // want the body?
//       [&](absl::string_view bytes) { return file.Append(bytes); }));
#ifndef LENSGRID_CLIENT_HUB_HTTP_CLIENT_H_
#define LENSGRID_CLIENT_HUB_HTTP_CLIENT_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/hub/hf_hub.h"

namespace lensgrid::hub {

struct HttpRequest {
  std::string method = "GET";  // "GET" or "HEAD"
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
};

struct HttpResponse {
  int status = 0;
  Headers headers;
  std::string error_body;  // up to 4 KiB of a body nobody wanted (for errors)
};

class HttpClient {
 public:
  virtual ~HttpClient() = default;
  // Sends `request` and never follows a redirect. `on_headers` sees the status
  // and headers before any body byte and returns whether `on_body` should get
  // the body (else up to 4 KiB go to error_body). An error from `on_body`
  // stops the transfer and is returned. UNAVAILABLE (naming the URL and the
  // reason) when no answer came: no connection, a timeout, a cut transfer.
  virtual absl::StatusOr<HttpResponse> Send(
      const HttpRequest& request, const std::function<bool(const HttpResponse&)>& on_headers,
      const std::function<absl::Status(absl::string_view)>& on_body) = 0;
};

// libcurl (HTTPS with the system's CA store; http and https only; the
// http(s)_proxy variables honoured).
std::unique_ptr<HttpClient> NewCurlHttpClient();

}  // namespace lensgrid::hub

#endif  // LENSGRID_CLIENT_HUB_HTTP_CLIENT_H_
