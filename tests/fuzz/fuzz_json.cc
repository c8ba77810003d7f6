// Fuzz target: JSON from the network (client_json, JSONL prompts) or from
// disk (config.json, a safetensors header), through
// ParseJsonBounded, the depth-checked parser every such input goes through.
// Properties: no crash or escaping exception; whatever it accepts nests no
// deeper than the limit (the linear pre-scan never under-counts), and can be
// dumped (dump() recurses) and parsed back to an equal value.
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
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
