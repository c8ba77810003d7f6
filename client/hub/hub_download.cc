#include "client/hub/hub_download.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <ostream>
#include <random>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/checkpoint_files.h"
#include "common/sha256.h"
#include "common/status_macros.h"

namespace lensgrid::hub {
namespace {

namespace fs = std::filesystem;

constexpr int kMaxRedirects = 10;

// A URL fit for a message: a CDN's signed query string is left out.
std::string ShownUrl(absl::string_view url) { return std::string(url.substr(0, url.find('?'))); }

std::string ErrnoText(const std::string& what, const std::string& path) {
  return absl::StrCat(what, " ", path, ": ", std::strerror(errno));
}

bool IsFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool IsDir(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

absl::Status MakeDirs(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  return absl::OkStatus();
}

std::string RandomSuffix() {
  std::random_device rd;
  return absl::StrFormat("%08x", rd());
}

// Writes `text` to `path` atomically (a temporary name, then rename).
absl::Status WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = absl::StrCat(path, ".", RandomSuffix(), ".tmp");
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string msg = ErrnoText("cannot rename to", path);
    std::remove(tmp.c_str());
    return absl::PermissionDeniedError(msg);
  }
  return absl::OkStatus();
}

std::string ReadSmallFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return std::string(absl::StripAsciiWhitespace(ss.str()));
}

// The error for a final answer that is neither 2xx nor a redirect.
absl::Status HttpError(const std::string& method, absl::string_view url, const HttpResponse& res,
                       bool token_sent) {
  const std::string where = absl::StrCat(method, " ", ShownUrl(url), ": HTTP ", res.status);
  std::string hub_message = res.headers.Get("X-Error-Message").value_or("");
  if (!hub_message.empty()) hub_message = absl::StrCat(" (", hub_message, ")");
  if (res.status == 401 || res.status == 403) {
    return absl::UnauthenticatedError(
        absl::StrCat(where, hub_message, ": the repo is private, gated or missing; ",
                     token_sent ? "the HF_TOKEN sent was not accepted for it"
                                : "set HF_TOKEN to a token that can read it"));
  }
  if (res.status == 404) {
    return absl::NotFoundError(
        absl::StrCat(where, hub_message, ": no such repo, revision or file"));
  }
  if (res.status == 429 || res.status >= 500) {
    return absl::UnavailableError(
        absl::StrCat(where, hub_message, ": the Hub is busy or down; try again later"));
  }
  return absl::FailedPreconditionError(absl::StrCat(where, hub_message));
}

// Progress of one file: a redrawn bar on a terminal, plain lines otherwise.
class Progress {
 public:
  Progress(std::ostream* log, bool tty, std::string file, std::optional<int64_t> total,
           int64_t start)
      : log_(log),
        tty_(tty),
        file_(std::move(file)),
        total_(total),
        done_(start),
        began_(std::chrono::steady_clock::now()) {
    if (log_ == nullptr) return;
    *log_ << "downloading " << file_
          << (total_ ? absl::StrFormat(" (%.1f MB)", *total_ / 1e6) : std::string())
          << (start > 0 ? absl::StrFormat(", resuming at %.1f MB", start / 1e6) : std::string())
          << "\n"
          << std::flush;
  }
  void Add(int64_t n) {
    done_ += n;
    if (log_ == nullptr || !tty_) return;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    Draw(now);
  }
  void Finish(const std::string& note) {
    if (log_ == nullptr) return;
    if (tty_) {
      Draw(std::chrono::steady_clock::now());
      *log_ << "\n";
    }
    *log_ << file_ << ": " << note << "\n" << std::flush;
  }

 private:
  void Draw(std::chrono::steady_clock::time_point now) {
    const double secs = std::chrono::duration<double>(now - began_).count();
    const double rate = secs > 0 ? done_ / secs / 1e6 : 0;
    std::string bar;
    if (total_ && *total_ > 0) {
      const int filled = static_cast<int>(30.0 * done_ / *total_);
      bar = absl::StrCat(
          "[", std::string(std::min(filled, 30), '#'), std::string(30 - std::min(filled, 30), ' '),
          "] ",
          absl::StrFormat("%3d%% %.1f/%.1f MB", 100 * done_ / *total_, done_ / 1e6, *total_ / 1e6));
    } else {
      bar = absl::StrFormat("%.1f MB", done_ / 1e6);
    }
    *log_ << "\r  " << file_ << " " << bar << absl::StrFormat(" %.1f MB/s\x1b[K", rate)
          << std::flush;
  }

  std::ostream* log_;
  bool tty_;
  std::string file_;
  std::optional<int64_t> total_;
  int64_t done_;
  std::chrono::steady_clock::time_point began_, last_draw_;
};

// An exclusive advisory lock on a file, released on destruction.
class FileLock {
 public:
  static absl::StatusOr<FileLock> Acquire(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return absl::PermissionDeniedError(ErrnoText("cannot open lock", path));
    while (::flock(fd, LOCK_EX) != 0) {
      if (errno != EINTR) {
        ::close(fd);
        return absl::PermissionDeniedError(ErrnoText("cannot lock", path));
      }
    }
    return FileLock(fd);
  }
  FileLock(FileLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);
  }

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_;
};

class Downloader {
 public:
  Downloader(const ModelRef& ref, const PullOptions& options)
      : ref_(ref),
        options_(options),
        repo_dir_(RepoCacheDir(options.settings.cache_dir, ref.repo_id)) {}

  // One file into the cache; NOT_FOUND passes through for optional files.
  absl::Status Fetch(const std::string& file, PulledModel* pulled) {
    if (!IsSafeRelativeFile(file)) {
      return absl::InvalidArgumentError(absl::StrCat("unsafe file name in the repo: ", file));
    }
    ModelRef at = ref_;
    if (!pulled->commit.empty()) at.revision = pulled->commit;  // one commit for all files
    std::string url = ResolveUrl(options_.settings.endpoint, at, file);
    LG_ASSIGN_OR_RETURN(FileMetadata meta, Head(url));
    if (pulled->commit.empty()) {
      pulled->commit = meta.commit;
      pulled->dir = absl::StrCat(repo_dir_, "/snapshots/", meta.commit);
      LG_RETURN_IF_ERROR(MakeDirs(pulled->dir));
      if (ref_.revision != meta.commit) {
        const std::string ref_path = absl::StrCat(repo_dir_, "/refs/", ref_.revision);
        LG_RETURN_IF_ERROR(MakeDirs(fs::path(ref_path).parent_path().string()));
        if (ReadSmallFile(ref_path) != meta.commit) {
          LG_RETURN_IF_ERROR(WriteFileAtomically(ref_path, meta.commit));
        }
      }
    } else if (meta.commit != pulled->commit) {
      return absl::UnavailableError(absl::StrCat("HEAD ", url, " answered commit ", meta.commit,
                                                 " for a request at commit ", pulled->commit,
                                                 ": the server is inconsistent"));
    }
    const std::string blob = absl::StrCat(repo_dir_, "/blobs/", meta.etag);
    const std::string pointer = absl::StrCat(pulled->dir, "/", file);
    pulled->files.push_back(file);
    if (IsFile(pointer)) {
      Note(file, "cached");
      return absl::OkStatus();
    }
    LG_RETURN_IF_ERROR(MakeDirs(repo_dir_ + "/blobs"));
    const std::string lock_dir = absl::StrCat(options_.settings.cache_dir, "/.locks/",
                                              fs::path(repo_dir_).filename().string());
    LG_RETURN_IF_ERROR(MakeDirs(lock_dir));
    {
      LG_ASSIGN_OR_RETURN(FileLock lock,
                          FileLock::Acquire(absl::StrCat(lock_dir, "/", meta.etag, ".lock")));
      if (!IsFile(blob)) {
        LG_ASSIGN_OR_RETURN(int64_t got, Download(file, meta, blob));
        pulled->bytes_downloaded += got;
      } else {
        Note(file, "in the cache's blobs");
      }
    }
    return Link(blob, pointer);
  }

 private:
  std::vector<std::string> RequestHeaders(absl::string_view url) const {
    std::vector<std::string> headers = {"Accept-Encoding: identity"};
    if (!options_.settings.token.empty() && MaySendToken(options_.settings.endpoint, url)) {
      headers.push_back(absl::StrCat("Authorization: Bearer ", options_.settings.token));
    }
    return headers;
  }
  bool TokenSent(absl::string_view url) const {
    return !options_.settings.token.empty() && MaySendToken(options_.settings.endpoint, url);
  }

  void Note(const std::string& file, const std::string& note) {
    if (options_.log != nullptr) *options_.log << file << ": " << note << "\n" << std::flush;
  }

  // HEAD following relative redirects only, as huggingface_hub does.
  absl::StatusOr<FileMetadata> Head(std::string url) {
    for (int hop = 0; hop <= kMaxRedirects; ++hop) {
      HttpRequest req{"HEAD", url, RequestHeaders(url)};
      LG_ASSIGN_OR_RETURN(HttpResponse res,
                          options_.http->Send(
                              req, [](const HttpResponse&) { return false; },
                              [](absl::string_view) { return absl::OkStatus(); }));
      const bool redirect = res.status >= 300 && res.status <= 399;
      const std::optional<std::string> location = res.headers.Get("Location");
      if (redirect && location && IsRelativeRedirect(*location)) {
        url = ResolveLocation(url, *location);
        continue;
      }
      if (!(res.status >= 200 && res.status <= 299) && !(redirect && location)) {
        return HttpError("HEAD", url, res, TokenSent(url));
      }
      return ParseFileMetadata(res.status, res.headers, url);
    }
    return absl::UnavailableError(
        absl::StrCat("HEAD ", url, ": more than ", kMaxRedirects, " redirects"));
  }

  // GET into BLOB.incomplete (resuming it), verify, rename to BLOB.
  // Returns the bytes received.
  absl::StatusOr<int64_t> Download(const std::string& file, const FileMetadata& meta,
                                   const std::string& blob) {
    const std::string partial = blob + ".incomplete";
    const int fd = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return absl::PermissionDeniedError(ErrnoText("cannot open", partial));
    struct Closer {
      int fd;
      ~Closer() { ::close(fd); }
    } closer{fd};
    int64_t have = ::lseek(fd, 0, SEEK_END);
    if (have < 0 || (meta.size && have > *meta.size)) {
      if (::ftruncate(fd, 0) != 0)
        return absl::PermissionDeniedError(ErrnoText("cannot truncate", partial));
      have = ::lseek(fd, 0, SEEK_SET);
    }
    Progress progress(options_.log, options_.tty, file, meta.size, have);
    int64_t received = 0;
    std::string url = meta.location;
    bool range_refused = false;
    for (int hop = 0; !(meta.size && have == *meta.size); ++hop) {
      if (hop > kMaxRedirects) {
        return absl::UnavailableError(absl::StrCat("GET ", ShownUrl(meta.location), ": more than ",
                                                   kMaxRedirects, " redirects"));
      }
      HttpRequest req{"GET", url, RequestHeaders(url)};
      if (have > 0) req.headers.push_back(absl::StrCat("Range: bytes=", have, "-"));
      absl::Status head_status;
      auto on_headers = [&](const HttpResponse& res) {
        if (res.status == 200) {
          if (have > 0) {  // the server ignored the Range: start over
            if (::ftruncate(fd, 0) != 0 || ::lseek(fd, 0, SEEK_SET) != 0) {
              head_status = absl::PermissionDeniedError(ErrnoText("cannot truncate", partial));
              return false;
            }
            progress.Add(-have);
            have = 0;
          }
          return true;
        }
        if (res.status == 206) {
          const auto start = ContentRangeStart(res.headers.Get("Content-Range").value_or(""));
          if (!start || *start != have) {
            head_status = absl::UnavailableError(absl::StrCat(
                "GET ", ShownUrl(url), ": asked for bytes from ", have, ", got a Content-Range of ",
                res.headers.Get("Content-Range").value_or("(none)")));
            return false;
          }
          return true;
        }
        return false;
      };
      auto on_body = [&](absl::string_view bytes) -> absl::Status {
        const char* p = bytes.data();
        size_t left = bytes.size();
        while (left > 0) {
          const ssize_t n = ::write(fd, p, left);
          if (n < 0) {
            if (errno == EINTR) continue;
            return absl::ResourceExhaustedError(ErrnoText("cannot write", partial));
          }
          p += n;
          left -= static_cast<size_t>(n);
        }
        have += static_cast<int64_t>(bytes.size());
        received += static_cast<int64_t>(bytes.size());
        progress.Add(static_cast<int64_t>(bytes.size()));
        if (meta.size && have > *meta.size) {
          return absl::DataLossError(absl::StrCat("GET ", ShownUrl(url), ": more than the ",
                                                  *meta.size, " bytes the Hub announced"));
        }
        return absl::OkStatus();
      };
      absl::StatusOr<HttpResponse> res = options_.http->Send(req, on_headers, on_body);
      LG_RETURN_IF_ERROR(head_status);
      if (!res.ok()) {
        if (absl::IsUnavailable(res.status())) {
          return absl::UnavailableError(absl::StrCat(res.status().message(), " (", have,
                                                     " bytes of ", file,
                                                     " kept in the cache: run again to resume)"));
        }
        return res.status();
      }
      if (res->status >= 300 && res->status <= 399) {
        const std::optional<std::string> location = res->headers.Get("Location");
        if (!location) return HttpError("GET", url, *res, TokenSent(url));
        url = ResolveLocation(url, *location);  // the token stays with the Hub's origin
        continue;
      }
      if (res->status == 416 && have > 0 && !range_refused) {
        range_refused = true;  // our partial file is wrong for this blob: start over
        if (::ftruncate(fd, 0) != 0 || ::lseek(fd, 0, SEEK_SET) != 0) {
          return absl::PermissionDeniedError(ErrnoText("cannot truncate", partial));
        }
        have = 0;
        continue;
      }
      if (res->status != 200 && res->status != 206) {
        return HttpError("GET", url, *res, TokenSent(url));
      }
      break;
    }
    if (meta.size && have != *meta.size) {
      return absl::UnavailableError(
          absl::StrCat("GET ", ShownUrl(url), ": the transfer ended at ", have, " of ", *meta.size,
                       " bytes (kept in the cache: run again to resume)"));
    }
    if (::fsync(fd) != 0) return absl::ResourceExhaustedError(ErrnoText("cannot sync", partial));
    std::string verified = "downloaded";
    if (const std::optional<std::string> want = LfsSha256(meta.etag)) {
      LG_ASSIGN_OR_RETURN(std::string got, Sha256FileHex(partial));
      if (got != *want) {
        std::remove(partial.c_str());
        return absl::DataLossError(absl::StrCat(
            file, " from ", ShownUrl(meta.location), ": sha256 mismatch: the Hub says ", *want,
            ", the download has ", got, "; the download was deleted"));
      }
      verified = "downloaded, sha256 verified";
    }
    if (std::rename(partial.c_str(), blob.c_str()) != 0) {
      return absl::PermissionDeniedError(ErrnoText("cannot rename to", blob));
    }
    progress.Finish(absl::StrCat(verified, " (", have, " bytes)"));
    return received;
  }

  // snapshots/COMMIT/FILE -> ../../blobs/ETAG (relative, as huggingface_hub).
  absl::Status Link(const std::string& blob, const std::string& pointer) {
    const fs::path parent = fs::path(pointer).parent_path();
    LG_RETURN_IF_ERROR(MakeDirs(parent.string()));
    std::error_code ec;
    const fs::path target = fs::relative(fs::path(blob), parent, ec);
    if (ec) return absl::InternalError(absl::StrCat("no relative path to ", blob));
    const std::string tmp = absl::StrCat(pointer, ".", RandomSuffix(), ".tmp");
    if (::symlink(target.c_str(), tmp.c_str()) != 0) {
      return absl::PermissionDeniedError(ErrnoText("cannot create the link", tmp));
    }
    if (std::rename(tmp.c_str(), pointer.c_str()) != 0) {
      const std::string msg = ErrnoText("cannot rename to", pointer);
      std::remove(tmp.c_str());
      return absl::PermissionDeniedError(msg);
    }
    return absl::OkStatus();
  }

  const ModelRef& ref_;
  const PullOptions& options_;
  const std::string repo_dir_;
};

}  // namespace

absl::StatusOr<PulledModel> PullModel(const ModelRef& ref, const PullOptions& options) {
  PulledModel pulled;
  Downloader downloader(ref, options);
  auto context = [&](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat(ref.repo_id, "@", ref.revision, ": ", s.message()));
  };
  absl::Status s = downloader.Fetch("config.json", &pulled);
  if (!s.ok()) return context(s);
  s = downloader.Fetch("model.safetensors", &pulled);
  if (absl::IsNotFound(s)) {
    const absl::Status single = s;
    s = downloader.Fetch("model.safetensors.index.json", &pulled);
    if (absl::IsNotFound(s)) {
      return context(absl::NotFoundError(
          absl::StrCat(single.message(),
                       "; no model.safetensors.index.json either (lensgrid reads "
                       "safetensors weights only)")));
    }
    if (!s.ok()) return context(s);
    // The shards the index names, each once; a name leaving the snapshot dir is refused.
    absl::StatusOr<Checkpoint> index = ReadCheckpointIndex(pulled.dir);
    if (!index.ok()) return context(absl::DataLossError(index.status().message()));
    for (const std::string& f : index->files) {
      s = downloader.Fetch(f, &pulled);
      if (!s.ok()) return context(s);
    }
  } else if (!s.ok()) {
    return context(s);
  }
  for (const char* optional : {"vocab.json", "merges.txt"}) {
    s = downloader.Fetch(optional, &pulled);
    if (absl::IsNotFound(s)) {
      if (options.log != nullptr) *options.log << optional << ": not in the repo (skipped)\n";
      continue;
    }
    if (!s.ok()) return context(s);
  }
  return pulled;
}

absl::StatusOr<std::string> FindCachedModel(const ModelRef& ref, const std::string& cache_dir) {
  std::vector<std::string> repos = {ref.repo_id};
  repos.insert(repos.end(), ref.cache_aliases.begin(), ref.cache_aliases.end());
  for (const std::string& repo : repos) {
    const std::string repo_dir = RepoCacheDir(cache_dir, repo);
    std::string commit = ref.revision;
    if (!IsCommitHash(commit))
      commit = ReadSmallFile(absl::StrCat(repo_dir, "/refs/", ref.revision));
    if (!IsCommitHash(commit)) continue;
    const std::string dir = absl::StrCat(repo_dir, "/snapshots/", commit);
    if (IsFile(dir + "/config.json") &&
        (IsFile(dir + "/model.safetensors") || IsFile(dir + "/model.safetensors.index.json"))) {
      return dir;
    }
  }
  return absl::NotFoundError(
      absl::StrCat(ref.repo_id, "@", ref.revision, " is not in the cache ", cache_dir));
}

absl::StatusOr<std::string> ResolveModelDir(const std::string& value,
                                            const ResolveOptions& options) {
  if (value.empty()) return absl::InvalidArgumentError("empty --model");
  if (IsDir(value)) return value;
  const bool path_like =
      value[0] == '/' || value[0] == '.' || std::count(value.begin(), value.end(), '/') > 1;
  absl::StatusOr<ModelRef> ref = ParseModelName(value);
  if (path_like || !ref.ok()) {
    return absl::NotFoundError(absl::StrCat(
        "--model ", value, ": no such model dir", path_like ? "" : " and not a model name (",
        path_like ? "" : ref.status().message(), path_like ? "" : ")"));
  }
  HubSettings settings = SettingsFromEnvironment();
  if (!options.cache_dir.empty()) settings.cache_dir = options.cache_dir;
  absl::StatusOr<std::string> cached = FindCachedModel(*ref, settings.cache_dir);
  if (cached.ok()) return cached;
  if (options.offline || settings.offline) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--model ", value, ": ", ref->repo_id, "@", ref->revision, " is not in the cache ",
        settings.cache_dir,
        " and lensgrid is offline (--offline or LENSGRID_OFFLINE/HF_HUB_OFFLINE); "
        "run `lensgrid pull ",
        value,
        "` where the Hub (or an HF_ENDPOINT mirror) is reachable and "
        "copy ",
        RepoCacheDir(settings.cache_dir, ref->repo_id),
        " here, or copy config.json, model.safetensors, vocab.json and merges.txt into a dir "
        "and pass --model DIR"));
  }
  std::unique_ptr<HttpClient> own;
  HttpClient* http = options.http;
  if (http == nullptr) {
    own = NewCurlHttpClient();
    http = own.get();
  }
  if (options.log != nullptr) {
    *options.log << ref->repo_id << "@" << ref->revision << " is not in the cache "
                 << settings.cache_dir << ": pulling it from " << settings.endpoint << "\n";
  }
  PullOptions pull{settings, http, options.log, options.log != nullptr && ::isatty(2) != 0};
  absl::StatusOr<PulledModel> pulled = PullModel(*ref, pull);
  if (!pulled.ok()) {
    std::string hint;
    if (absl::IsUnavailable(pulled.status())) {
      hint =
          "; offline? copy the files into the cache (see `lensgrid pull --help`) or pass "
          "--model DIR";
    }
    return absl::Status(pulled.status().code(),
                        absl::StrCat("--model ", value, ": ", pulled.status().message(), hint));
  }
  return pulled->dir;
}

absl::Status ResolveModelFlag(std::string* model, bool offline, std::ostream* log) {
  if (model->empty()) return absl::OkStatus();
  ResolveOptions options;
  options.offline = offline;
  options.log = log;
  LG_ASSIGN_OR_RETURN(*model, ResolveModelDir(*model, options));
  return absl::OkStatus();
}

}  // namespace lensgrid::hub
