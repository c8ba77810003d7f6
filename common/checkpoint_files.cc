#include "common/checkpoint_files.h"

#include <sys/stat.h>

#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/json_limits.h"
#include "common/sha256.h"
#include "common/status_macros.h"

namespace lensgrid {
namespace {

bool IsRegularFile(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// An index is a few hundred bytes per tensor: far below this.
constexpr int64_t kMaxIndexBytes = int64_t{64} << 20;

}  // namespace

std::string Checkpoint::Path(absl::string_view file) const { return absl::StrCat(dir, "/", file); }

std::string Checkpoint::Describe() const {
  if (sharded()) return Path(kWeightsIndexFile);
  return Path(files.empty() ? kSingleWeightsFile : files.front());
}

bool IsSafeRelativeFile(absl::string_view file) {
  if (file.empty() || absl::StartsWith(file, "/") || absl::StrContains(file, "\\") ||
      absl::StrContains(file, absl::string_view("\0", 1))) {
    return false;
  }
  for (absl::string_view part : absl::StrSplit(file, '/')) {
    if (part.empty() || part == "." || part == "..") return false;
  }
  return true;
}

absl::StatusOr<Checkpoint> ParseCheckpointIndex(const std::string& dir, absl::string_view json,
                                                absl::string_view source) {
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
  };
  auto parsed = ParseJsonBounded(json, "the index");
  if (!parsed.ok()) return bad(std::string(parsed.status().message()));
  if (!parsed->is_object()) return bad("not a JSON object");
  auto map = parsed->find("weight_map");
  if (map == parsed->end() || !map->is_object()) {
    return bad("no \"weight_map\" object (tensor name -> shard file)");
  }
  if (map->empty()) return bad("\"weight_map\" names no tensor");
  Checkpoint c;
  c.dir = dir;
  std::set<std::string> files;
  for (const auto& [tensor, file] : map->items()) {
    if (!file.is_string()) {
      return bad(absl::StrCat("\"weight_map\": \"", tensor, "\" maps to ",
                              file.dump().substr(0, 80), ", not a file name"));
    }
    const std::string name = file.get<std::string>();
    if (!IsSafeRelativeFile(name)) {
      return bad(absl::StrCat("\"weight_map\": \"", tensor, "\" maps to \"", name.substr(0, 120),
                              "\", which is not a file inside the model dir"));
    }
    c.weight_map[tensor] = name;
    files.insert(name);
  }
  c.files.assign(files.begin(), files.end());
  return c;
}

absl::StatusOr<Checkpoint> ReadCheckpointIndex(const std::string& dir) {
  const std::string index_path = absl::StrCat(dir, "/", kWeightsIndexFile);
  std::ifstream in(index_path, std::ios::binary);
  std::ostringstream text;
  if (!in || !(text << in.rdbuf())) {
    return absl::PermissionDeniedError(absl::StrCat("cannot read ", index_path));
  }
  if (static_cast<int64_t>(text.str().size()) > kMaxIndexBytes) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": ", text.str().size(),
                                                   " bytes, over the ", kMaxIndexBytes,
                                                   " an index can need"));
  }
  return ParseCheckpointIndex(dir, text.str(), index_path);
}

absl::StatusOr<Checkpoint> FindCheckpoint(const std::string& dir) {
  Checkpoint single;
  single.dir = dir;
  if (IsRegularFile(single.Path(kSingleWeightsFile))) {
    single.files = {kSingleWeightsFile};
    return single;
  }
  if (!IsRegularFile(single.Path(kWeightsIndexFile))) {
    return absl::NotFoundError(absl::StrCat(dir, " has neither ", kSingleWeightsFile, " nor ",
                                            kWeightsIndexFile, " (a sharded checkpoint's index)"));
  }
  LG_ASSIGN_OR_RETURN(Checkpoint c, ReadCheckpointIndex(dir));
  for (const std::string& file : c.files) {
    if (!IsRegularFile(c.Path(file))) {
      return absl::NotFoundError(absl::StrCat(c.Describe(), " names the shard ", file,
                                              ", which is not in ", dir,
                                              " (an incomplete download? `lensgrid pull` again)"));
    }
  }
  return c;
}

absl::StatusOr<std::string> CheckpointSha256(const Checkpoint& checkpoint) {
  if (!checkpoint.sharded()) {
    if (checkpoint.files.size() != 1) {
      return absl::InvalidArgumentError("a checkpoint without an index is one file");
    }
    return Sha256FileHex(checkpoint.Path(checkpoint.files.front()));
  }
  LG_ASSIGN_OR_RETURN(std::string index, Sha256FileHex(checkpoint.Path(kWeightsIndexFile)));
  std::string text =
      absl::StrCat("lensgrid sharded safetensors v1\n", kWeightsIndexFile, " ", index, "\n");
  for (const std::string& file : checkpoint.files) {  // sorted
    LG_ASSIGN_OR_RETURN(std::string sha, Sha256FileHex(checkpoint.Path(file)));
    absl::StrAppend(&text, file, " ", sha, "\n");
  }
  return Sha256Hex(text);
}

}  // namespace lensgrid
