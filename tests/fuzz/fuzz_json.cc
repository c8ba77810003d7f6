// Fuzz target: JSON from the network (client_json, JSONL prompts) or from
// disk (config.json, a safetensors header, a sharded checkpoint's index),
// through ParseJsonBounded, the depth-checked parser every such input goes
// through, and ParseCheckpointIndex. Properties: no crash or escaping
// exception; whatever it accepts nests no deeper than the limit (the linear
// pre-scan never under-counts), and can be dumped (dump() recurses) and
// parsed back to an equal value; an index it accepts names only files inside
// the model dir, each once, and maps at least one tensor.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "common/checkpoint_files.h"
#include "common/json_limits.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

// Depth of a parsed value without recursion (the point is deep values).
int Depth(const nlohmann::json& root) {
  int deepest = 0;
  std::vector<std::pair<const nlohmann::json*, int>> stack{{&root, 0}};
  while (!stack.empty()) {
    auto [value, depth] = stack.back();
    stack.pop_back();
    if (!value->is_structured()) continue;
    deepest = std::max(deepest, depth + 1);
    for (const auto& child : *value) stack.push_back({&child, depth + 1});
  }
  return deepest;
}

void CheckIndex(absl::string_view text) {
  auto index = lensgrid::ParseCheckpointIndex("/models/m", text, "fuzz.index.json");
  if (!index.ok()) {
    FUZZ_CHECK(index.status().code() == absl::StatusCode::kInvalidArgument &&
                   absl::StartsWith(index.status().message(), "fuzz.index.json: "),
               "a bad index is INVALID_ARGUMENT naming the file");
    return;
  }
  FUZZ_CHECK(index->sharded() && !index->files.empty(), "an accepted index maps a tensor");
  for (size_t i = 0; i < index->files.size(); ++i) {
    FUZZ_CHECK(lensgrid::IsSafeRelativeFile(index->files[i]), "every shard is inside the dir");
    FUZZ_CHECK(i == 0 || index->files[i - 1] < index->files[i], "shards sorted, each once");
  }
  for (const auto& [tensor, file] : index->weight_map) {
    FUZZ_CHECK(std::binary_search(index->files.begin(), index->files.end(), file),
               "every mapped file is a shard");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  CheckIndex(text);
  auto parsed = lensgrid::ParseJsonBounded(text, "fuzz spec");
  if (!parsed.ok()) {
    FUZZ_CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument,
               "bad JSON is INVALID_ARGUMENT");
    return 0;
  }
  FUZZ_CHECK(Depth(*parsed) <= lensgrid::kMaxJsonDepth, "accepted JSON nests within the limit");
  const std::string dumped = parsed->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  auto again = lensgrid::ParseJsonBounded(dumped, "dumped");
  FUZZ_CHECK(again.ok(), "what we dump, we parse");
  // NaN cannot appear in JSON, so equality is well defined.
  FUZZ_CHECK(*again == *parsed, "dump + parse is the identity");
  return 0;
}
