#include "client/hub/hf_hub.h"

#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/echo.h"

namespace lensgrid::hub {
namespace {

bool IsHex(absl::string_view s) {
  for (char c : s) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// The Hub's repo-name characters (huggingface_hub's validate_repo_id).
bool IsRepoPart(absl::string_view s) {
  if (s.empty() || s.size() > 96 || s == "." || s == "..") return false;
  if (absl::StartsWith(s, "-") || absl::StartsWith(s, ".")) return false;
  if (absl::StrContains(s, "--") || absl::StrContains(s, "..")) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      return false;
    }
  }
  return true;
}

bool IsTrue(const char* value) {
  if (value == nullptr) return false;
  const std::string v = absl::AsciiStrToLower(value);
  return v == "1" || v == "true" || v == "yes" || v == "on";
}

}  // namespace

absl::StatusOr<ModelRef> ParseModelName(absl::string_view name, absl::string_view revision) {
  ModelRef ref;
  absl::string_view repo = name;
  const size_t at = name.find('@');
  if (at != absl::string_view::npos) {
    repo = name.substr(0, at);
    ref.revision = std::string(name.substr(at + 1));
    if (ref.revision.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model name ", Echo(name), " has an empty revision after '@'"));
    }
  }
  if (!revision.empty()) ref.revision = std::string(revision);
  // The Hub moved its canonical models under organisations; it still answers
  // the old names with a relative redirect, and caches made by transformers
  // with the old name live under models--NAME.
  static const std::pair<const char*, const char*> kRenamed[] = {
      {"gpt2", "openai-community/gpt2"},
      {"gpt2-medium", "openai-community/gpt2-medium"},
      {"gpt2-large", "openai-community/gpt2-large"},
      {"gpt2-xl", "openai-community/gpt2-xl"},
      {"distilgpt2", "distilbert/distilgpt2"},
  };
  for (const auto& [old_name, new_name] : kRenamed) {
    if (repo == old_name) {
      ref.repo_id = new_name;
      ref.cache_aliases.push_back(old_name);
      break;
    }
  }
  if (ref.repo_id.empty()) {
    std::vector<absl::string_view> parts = absl::StrSplit(repo, '/');
    if (parts.size() != 2 || !IsRepoPart(parts[0]) || !IsRepoPart(parts[1])) {
      return absl::InvalidArgumentError(
          absl::StrCat("not a model name: ", Echo(name),
                       " (expected gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2 or ORG/NAME, "
                       "optionally @REVISION; or an existing model dir)"));
    }
    ref.repo_id = std::string(repo);
  }
  if (ref.revision.find("..") != std::string::npos || absl::StartsWith(ref.revision, "/") ||
      ref.revision.find('\\') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("not a revision: ", Echo(ref.revision)));
  }
  return ref;
}

bool IsCommitHash(absl::string_view revision) { return revision.size() == 40 && IsHex(revision); }

HubSettings SettingsFromEnvironment(const std::function<const char*(const char*)>& getenv_fn) {
  auto get = [&](const char* name) -> const char* {
    const char* v = getenv_fn ? getenv_fn(name) : std::getenv(name);
    return (v != nullptr && *v != '\0') ? v : nullptr;
  };
  HubSettings s;
  if (const char* e = get("HF_ENDPOINT")) s.endpoint = std::string(absl::StripSuffix(e, "/"));
  if (const char* t = get("HF_TOKEN")) {
    s.token = std::string(absl::StripAsciiWhitespace(t));
  } else if (const char* t2 = get("HUGGING_FACE_HUB_TOKEN")) {
    s.token = std::string(absl::StripAsciiWhitespace(t2));
  }
  if (const char* c = get("HF_HUB_CACHE")) {
    s.cache_dir = c;
  } else if (const char* c2 = get("HUGGINGFACE_HUB_CACHE")) {
    s.cache_dir = c2;
  } else {
    std::string home;
    if (const char* h = get("HF_HOME")) {
      home = h;
    } else if (const char* x = get("XDG_CACHE_HOME")) {
      home = absl::StrCat(x, "/huggingface");
    } else {
      const char* user_home = get("HOME");
      home = absl::StrCat(user_home != nullptr ? user_home : ".", "/.cache/huggingface");
    }
    s.cache_dir = home + "/hub";
  }
  s.offline = IsTrue(get("LENSGRID_OFFLINE")) || IsTrue(get("HF_HUB_OFFLINE"));
  return s;
}

std::string PercentEncode(absl::string_view text, bool keep_slash) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
        (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::string ResolveUrl(absl::string_view endpoint, const ModelRef& ref, absl::string_view file) {
  return absl::StrCat(absl::StripSuffix(endpoint, "/"), "/", ref.repo_id, "/resolve/",
                      PercentEncode(ref.revision, /*keep_slash=*/false), "/",
                      PercentEncode(file, /*keep_slash=*/true));
}

std::string RepoCacheDir(absl::string_view cache_dir, absl::string_view repo_id) {
  return absl::StrCat(cache_dir, "/models--", absl::StrJoin(absl::StrSplit(repo_id, '/'), "--"));
}

std::string NormalizeEtag(absl::string_view etag) {
  etag = absl::StripAsciiWhitespace(etag);
  absl::ConsumePrefix(&etag, "W/");
  absl::ConsumePrefix(&etag, "\"");
  absl::ConsumeSuffix(&etag, "\"");
  return std::string(etag);
}

std::optional<std::string> LfsSha256(absl::string_view etag) {
  if (etag.size() != 64 || !IsHex(etag)) return std::nullopt;
  return absl::AsciiStrToLower(etag);
}

void Headers::Add(std::string name, std::string value) {
  entries_.emplace_back(std::move(name), std::move(value));
}

std::optional<std::string> Headers::Get(absl::string_view name) const {
  for (const auto& [n, v] : entries_) {
    if (absl::EqualsIgnoreCase(n, name)) return v;
  }
  return std::nullopt;
}

bool ParseHeaderLine(absl::string_view line, std::string* name, std::string* value) {
  line = absl::StripSuffix(absl::StripSuffix(line, "\n"), "\r");
  const size_t colon = line.find(':');
  if (colon == absl::string_view::npos || colon == 0) return false;
  if (absl::StartsWith(line, "HTTP/")) return false;
  *name = std::string(absl::StripAsciiWhitespace(line.substr(0, colon)));
  *value = std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
  return true;
}

absl::StatusOr<FileMetadata> ParseFileMetadata(int status, const Headers& headers,
                                               absl::string_view url) {
  FileMetadata meta;
  const bool redirect = status >= 300 && status <= 399;
  meta.commit = headers.Get("X-Repo-Commit").value_or("");
  std::optional<std::string> etag = headers.Get("X-Linked-Etag");
  if (!etag) etag = headers.Get("ETag");
  meta.etag = etag ? NormalizeEtag(*etag) : "";
  const std::optional<std::string> location = headers.Get("Location");
  meta.location = location ? ResolveLocation(url, *location) : std::string(url);
  std::optional<std::string> size = headers.Get("X-Linked-Size");
  if (!size && !redirect) size = headers.Get("Content-Length");
  int64_t n = 0;
  if (size && absl::SimpleAtoi(*size, &n) && n >= 0) meta.size = n;
  if (meta.commit.empty() || meta.etag.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(url, " answered without ", meta.commit.empty() ? "X-Repo-Commit" : "an ETag",
                     ": is HF_ENDPOINT a Hugging Face Hub (or a mirror with its URL layout)?"));
  }
  if (meta.etag.find('/') != std::string::npos || meta.etag == "." || meta.etag == ".." ||
      !IsHex(meta.commit)) {
    return absl::InvalidArgumentError(
        absl::StrCat(url, " answered with a malformed ETag or X-Repo-Commit"));
  }
  return meta;
}

std::string UrlOrigin(absl::string_view url) {
  const size_t scheme_end = url.find("://");
  if (scheme_end == absl::string_view::npos) return "";
  const size_t host_end = url.find_first_of("/?#", scheme_end + 3);
  absl::string_view authority =
      url.substr(scheme_end + 3, host_end == absl::string_view::npos ? absl::string_view::npos
                                                                     : host_end - scheme_end - 3);
  // user:password@ never takes part in the origin.
  const size_t at = authority.rfind('@');
  if (at != absl::string_view::npos) authority = authority.substr(at + 1);
  return absl::AsciiStrToLower(absl::StrCat(url.substr(0, scheme_end), "://", authority));
}

bool IsRelativeRedirect(absl::string_view location) {
  return UrlOrigin(location).empty() && !absl::StartsWith(location, "//");
}

std::string ResolveLocation(absl::string_view url, absl::string_view location) {
  if (!UrlOrigin(location).empty()) return std::string(location);
  const std::string origin = UrlOrigin(url);
  if (absl::StartsWith(location, "//")) {
    return absl::StrCat(url.substr(0, url.find("://")), ":", location);
  }
  if (absl::StartsWith(location, "/")) return absl::StrCat(origin, location);
  absl::string_view path = url.substr(origin.size());
  path = path.substr(0, path.find_first_of("?#"));
  const size_t slash = path.rfind('/');
  return absl::StrCat(origin, slash == absl::string_view::npos ? "/" : path.substr(0, slash + 1),
                      location);
}

bool MaySendToken(absl::string_view endpoint, absl::string_view url) {
  const std::string origin = UrlOrigin(url);
  return !origin.empty() && origin == UrlOrigin(endpoint);
}

std::optional<int64_t> ContentRangeStart(absl::string_view content_range) {
  absl::string_view v = absl::StripAsciiWhitespace(content_range);
  if (!absl::ConsumePrefix(&v, "bytes ")) return std::nullopt;
  const size_t dash = v.find('-');
  int64_t start = 0;
  if (dash == absl::string_view::npos || !absl::SimpleAtoi(v.substr(0, dash), &start)) {
    return std::nullopt;
  }
  return start;
}

}  // namespace lensgrid::hub
