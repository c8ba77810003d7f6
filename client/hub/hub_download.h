// Getting a GPT-2-family model from the Hugging Face Hub into the
// huggingface_hub cache, and turning a `--model` value into a model dir.
//
//   // Every command and the worker: a dir stays a dir; a name is looked up in
//   // the cache, and pulled when absent unless offline.
//   LG_ASSIGN_OR_RETURN(std::string dir, ResolveModelDir("gpt2", {.log = &std::cerr}));
//
//   // `lensgrid pull`: always asks the Hub (new commits of a branch), downloads
//   // what the cache lacks.
//   auto http = NewCurlHttpClient();
//   LG_ASSIGN_OR_RETURN(PulledModel m, PullModel(ref, {.settings = s, .http = http.get()}));
//
// Each file: HEAD on the resolve URL (relative redirects followed: renamed
// repos), then GET of its location, following redirects with the token sent
// only to the Hub's own origin, into blobs/ETAG.incomplete (resumed with a
// Range request when a previous run was cut; one writer at a time through a
// lock file), checked against the expected size and, for LFS files, the
// sha256 the Hub gives as the etag, then renamed to blobs/ETAG and linked from
// snapshots/COMMIT/FILE. All files of one pull come from one commit.
#ifndef LENSGRID_CLIENT_HUB_HUB_DOWNLOAD_H_
#define LENSGRID_CLIENT_HUB_HUB_DOWNLOAD_H_

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/hub/hf_hub.h"
#include "client/hub/http_client.h"

namespace lensgrid::hub {

struct PullOptions {
  HubSettings settings;         // endpoint, token, cache_dir (offline is ignored)
  HttpClient* http = nullptr;   // REQUIRES: not null
  std::ostream* log = nullptr;  // progress and notes; nullptr: quiet
  bool tty = false;             // a redrawn progress bar instead of plain lines
};

struct PulledModel {
  std::string dir;                 // CACHE/models--ORG--NAME/snapshots/COMMIT
  std::string commit;              // what the revision resolved to
  std::vector<std::string> files;  // repo-relative, in download order
  int64_t bytes_downloaded = 0;    // this run (0 when all was cached)
};

// The files a GPT-2-family model needs, downloaded or found in the cache.
// config.json and model.safetensors are required (or model.safetensors.index.json
// and its shards); vocab.json and merges.txt when the repo has them.
// Errors name the URL and the reason: UNAUTHENTICATED (401: private or gated,
// with or without HF_TOKEN), NOT_FOUND (404), UNAVAILABLE (no answer, 5xx,
// a cut transfer: run again to resume), DATA_LOSS (a sha256 or size mismatch;
// the partial file is deleted).
absl::StatusOr<PulledModel> PullModel(const ModelRef& ref, const PullOptions& options);

// The snapshot dir of a complete cached copy (config.json and weights present)
// of `ref`, under its repo id or one of its cache aliases; NOT_FOUND if none.
// Reads refs/REVISION for branch and tag names; touches no network.
absl::StatusOr<std::string> FindCachedModel(const ModelRef& ref, const std::string& cache_dir);

struct ResolveOptions {
  bool offline = false;         // also LENSGRID_OFFLINE=1 / HF_HUB_OFFLINE=1
  std::string cache_dir;        // Default: HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub
  std::ostream* log = nullptr;  // progress while pulling
  HttpClient* http = nullptr;   // Default: libcurl
};

// A `--model` value as a model dir: an existing directory is returned as is;
// otherwise it is a model name (ParseModelName), found in the cache or pulled
// (unless offline: FAILED_PRECONDITION saying how to get the files).
absl::StatusOr<std::string> ResolveModelDir(const std::string& value,
                                            const ResolveOptions& options = {});

// What every command does with its --model value: replaces `*model` with the
// dir ResolveModelDir finds (an empty value stays empty). Pull progress on `log`.
absl::Status ResolveModelFlag(std::string* model, bool offline, std::ostream* log);

}  // namespace lensgrid::hub

#endif  // LENSGRID_CLIENT_HUB_HUB_DOWNLOAD_H_
