// The weights files of a Hugging Face model dir and the identity lensgrid
// gives them. Either one `model.safetensors`, or a sharded checkpoint:
// `model.safetensors.index.json` whose "weight_map" names each tensor's shard
// file (`model-00001-of-00003.safetensors`, ...), as transformers' save_pretrained
// writes one past its shard size. LibTorch-free: the worker loads the files
// (worker/model/weights.h); clients compute the same identity to pin a job
// to a model or check what a worker serves.
//
//   LG_ASSIGN_OR_RETURN(Checkpoint c, FindCheckpoint(dir));
//   c.files       // {"model.safetensors"}, or every shard the index names, sorted
//   c.weight_map  // sharded: tensor name -> shard file; empty for one file
//   LG_ASSIGN_OR_RETURN(std::string sha, CheckpointSha256(c));
//
// The identity (ModelInfo.weights_sha256, JobSpec.weights_sha256): for one
// file, the SHA-256 of model.safetensors (what `sha256sum` prints); for a
// sharded checkpoint, the SHA-256 of the text
//   "lensgrid sharded safetensors v1\n"
//   "model.safetensors.index.json <its sha256>\n"
//   "<shard> <its sha256>\n"  (one line per shard, sorted by name)
// so that any change to the index or a shard is another identity.
#ifndef LENSGRID_COMMON_CHECKPOINT_FILES_H_
#define LENSGRID_COMMON_CHECKPOINT_FILES_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace lensgrid {

inline constexpr char kSingleWeightsFile[] = "model.safetensors";
inline constexpr char kWeightsIndexFile[] = "model.safetensors.index.json";

struct Checkpoint {
  std::string dir;
  std::vector<std::string> files;                 // relative to dir; sorted
  std::map<std::string, std::string> weight_map;  // sharded only: tensor -> file
  bool sharded() const { return !weight_map.empty(); }
  std::string Path(absl::string_view file) const;  // dir/file
  // What errors name: the one file, or dir/model.safetensors.index.json.
  std::string Describe() const;
};

// The checkpoint in `dir`: model.safetensors when it exists (as transformers
// prefers it), else the index and the shards it names, each of which must
// exist. NOT_FOUND when dir has neither file or a shard is missing;
// INVALID_ARGUMENT (naming the file) for an index that is not JSON, has no
// "weight_map" object, maps a tensor to something other than a file name, or
// names a file outside dir.
absl::StatusOr<Checkpoint> FindCheckpoint(const std::string& dir);

// The index's text parsed, without touching the disk (FindCheckpoint then
// checks that the shards exist). `source` names the index in errors.
absl::StatusOr<Checkpoint> ParseCheckpointIndex(const std::string& dir, absl::string_view json,
                                                absl::string_view source);

// dir/model.safetensors.index.json read and parsed (ParseCheckpointIndex's
// errors; PERMISSION_DENIED when it cannot be read), without checking that
// the shards exist: what a download reads to know which shards to fetch.
absl::StatusOr<Checkpoint> ReadCheckpointIndex(const std::string& dir);

// The checkpoint's identity (above); reads every file.
absl::StatusOr<std::string> CheckpointSha256(const Checkpoint& checkpoint);

// A relative path that stays inside its dir: not empty, not absolute, no
// backslash, no empty, "." or ".." part. Names from a repo or an index pass
// it before they become paths.
bool IsSafeRelativeFile(absl::string_view file);

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_CHECKPOINT_FILES_H_
