// The model id workers register with and jobs name: the coordinator gives a
// job's shards only to workers serving its model id (and, once the job is
// pinned, the same weights sha256). A client names only the id; the weights
// hash pins the weights, the id says which model and how it is used
// (processed as TransformerLens's from_pretrained, or raw with
// "+no-processing", which changes some results: direct logit attribution,
// for one). `lensgrid-worker --model-id` overrides the default.
#ifndef LENSGRID_COMMON_MODEL_ID_H_
#define LENSGRID_COMMON_MODEL_ID_H_

#include <filesystem>
#include <string>
#include <system_error>

namespace lensgrid {

// The id a worker serves `--model FLAG` under by default: the name of the
// model directory ("models/lensgrid-tiny/" -> "lensgrid-tiny"), or the Hub
// name as given ("gpt2", "ORG/NAME"), plus "+no-processing" for raw weights.
inline std::string DefaultModelId(const std::string& model_flag, bool processed) {
  namespace fs = std::filesystem;
  std::error_code error;
  std::string id = model_flag;
  if (fs::is_directory(model_flag, error)) {
    fs::path path = fs::path(model_flag).lexically_normal();
    if (path.filename().empty()) path = path.parent_path();  // "dir/" -> "dir"
    if (path.filename().empty() || path.filename() == "." || path.filename() == "..") {
      path = fs::absolute(path, error).lexically_normal();
    }
    id = path.filename().string();
  }
  return processed ? id : id + "+no-processing";
}

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_MODEL_ID_H_
