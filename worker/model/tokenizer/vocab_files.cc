#include "worker/model/tokenizer/vocab_files.h"

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"

namespace lensgrid {
namespace {

// Debian's Abseil has its own string_view type
// (ABSL_OPTION_USE_STD_STRING_VIEW=0).
absl::string_view AsAbsl(std::string_view text) { return {text.data(), text.size()}; }

}  // namespace

absl::StatusOr<Vocab> ParseVocabJson(std::string_view contents, std::string_view file_name) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(contents.begin(), contents.end());
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(AsAbsl(file_name), ": invalid JSON: ", e.what()));
  }
  if (!json.is_object() || json.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        AsAbsl(file_name), ": expected a non-empty JSON object {\"token\": id, ...}, got ",
        json.type_name()));
  }
  Vocab vocab;
  vocab.reserve(json.size());
  absl::flat_hash_map<int32_t, std::string> spelling_of;
  spelling_of.reserve(json.size());
  for (const auto& [spelling, value] : json.items()) {
    const bool is_int = value.is_number_integer();
    const int64_t id = is_int ? value.get<int64_t>() : -1;
    if (!is_int || id < 0 || id > kMaxVocabId) {
      return absl::InvalidArgumentError(
          absl::StrCat(AsAbsl(file_name), ": token ", nlohmann::json(spelling).dump(), " has id ",
                       value.dump(), "; ids must be integers in [0, ", kMaxVocabId, "]"));
    }
    auto [it, inserted] = spelling_of.emplace(static_cast<int32_t>(id), spelling);
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat(
          AsAbsl(file_name), ": id ", id, " is used by both ", nlohmann::json(it->second).dump(),
          " and ", nlohmann::json(spelling).dump()));
    }
    vocab.emplace(spelling, static_cast<int32_t>(id));
  }
  return vocab;
}

absl::StatusOr<std::vector<MergeLine>> ParseMerges(std::string_view contents,
                                                   std::string_view file_name) {
  std::vector<MergeLine> merges;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(AsAbsl(contents), '\n')) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || absl::StartsWith(line, "#version")) continue;
    std::vector<absl::string_view> parts = absl::StrSplit(line, ' ');
    if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          AsAbsl(file_name), ":", line_number, ": expected two tokens separated by one space, got ",
          nlohmann::json(std::string(line))
              .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
    }
    merges.push_back({std::string(parts[0]), std::string(parts[1]), line_number});
  }
  return merges;
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading ", path));
  return contents.str();
}

}  // namespace lensgrid
