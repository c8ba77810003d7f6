// The Hugging Face Hub's conventions as pure functions (no sockets, no files):
// model names, resolve URLs, the huggingface_hub cache layout, response
// headers, and the redirect rule. hub_download.h puts them to work.
//
//   LG_ASSIGN_OR_RETURN(ModelRef ref, ParseModelName("gpt2"));
//   // ref.repo_id == "openai-community/gpt2", ref.revision == "main"
//   std::string url = ResolveUrl("https://huggingface.co", ref, "config.json");
//   // https://huggingface.co/openai-community/gpt2/resolve/main/config.json
//   std::string dir = RepoCacheDir("/home/me/.cache/huggingface/hub", ref.repo_id);
//   // .../hub/models--openai-community--gpt2/{blobs,snapshots/COMMIT,refs/main}
//
// The protocol follows huggingface_hub (file_download.py): a HEAD on the
// resolve URL follows *relative* redirects only (a renamed repo); its final
// answer carries X-Repo-Commit (the commit the revision resolved to),
// X-Linked-Etag / X-Linked-Size (an LFS file's sha256 and size, when the
// answer is a redirect to the file CDN) or ETag / Content-Length; the GET goes
// to the Location. Blobs are stored under their etag, snapshots/COMMIT/FILE is
// a relative symlink to ../../blobs/ETAG, refs/REVISION holds the commit.
#ifndef LENSGRID_CLIENT_HUB_HF_HUB_H_
#define LENSGRID_CLIENT_HUB_HF_HUB_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/checkpoint_files.h"

namespace lensgrid::hub {

constexpr char kDefaultEndpoint[] = "https://huggingface.co";
constexpr char kDefaultRevision[] = "main";

// A model on the Hub: "ORG/NAME" at a revision (branch, tag or commit hash).
struct ModelRef {
  std::string repo_id;
  std::string revision = kDefaultRevision;
  // Other repo ids whose caches hold the same model: "gpt2" for
  // openai-community/gpt2 (transformers users have it under models--gpt2).
  std::vector<std::string> cache_aliases;
};

// "gpt2" | "gpt2-medium" | "gpt2-large" | "gpt2-xl" | "distilgpt2" (the Hub's
// renamed canonical repos, now under openai-community/ or distilbert/), or
// "ORG/NAME", each optionally "@REVISION". `revision`, when not empty,
// overrides the @ part. INVALID_ARGUMENT for anything else.
absl::StatusOr<ModelRef> ParseModelName(absl::string_view name, absl::string_view revision = "");

// True for a 40-hex-digit git commit hash.
bool IsCommitHash(absl::string_view revision);

// Where the Hub is and where its files are cached, as huggingface_hub reads
// them from the environment.
struct HubSettings {
  std::string endpoint = kDefaultEndpoint;  // HF_ENDPOINT, no trailing '/'
  std::string token;                        // HF_TOKEN (may be empty)
  std::string cache_dir;                    // HF_HUB_CACHE | HF_HOME/hub | ...
  bool offline = false;                     // LENSGRID_OFFLINE | HF_HUB_OFFLINE (1/true/yes/on)
};
// `getenv` returns nullptr for an unset variable (std::getenv by default).
HubSettings SettingsFromEnvironment(
    const std::function<const char*(const char*)>& getenv = nullptr);

// ENDPOINT/REPO/resolve/REVISION/FILE, the revision and file percent-encoded
// (the file's '/' kept).
std::string ResolveUrl(absl::string_view endpoint, const ModelRef& ref, absl::string_view file);
std::string PercentEncode(absl::string_view text, bool keep_slash);

// CACHE/models--ORG--NAME.
std::string RepoCacheDir(absl::string_view cache_dir, absl::string_view repo_id);

// `W/"abc"` or `"abc"` -> abc.
std::string NormalizeEtag(absl::string_view etag);

// A 64-hex-digit etag is an LFS file's sha256 (lower case); else nullopt.
std::optional<std::string> LfsSha256(absl::string_view etag);

// HTTP response headers, names compared without case.
class Headers {
 public:
  void Add(std::string name, std::string value);
  // The first value of `name`, or nullopt.
  std::optional<std::string> Get(absl::string_view name) const;
  void Clear() { entries_.clear(); }

 private:
  std::vector<std::pair<std::string, std::string>> entries_;
};

// One "Name: value" header line as curl hands it over (CRLF optional); false
// for status lines and the blank end line.
bool ParseHeaderLine(absl::string_view line, std::string* name, std::string* value);

// What a file's final HEAD answer says about it.
struct FileMetadata {
  std::string commit;           // X-Repo-Commit
  std::string etag;             // X-Linked-Etag, else ETag (normalized)
  std::string location;         // where to GET it: Location of a redirect, else the URL
  std::optional<int64_t> size;  // X-Linked-Size, else Content-Length (not of a redirect)
};
// INVALID_ARGUMENT (naming `url` and the missing header) when the answer has
// no commit or no etag: the server is not a Hub (or a mirror of one).
absl::StatusOr<FileMetadata> ParseFileMetadata(int status, const Headers& headers,
                                               absl::string_view url);

// scheme://host[:port] of a URL (lower-cased scheme and host), or "" when it
// has none (a relative reference).
std::string UrlOrigin(absl::string_view url);

// A Location header resolved against the URL it answered: an absolute URL as
// is, "/path" on the same origin, "path" against the URL's directory.
std::string ResolveLocation(absl::string_view url, absl::string_view location);

// The HEAD rule of huggingface_hub: follow a redirect only when its Location
// is relative (no host), which is how the Hub points at a renamed repo; an
// absolute Location (the file CDN) is the answer itself.
bool IsRelativeRedirect(absl::string_view location);

// The Authorization header goes only to the Hub's own origin: never to a CDN
// or any other host a redirect names.
bool MaySendToken(absl::string_view endpoint, absl::string_view url);

// "bytes START-END/TOTAL" -> START (nullopt if malformed).
std::optional<int64_t> ContentRangeStart(absl::string_view content_range);

// A repo-relative file name that is safe to join to a cache dir: not empty,
// not absolute, no "." or ".." part, no backslash (common/checkpoint_files.h;
// the loader checks a sharded checkpoint's index with it too).
using ::lensgrid::IsSafeRelativeFile;

}  // namespace lensgrid::hub

#endif  // LENSGRID_CLIENT_HUB_HF_HUB_H_
