// The Hub's conventions as pure functions: names, URLs, cache paths, headers,
// the redirect and token rules. No sockets, no files.
#include "client/hub/hf_hub.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lensgrid::hub {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ParseModelName, CanonicalGpt2NamesFollowTheHubsRename) {
  ModelRef ref = ParseModelName("gpt2").value();
  EXPECT_EQ(ref.repo_id, "openai-community/gpt2");
  EXPECT_EQ(ref.revision, "main");
  EXPECT_THAT(ref.cache_aliases, ElementsAre("gpt2"));
  EXPECT_EQ(ParseModelName("gpt2-xl").value().repo_id, "openai-community/gpt2-xl");
  EXPECT_EQ(ParseModelName("distilgpt2").value().repo_id, "distilbert/distilgpt2");
}

TEST(ParseModelName, OrgNameAndRevision) {
  ModelRef ref = ParseModelName("EleutherAI/pythia-70m@v1.0").value();
  EXPECT_EQ(ref.repo_id, "EleutherAI/pythia-70m");
  EXPECT_EQ(ref.revision, "v1.0");
  EXPECT_TRUE(ref.cache_aliases.empty());
  EXPECT_EQ(ParseModelName("a/b@v1", "dev").value().revision, "dev");  // --revision wins
  EXPECT_EQ(ParseModelName("gpt2", "abc").value().revision, "abc");
}

TEST(ParseModelName, RejectsWhatIsNotARepoId) {
  for (const char* bad : {"", "gpt3", "a/b/c", "/abs", "../x/y", "a/", "/b", "a/b@", "a/..",
                          "a--b/c", "a/b c", "a/b@../../etc"}) {
    EXPECT_FALSE(ParseModelName(bad).ok()) << bad;
  }
  EXPECT_THAT(std::string(ParseModelName("gpt3").status().message()),
              HasSubstr("existing model dir"));
}

TEST(IsCommitHash, FortyHexDigits) {
  EXPECT_TRUE(IsCommitHash("607a30d783dfa663caf39e06633721c8d4cfcd7e"));
  EXPECT_FALSE(IsCommitHash("main"));
  EXPECT_FALSE(IsCommitHash("607a30d783dfa663caf39e06633721c8d4cfcd7"));
  EXPECT_FALSE(IsCommitHash("607a30d783dfa663caf39e06633721c8d4cfcd7g"));
}

TEST(SettingsFromEnvironment, DefaultsAsHuggingfaceHub) {
  auto env = [](std::map<std::string, std::string> m) {
    return [m](const char* name) -> const char* {
      auto it = m.find(name);
      return it == m.end() ? nullptr : it->second.c_str();
    };
  };
  HubSettings s = SettingsFromEnvironment(env({{"HOME", "/h"}}));
  EXPECT_EQ(s.endpoint, "https://huggingface.co");
  EXPECT_EQ(s.cache_dir, "/h/.cache/huggingface/hub");
  EXPECT_TRUE(s.token.empty());
  EXPECT_FALSE(s.offline);
  s = SettingsFromEnvironment(env({{"HOME", "/h"}, {"XDG_CACHE_HOME", "/x"}}));
  EXPECT_EQ(s.cache_dir, "/x/huggingface/hub");
  s = SettingsFromEnvironment(env({{"HF_HOME", "/hf"}, {"XDG_CACHE_HOME", "/x"}}));
  EXPECT_EQ(s.cache_dir, "/hf/hub");
  s = SettingsFromEnvironment(env({{"HF_HOME", "/hf"},
                                   {"HF_HUB_CACHE", "/c"},
                                   {"HF_ENDPOINT", "http://127.0.0.1:8/"},
                                   {"HF_TOKEN", " hf_x \n"},
                                   {"LENSGRID_OFFLINE", "1"}}));
  EXPECT_EQ(s.cache_dir, "/c");
  EXPECT_EQ(s.endpoint, "http://127.0.0.1:8");
  EXPECT_EQ(s.token, "hf_x");
  EXPECT_TRUE(s.offline);
  EXPECT_TRUE(SettingsFromEnvironment(env({{"HF_HUB_OFFLINE", "true"}})).offline);
  EXPECT_FALSE(SettingsFromEnvironment(env({{"HF_HUB_OFFLINE", "0"}})).offline);
}

TEST(ResolveUrl, HubLayoutWithEncodedRevision) {
  ModelRef ref = ParseModelName("gpt2").value();
  EXPECT_EQ(ResolveUrl("https://huggingface.co", ref, "config.json"),
            "https://huggingface.co/openai-community/gpt2/resolve/main/config.json");
  ref.revision = "refs/pr/1";
  EXPECT_EQ(ResolveUrl("http://m:1/", ref, "onnx/model a.onnx"),
            "http://m:1/openai-community/gpt2/resolve/refs%2Fpr%2F1/onnx/model%20a.onnx");
}

TEST(RepoCacheDir, DoubleDashes) {
  EXPECT_EQ(RepoCacheDir("/c", "openai-community/gpt2"), "/c/models--openai-community--gpt2");
  EXPECT_EQ(RepoCacheDir("/c", "gpt2"), "/c/models--gpt2");
}

TEST(Etags, NormalizedAndLfs) {
  EXPECT_EQ(NormalizeEtag("\"abc\""), "abc");
  EXPECT_EQ(NormalizeEtag("W/\"abc\""), "abc");
  const std::string sha(64, 'A');
  EXPECT_EQ(LfsSha256(sha).value(), std::string(64, 'a'));
  EXPECT_FALSE(LfsSha256("607a30d783dfa663caf39e06633721c8d4cfcd7e").has_value());
}

TEST(ParseHeaderLine, CurlLines) {
  std::string n, v;
  EXPECT_TRUE(ParseHeaderLine("X-Repo-Commit:  abc \r\n", &n, &v));
  EXPECT_EQ(n, "X-Repo-Commit");
  EXPECT_EQ(v, "abc");
  EXPECT_FALSE(ParseHeaderLine("HTTP/1.1 302 Found\r\n", &n, &v));
  EXPECT_FALSE(ParseHeaderLine("\r\n", &n, &v));
}

TEST(ParseFileMetadata, RedirectToCdnUsesLinkedHeaders) {
  Headers h;
  h.Add("x-repo-commit", std::string(40, 'c'));
  h.Add("ETag", "\"" + std::string(40, 'e') + "\"");
  h.Add("X-Linked-Etag", "\"" + std::string(64, 'f') + "\"");
  h.Add("X-Linked-Size", "548105171");
  h.Add("Content-Length", "1234");  // of the redirect body: not the file
  h.Add("Location", "https://cdn-lfs.hf.co/repos/x?sig=1");
  FileMetadata m = ParseFileMetadata(302, h, "https://huggingface.co/a/b/resolve/main/f").value();
  EXPECT_EQ(m.commit, std::string(40, 'c'));
  EXPECT_EQ(m.etag, std::string(64, 'f'));
  EXPECT_EQ(m.size.value(), 548105171);
  EXPECT_EQ(m.location, "https://cdn-lfs.hf.co/repos/x?sig=1");
}

TEST(ParseFileMetadata, PlainAnswerUsesEtagAndLength) {
  Headers h;
  h.Add("X-Repo-Commit", std::string(40, 'c'));
  h.Add("ETag", "W/\"abc\"");
  h.Add("Content-Length", "665");
  FileMetadata m = ParseFileMetadata(200, h, "http://m/a/b/resolve/main/config.json").value();
  EXPECT_EQ(m.etag, "abc");
  EXPECT_EQ(m.size.value(), 665);
  EXPECT_EQ(m.location, "http://m/a/b/resolve/main/config.json");
}

TEST(ParseFileMetadata, NotAHub) {
  Headers h;
  h.Add("ETag", "\"abc\"");
  EXPECT_THAT(std::string(ParseFileMetadata(200, h, "http://x/y").status().message()),
              HasSubstr("X-Repo-Commit"));
  Headers evil;
  evil.Add("X-Repo-Commit", std::string(40, 'c'));
  evil.Add("ETag", "\"../../x\"");
  EXPECT_FALSE(ParseFileMetadata(200, evil, "http://x/y").ok());
}

TEST(Redirects, RelativeOnlyForHead) {
  EXPECT_TRUE(IsRelativeRedirect("/openai-community/gpt2/resolve/main/config.json"));
  EXPECT_FALSE(IsRelativeRedirect("https://cdn-lfs.hf.co/x"));
  EXPECT_FALSE(IsRelativeRedirect("//cdn/x"));
  EXPECT_EQ(ResolveLocation("http://h:1/gpt2/resolve/main/c.json", "/o/gpt2/resolve/main/c.json"),
            "http://h:1/o/gpt2/resolve/main/c.json");
  EXPECT_EQ(ResolveLocation("http://h:1/a/b?x=1", "c"), "http://h:1/a/c");
  EXPECT_EQ(ResolveLocation("https://h/a", "//cdn/x"), "https://cdn/x");
  EXPECT_EQ(ResolveLocation("http://h/a", "http://cdn:2/x"), "http://cdn:2/x");
}

TEST(MaySendToken, OnlyToTheEndpointsOrigin) {
  EXPECT_TRUE(MaySendToken("https://huggingface.co", "https://huggingface.co/a/b/resolve/m/f"));
  EXPECT_TRUE(MaySendToken("https://HuggingFace.co", "https://huggingface.co/x"));
  EXPECT_FALSE(MaySendToken("https://huggingface.co", "https://cdn-lfs.huggingface.co/x"));
  EXPECT_FALSE(MaySendToken("http://127.0.0.1:8000", "http://127.0.0.1:8001/x"));
  EXPECT_FALSE(MaySendToken("https://huggingface.co", "http://huggingface.co/x"));
  EXPECT_FALSE(MaySendToken("https://huggingface.co", "https://huggingface.co.evil/x"));
  EXPECT_FALSE(MaySendToken("https://huggingface.co", "https://evil@huggingface.co.x/"));
  EXPECT_FALSE(MaySendToken("https://huggingface.co", "/relative"));
}

TEST(ContentRangeStart, Parses) {
  EXPECT_EQ(ContentRangeStart("bytes 100-199/200").value(), 100);
  EXPECT_FALSE(ContentRangeStart("bytes */200").has_value());
  EXPECT_FALSE(ContentRangeStart("items 1-2/3").has_value());
}

TEST(IsSafeRelativeFile, NoEscapes) {
  EXPECT_TRUE(IsSafeRelativeFile("model-00001-of-00002.safetensors"));
  EXPECT_TRUE(IsSafeRelativeFile("onnx/model.onnx"));
  for (const char* bad : {"", "/etc/passwd", "../x", "a/../../x", "a//b", "a\\b", "./a"}) {
    EXPECT_FALSE(IsSafeRelativeFile(bad)) << bad;
  }
}

}  // namespace
}  // namespace lensgrid::hub
