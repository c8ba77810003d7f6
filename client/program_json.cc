#include "client/program_json.h"

#include <google/protobuf/util/json_util.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/json_limits.h"
#include "nlohmann/json.hpp"

namespace lensgrid {

absl::StatusOr<std::vector<v1::HookProgram>> ParseProgramsJson(const std::string& json,
                                                               const std::string& source) {
  absl::StatusOr<nlohmann::json> parsed = ParseJsonBounded(json, source);
  if (!parsed.ok()) return parsed.status();
  nlohmann::json doc = *std::move(parsed);
  if (doc.is_object() && doc.contains("programs")) doc = doc["programs"];
  if (doc.is_object()) doc = nlohmann::json::array({doc});
  if (!doc.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": expected a HookProgram object, an array of them or {\"programs\": [...]}"));
  }
  std::vector<v1::HookProgram> programs;
  for (size_t i = 0; i < doc.size(); ++i) {
    v1::HookProgram program;
    const google::protobuf::util::Status status =
        google::protobuf::util::JsonStringToMessage(doc[i].dump(), &program);
    if (!status.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": programs[", i, "]: ", std::string(status.message())));
    }
    programs.push_back(std::move(program));
  }
  return programs;
}

absl::StatusOr<std::vector<v1::HookProgram>> ReadProgramsJson(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the program file ", path));
  std::ostringstream text;
  text << in.rdbuf();
  return ParseProgramsJson(text.str(), path);
}

}  // namespace lensgrid
