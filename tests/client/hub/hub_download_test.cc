// The downloader against an in-memory Hub (no sockets): relative redirects
// for renamed repos, the CDN redirect without the token, sha256 checks,
// resume with Range, revisions, the cache layout, offline resolution.
#include "client/hub/hub_download.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lensgrid::hub {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kHub[] = "https://huggingface.co";
constexpr char kCdn[] = "https://cdn-lfs.hf.co";
constexpr char kToken[] = "hf_SECRETtoken123";

struct FakeRepo {
  std::map<std::string, std::string> commits;  // revision -> commit
  std::map<std::string, std::string> files;    // name -> content
  bool is_private = false;
};

// Serves the Hub's resolve URLs and a CDN; records every request.
class FakeHub : public HttpClient {
 public:
  struct Seen {
    std::string method, url;
    std::vector<std::string> headers;
    bool Has(absl::string_view prefix) const {
      for (const auto& h : headers) {
        if (absl::StartsWithIgnoreCase(h, prefix)) return true;
      }
      return false;
    }
  };

  std::map<std::string, FakeRepo> repos;
  std::map<std::string, std::string> renamed;  // old repo id -> new
  std::string corrupt_blob;                    // sha of an LFS blob served with a flipped byte
  int64_t cut_after = -1;                      // a CDN GET dies after this many bytes (once)
  bool ignore_range = false;
  std::vector<Seen> seen;
  int64_t cdn_bytes = 0;

  static bool IsLfs(const std::string& name) { return absl::EndsWith(name, ".safetensors"); }
  static std::string GitEtag(const std::string& content) {
    return Sha256Hex(content).substr(0, 40);  // stands in for git's sha1
  }

  absl::StatusOr<HttpResponse> Send(
      const HttpRequest& req, const std::function<bool(const HttpResponse&)>& on_headers,
      const std::function<absl::Status(absl::string_view)>& on_body) override {
    seen.push_back({req.method, req.url, req.headers});
    HttpResponse res;
    std::string body;
    if (absl::StartsWith(req.url, kCdn)) {
      const std::string sha = req.url.substr(std::string(kCdn).size() + 6);  // "/blob/"
      const std::string* content = FindBlob(sha);
      if (content == nullptr) return Answer(404, std::move(res), "", on_headers, on_body);
      body = *content;
      if (sha == corrupt_blob) body[body.size() / 2] ^= 1;
      int64_t start = 0;
      for (const auto& h : req.headers) {
        if (absl::StartsWith(h, "Range: bytes=") && !ignore_range) {
          absl::SimpleAtoi(absl::StripSuffix(h.substr(13), "-"), &start);
        }
      }
      res.headers.Add("Content-Length", std::to_string(body.size() - start));
      if (start > 0) {
        res.headers.Add("Content-Range",
                        absl::StrCat("bytes ", start, "-", body.size() - 1, "/", body.size()));
        body = body.substr(start);
      }
      if (cut_after >= 0) {
        body = body.substr(0, cut_after);
        cut_after = -1;
        if (!on_headers([&] {
              res.status = start > 0 ? 206 : 200;
              return res;
            }()))
          return res;
        cdn_bytes += body.size();
        absl::Status s = on_body(body);
        if (!s.ok()) return s;
        return absl::UnavailableError(absl::StrCat("GET ", req.url, " failed: connection cut"));
      }
      cdn_bytes += body.size();
      return Answer(start > 0 ? 206 : 200, std::move(res), body, on_headers, on_body);
    }
    // HUB/REPO/resolve/REV/FILE
    const std::string path = req.url.substr(std::string(kHub).size() + 1);
    const size_t r = path.find("/resolve/");
    const std::string repo_id = path.substr(0, r);
    std::vector<std::string> rest = absl::StrSplit(path.substr(r + 9), absl::MaxSplits('/', 1));
    if (renamed.count(repo_id)) {
      res.headers.Add("Location",
                      absl::StrCat("/", renamed[repo_id], "/resolve/", rest[0], "/", rest[1]));
      return Answer(307, std::move(res), "", on_headers, on_body);
    }
    auto repo = repos.find(repo_id);
    if (repo == repos.end() ||
        (repo->second.is_private && !std::count(req.headers.begin(), req.headers.end(),
                                                absl::StrCat("Authorization: Bearer ", kToken)))) {
      res.headers.Add("X-Error-Code", "RepositoryNotFound");
      return Answer(401, std::move(res), "Invalid username or password.", on_headers, on_body);
    }
    std::string commit = rest[0];
    if (repo->second.commits.count(rest[0])) commit = repo->second.commits[rest[0]];
    bool known = false;
    for (const auto& [rev, c] : repo->second.commits) known |= (c == commit);
    auto file = repo->second.files.find(rest[1]);
    if (!known || file == repo->second.files.end()) {
      res.headers.Add("X-Error-Code", "EntryNotFound");
      return Answer(404, std::move(res), "Entry not found", on_headers, on_body);
    }
    res.headers.Add("X-Repo-Commit", commit);
    res.headers.Add("ETag", "\"" + GitEtag(file->second) + "\"");
    if (IsLfs(file->first)) {
      const std::string sha = Sha256Hex(file->second);
      res.headers.Add("X-Linked-Etag", "\"" + sha + "\"");
      res.headers.Add("X-Linked-Size", std::to_string(file->second.size()));
      res.headers.Add("Location", absl::StrCat(kCdn, "/blob/", sha));
      return Answer(302, std::move(res), "", on_headers, on_body);
    }
    res.headers.Add("Content-Length", std::to_string(file->second.size()));
    return Answer(200, std::move(res), req.method == "GET" ? file->second : "", on_headers,
                  on_body);
  }

 private:
  const std::string* FindBlob(const std::string& sha) {
    for (auto& [id, repo] : repos) {
      for (auto& [name, content] : repo.files) {
        if (Sha256Hex(content) == sha) return &content;
      }
    }
    return nullptr;
  }
  static absl::StatusOr<HttpResponse> Answer(
      int status, HttpResponse res, const std::string& body,
      const std::function<bool(const HttpResponse&)>& on_headers,
      const std::function<absl::Status(absl::string_view)>& on_body) {
    res.status = status;
    if (on_headers(res)) {
      if (!body.empty()) {
        absl::Status s = on_body(body);
        if (!s.ok()) return s;
      }
    } else {
      res.error_body = body.substr(0, 4096);
    }
    return res;
  }
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const std::string kCommitMain(40, 'a');
const std::string kCommitV1(40, 'b');

class HubDownloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cache_ = fs::temp_directory_path() /
             absl::StrCat("hub_download_test_", ::getpid(), "_",
                          ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(cache_);
    FakeRepo repo;
    repo.commits = {{"main", kCommitMain}, {"v1", kCommitV1}};
    repo.files = {{"config.json", "{\"n_layer\": 2}"},
                  {"model.safetensors", std::string(100000, 'w') + "end"},
                  {"vocab.json", "{}"},
                  {"merges.txt", "#version: 0.2\n"}};
    hub_.repos["new-org/tiny"] = repo;
    hub_.renamed["old-org/tiny"] = "new-org/tiny";
    repo.is_private = true;
    repo.files.erase("merges.txt");
    hub_.repos["secret-org/tiny"] = repo;
  }
  void TearDown() override { fs::remove_all(cache_); }

  PullOptions Options(const std::string& token = "") {
    PullOptions o;
    o.settings.endpoint = kHub;
    o.settings.cache_dir = cache_.string();
    o.settings.token = token;
    o.http = &hub_;
    o.log = &log_;
    return o;
  }
  std::string Weights() { return hub_.repos["new-org/tiny"].files["model.safetensors"]; }

  fs::path cache_;
  FakeHub hub_;
  std::ostringstream log_;
};

TEST_F(HubDownloadTest, PullsIntoTheHuggingfaceHubLayoutThroughARename) {
  ModelRef ref = ParseModelName("old-org/tiny").value();
  PulledModel m = PullModel(ref, Options()).value();
  const fs::path repo = cache_ / "models--old-org--tiny";
  EXPECT_EQ(m.commit, kCommitMain);
  EXPECT_EQ(m.dir, (repo / "snapshots" / kCommitMain).string());
  EXPECT_EQ(ReadFile((repo / "refs" / "main").string()), kCommitMain);
  EXPECT_EQ(ReadFile(m.dir + "/model.safetensors"), Weights());
  EXPECT_EQ(ReadFile(m.dir + "/config.json"), "{\"n_layer\": 2}");
  // Relative links into blobs/, named by etag (sha256 for LFS files).
  EXPECT_EQ(fs::read_symlink(m.dir + "/model.safetensors").string(),
            "../../blobs/" + Sha256Hex(Weights()));
  EXPECT_TRUE(fs::is_regular_file(repo / "blobs" / FakeHub::GitEtag("{\"n_layer\": 2}")));
  EXPECT_EQ(m.bytes_downloaded, static_cast<int64_t>(Weights().size() + 14 + 2 + 14));
  EXPECT_THAT(log_.str(), HasSubstr("sha256 verified"));
  // A second pull asks the Hub and downloads nothing.
  hub_.seen.clear();
  EXPECT_EQ(PullModel(ref, Options()).value().bytes_downloaded, 0);
  for (const auto& s : hub_.seen) EXPECT_EQ(s.method, "HEAD") << s.url;
}

TEST_F(HubDownloadTest, TokenGoesToTheHubOnlyAndNeverIntoMessages) {
  ModelRef ref = ParseModelName("secret-org/tiny").value();
  absl::StatusOr<PulledModel> denied = PullModel(ref, Options());
  ASSERT_EQ(denied.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(denied.status().message()),
              HasSubstr("https://huggingface.co/secret-org/tiny/resolve/main/config.json"));
  EXPECT_THAT(std::string(denied.status().message()), HasSubstr("set HF_TOKEN"));

  PulledModel m = PullModel(ref, Options(kToken)).value();
  EXPECT_EQ(ReadFile(m.dir + "/model.safetensors"), Weights());
  EXPECT_FALSE(fs::exists(m.dir + "/merges.txt"));  // optional, absent from this repo
  bool cdn_seen = false;
  for (const auto& s : hub_.seen) {
    if (absl::StartsWith(s.url, kCdn)) {
      cdn_seen = true;
      EXPECT_FALSE(s.Has("Authorization")) << s.url;
    }
  }
  EXPECT_TRUE(cdn_seen);
  EXPECT_THAT(log_.str(), Not(HasSubstr(kToken)));
  EXPECT_THAT(std::string(denied.status().message()), Not(HasSubstr(kToken)));

  hub_.renamed.clear();
  absl::StatusOr<PulledModel> wrong = PullModel(ref, Options("hf_wrong"));
  EXPECT_THAT(std::string(wrong.status().message()), HasSubstr("was not accepted"));
  EXPECT_THAT(std::string(wrong.status().message()), Not(HasSubstr("hf_wrong")));
}

TEST_F(HubDownloadTest, ACorruptByteIsRefusedAndLeavesNothing) {
  hub_.corrupt_blob = Sha256Hex(Weights());
  ModelRef ref = ParseModelName("new-org/tiny").value();
  absl::StatusOr<PulledModel> m = PullModel(ref, Options());
  ASSERT_EQ(m.status().code(), absl::StatusCode::kDataLoss);
  const std::string msg(m.status().message());
  EXPECT_THAT(msg, HasSubstr("model.safetensors"));
  EXPECT_THAT(msg, HasSubstr(Sha256Hex(Weights())));
  std::string bad = Weights();
  bad[bad.size() / 2] ^= 1;
  EXPECT_THAT(msg, HasSubstr(Sha256Hex(bad)));
  const fs::path repo = cache_ / "models--new-org--tiny";
  EXPECT_FALSE(fs::exists(repo / "blobs" / Sha256Hex(Weights())));
  EXPECT_FALSE(fs::exists(repo / "blobs" / (Sha256Hex(Weights()) + ".incomplete")));
  EXPECT_FALSE(fs::exists(repo / "snapshots" / kCommitMain / "model.safetensors"));
  EXPECT_EQ(FindCachedModel(ref, cache_.string()).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(HubDownloadTest, ACutDownloadResumesWithRange) {
  hub_.cut_after = 40000;
  ModelRef ref = ParseModelName("new-org/tiny").value();
  absl::StatusOr<PulledModel> cut = PullModel(ref, Options());
  ASSERT_EQ(cut.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(cut.status().message()), HasSubstr("run again to resume"));
  const fs::path partial =
      cache_ / "models--new-org--tiny" / "blobs" / (Sha256Hex(Weights()) + ".incomplete");
  EXPECT_EQ(fs::file_size(partial), 40000u);
  hub_.cdn_bytes = 0;
  PulledModel m = PullModel(ref, Options()).value();
  EXPECT_EQ(hub_.cdn_bytes, static_cast<int64_t>(Weights().size() - 40000));
  EXPECT_EQ(ReadFile(m.dir + "/model.safetensors"), Weights());
  EXPECT_FALSE(fs::exists(partial));
  bool ranged = false;
  for (const auto& s : hub_.seen) ranged |= s.Has("Range: bytes=40000-");
  EXPECT_TRUE(ranged);
}

TEST_F(HubDownloadTest, AServerIgnoringRangeStartsOver) {
  hub_.cut_after = 30000;
  ModelRef ref = ParseModelName("new-org/tiny").value();
  ASSERT_FALSE(PullModel(ref, Options()).ok());
  hub_.ignore_range = true;
  PulledModel m = PullModel(ref, Options()).value();
  EXPECT_EQ(ReadFile(m.dir + "/model.safetensors"), Weights());
}

TEST_F(HubDownloadTest, ARevisionIsCachedUnderItsCommit) {
  ModelRef ref = ParseModelName("new-org/tiny@v1").value();
  PulledModel m = PullModel(ref, Options()).value();
  const fs::path repo = cache_ / "models--new-org--tiny";
  EXPECT_EQ(m.commit, kCommitV1);
  EXPECT_EQ(m.dir, (repo / "snapshots" / kCommitV1).string());
  EXPECT_EQ(ReadFile((repo / "refs" / "v1").string()), kCommitV1);
  EXPECT_FALSE(fs::exists(repo / "refs" / "main"));
  // Every file after the first is asked for at the resolved commit.
  for (const auto& s : hub_.seen) {
    if (absl::StartsWith(s.url, kHub) && s.url.find("config.json") == std::string::npos) {
      EXPECT_THAT(s.url, HasSubstr("/resolve/" + kCommitV1 + "/"));
    }
  }
  EXPECT_EQ(FindCachedModel(ref, cache_.string()).value(), m.dir);
  ModelRef by_commit = ParseModelName("new-org/tiny@" + kCommitV1).value();
  EXPECT_EQ(FindCachedModel(by_commit, cache_.string()).value(), m.dir);
}

TEST_F(HubDownloadTest, FindsATransformersCacheUnderTheOldName) {
  // transformers' from_pretrained("gpt2") caches under models--gpt2.
  const fs::path snap = cache_ / "models--gpt2" / "snapshots" / kCommitMain;
  fs::create_directories(snap);
  fs::create_directories(cache_ / "models--gpt2" / "refs");
  std::ofstream(cache_ / "models--gpt2" / "refs" / "main") << kCommitMain;
  std::ofstream(snap / "config.json") << "{}";
  std::ofstream(snap / "model.safetensors") << "x";
  EXPECT_EQ(FindCachedModel(ParseModelName("gpt2").value(), cache_.string()).value(),
            snap.string());
  ResolveOptions options{.offline = true, .cache_dir = cache_.string(), .http = &hub_};
  EXPECT_EQ(ResolveModelDir("gpt2", options).value(), snap.string());
  EXPECT_TRUE(hub_.seen.empty());
}

TEST_F(HubDownloadTest, ResolveModelDir) {
  ResolveOptions offline{.offline = true, .cache_dir = cache_.string(), .http = &hub_};
  // A directory is a directory.
  fs::create_directories(cache_ / "dir");
  EXPECT_EQ(ResolveModelDir((cache_ / "dir").string(), offline).value(), (cache_ / "dir").string());
  EXPECT_EQ(ResolveModelDir((cache_ / "nope").string(), offline).status().code(),
            absl::StatusCode::kNotFound);
  // Offline with an empty cache: a clear error with the way out.
  absl::StatusOr<std::string> missing = ResolveModelDir("new-org/tiny", offline);
  ASSERT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("offline"));
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("--model DIR"));
  EXPECT_TRUE(hub_.seen.empty());
  // Online: pulled once, then found in the cache without asking the Hub.
  ::unsetenv("HF_ENDPOINT");
  ::unsetenv("HF_HUB_OFFLINE");
  ::unsetenv("LENSGRID_OFFLINE");
  ResolveOptions online{.cache_dir = cache_.string(), .http = &hub_};
  const std::string dir = ResolveModelDir("new-org/tiny", online).value();
  EXPECT_EQ(ReadFile(dir + "/model.safetensors"), Weights());
  hub_.seen.clear();
  EXPECT_EQ(ResolveModelDir("new-org/tiny", online).value(), dir);
  EXPECT_EQ(ResolveModelDir("new-org/tiny", offline).value(), dir);
  EXPECT_TRUE(hub_.seen.empty());
}

}  // namespace
}  // namespace lensgrid::hub
