// The libcurl side of HttpClient: one easy handle per request, redirects never
// followed (the downloader decides, so a token cannot follow a redirect).
#include <curl/curl.h>

#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "client/hub/http_client.h"

namespace lensgrid::hub {
namespace {

constexpr size_t kMaxErrorBody = 4096;

struct Transfer {
  HttpResponse response;
  bool headers_done = false;
  bool want_body = false;
  const std::function<bool(const HttpResponse&)>* on_headers;
  const std::function<absl::Status(absl::string_view)>* on_body;
  absl::Status body_status;
  CURL* curl;
};

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const absl::string_view line(data, size * n);
  if (line.rfind("HTTP/", 0) == 0) t->response.headers.Clear();  // a new answer (100-continue)
  std::string name, value;
  if (ParseHeaderLine(line, &name, &value)) t->response.headers.Add(name, value);
  return size * n;
}

// The first body byte (or the end of a body-less answer) settles the headers.
void SettleHeaders(Transfer* t) {
  if (t->headers_done) return;
  t->headers_done = true;
  long status = 0;
  curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
  t->response.status = static_cast<int>(status);
  t->want_body = (*t->on_headers)(t->response);
}

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  SettleHeaders(t);
  const absl::string_view bytes(data, size * n);
  if (!t->want_body) {
    const size_t room = kMaxErrorBody - std::min(kMaxErrorBody, t->response.error_body.size());
    const absl::string_view kept = bytes.substr(0, room);
    t->response.error_body.append(kept.data(), kept.size());
    return size * n;
  }
  t->body_status = (*t->on_body)(bytes);
  return t->body_status.ok() ? size * n : 0;  // 0 aborts the transfer
}

class CurlHttpClient : public HttpClient {
 public:
  absl::StatusOr<HttpResponse> Send(
      const HttpRequest& request, const std::function<bool(const HttpResponse&)>& on_headers,
      const std::function<absl::Status(absl::string_view)>& on_body) override {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
    if (curl == nullptr) return absl::InternalError("curl_easy_init failed");
    Transfer t;
    t.on_headers = &on_headers;
    t.on_body = &on_body;
    t.curl = curl.get();
    curl_slist* list = nullptr;
    for (const std::string& h : request.headers) list = curl_slist_append(list, h.c_str());
    std::unique_ptr<curl_slist, void (*)(curl_slist*)> headers(list, curl_slist_free_all);
    char error[CURL_ERROR_SIZE] = {0};
    CURL* c = curl.get();
    curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_UNRESTRICTED_AUTH, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "lensgrid/0.1 (hf_hub-compatible)");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 20L);
    // A transfer that moves nothing for a minute is dead; a slow one is not.
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, OnHeader);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, OnBody);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
    if (request.method == "HEAD") {
      curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else {
      curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    }
    const CURLcode code = curl_easy_perform(c);
    if (!t.body_status.ok()) return t.body_status;
    if (code != CURLE_OK) {
      return absl::UnavailableError(
          absl::StrCat(request.method, " ", request.url,
                       " failed: ", error[0] != '\0' ? error : curl_easy_strerror(code)));
    }
    SettleHeaders(&t);
    return std::move(t.response);
  }
};

}  // namespace

std::unique_ptr<HttpClient> NewCurlHttpClient() { return std::make_unique<CurlHttpClient>(); }

}  // namespace lensgrid::hub
