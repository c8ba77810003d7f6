#include "client/tokenize_command.h"

#include <CLI/CLI.hpp>
#include <cstdint>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/hub/hub_download.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "worker/model/tokenizer/tokenizer.h"

namespace lensgrid {
namespace {

struct Options {
  std::string model_dir;
  std::string tokenizer_dir;
  bool jsonl = false;
  bool decode = false;
  std::vector<std::string> texts;
};

// Ids written as "5,17,300", or separated by any mix of commas and whitespace.
absl::StatusOr<std::vector<int64_t>> ParseIds(const std::string& text) {
  std::vector<int64_t> ids;
  for (absl::string_view field :
       absl::StrSplit(text, absl::ByAnyChar(", \t\r\n"), absl::SkipEmpty())) {
    int64_t id;
    if (!absl::SimpleAtoi(field, &id)) {
      return absl::InvalidArgumentError(absl::StrCat("not a token id: \"", field, "\""));
    }
    ids.push_back(id);
  }
  return ids;
}

std::string JsonString(const std::string& text) {
  return nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// One output line for one input text or id list.
absl::StatusOr<std::string> Convert(const Tokenizer& tokenizer, const Options& options,
                                    const std::string& input) {
  if (options.decode) {
    LG_ASSIGN_OR_RETURN(std::vector<int64_t> ids, ParseIds(input));
    LG_ASSIGN_OR_RETURN(std::string text, tokenizer.Decode(ids));
    return text;
  }
  return absl::StrJoin(tokenizer.Encode(input), ",");
}

// One output line for one JSONL input line.
absl::StatusOr<std::string> ConvertJsonLine(const Tokenizer& tokenizer, const Options& options,
                                            const std::string& line) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("invalid JSON: ", e.what()));
  }
  if (options.decode) {
    if (!json.is_array()) {
      return absl::InvalidArgumentError("expected a JSON array of token ids");
    }
    std::vector<int64_t> ids;
    ids.reserve(json.size());
    for (const nlohmann::json& id : json) {
      if (!id.is_number_integer()) {
        return absl::InvalidArgumentError(absl::StrCat("not a token id: ", id.dump()));
      }
      ids.push_back(id.get<int64_t>());
    }
    LG_ASSIGN_OR_RETURN(std::string text, tokenizer.Decode(ids));
    return JsonString(text);
  }
  if (!json.is_string()) {
    return absl::InvalidArgumentError("expected a JSON string");
  }
  return absl::StrCat("[", absl::StrJoin(tokenizer.Encode(json.get_ref<const std::string&>()), ","),
                      "]");
}

int RunJsonl(const Tokenizer& tokenizer, const Options& options, std::istream& in,
             std::ostream& out, std::ostream& err) {
  std::string line, buffer;
  int line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    absl::StatusOr<std::string> converted = ConvertJsonLine(tokenizer, options, line);
    if (!converted.ok()) {
      out << buffer << std::flush;
      err << "lensgrid tokenize: stdin:" << line_number << ": " << converted.status().message()
          << "\n";
      return 1;
    }
    absl::StrAppend(&buffer, *converted, "\n");
    if (buffer.size() >= (1 << 16)) {
      out << buffer;
      buffer.clear();
    }
  }
  out << buffer << std::flush;
  return 0;
}

}  // namespace

int RunTokenizeCommand(int argc, char** argv, std::istream& in, std::ostream& out,
                       std::ostream& err) {
  Options options;
  CLI::App app{"GPT-2 token ids of text (or, with --decode, text of ids).", "lensgrid tokenize"};
  CLI::Option* model = app.add_option("--model", options.model_dir,
                                      "Model dir (its vocab.json + merges.txt, "
                                      "else GPT-2's default files) or name (gpt2, "
                                      "ORG/NAME[@REV]: from the Hub's cache, "
                                      "pulled if absent)")
                           ->type_name("DIR|NAME");
  bool offline = false;
  app.add_flag("--offline", offline,
               "Never download: a model name must be in the cache (also "
               "LENSGRID_OFFLINE=1)");
  CLI::Option* tokenizer_dir =
      app.add_option("--tokenizer", options.tokenizer_dir,
                     "Dir with vocab.json + merges.txt, or encoder.json + vocab.bpe")
          ->type_name("DIR");
  model->excludes(tokenizer_dir);
  app.add_flag("--jsonl", options.jsonl,
               "Read one JSON string per stdin line, print one JSON array of "
               "ids per line");
  app.add_flag("--decode", options.decode,
               "Turn ids back into text (with --jsonl: JSON arrays in, JSON "
               "strings out)");
  app.add_option("text", options.texts,
                 "Texts to encode, one output line each (ids with --decode); "
                 "none: read stdin");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e, out, err);
  }
  if (options.model_dir.empty() == options.tokenizer_dir.empty()) {
    err << "lensgrid tokenize: give exactly one of --model DIR or --tokenizer "
           "DIR\n";
    return 2;
  }
  if (options.jsonl && !options.texts.empty()) {
    err << "lensgrid tokenize: --jsonl reads stdin; give no TEXT arguments\n";
    return 2;
  }

  if (absl::Status s = hub::ResolveModelFlag(&options.model_dir, offline, &err); !s.ok()) {
    err << "lensgrid tokenize: " << s << "\n";
    return 1;
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      options.model_dir.empty() ? LoadTokenizerFromDir(options.tokenizer_dir)
                                : LoadTokenizerForModel(options.model_dir);
  if (!tokenizer.ok()) {
    err << "lensgrid tokenize: " << tokenizer.status() << "\n";
    return 1;
  }
  if (options.jsonl) return RunJsonl(**tokenizer, options, in, out, err);

  if (options.texts.empty()) {
    options.texts.emplace_back(std::istreambuf_iterator<char>(in),
                               std::istreambuf_iterator<char>());
  }
  for (const std::string& text : options.texts) {
    absl::StatusOr<std::string> converted = Convert(**tokenizer, options, text);
    if (!converted.ok()) {
      err << "lensgrid tokenize: " << converted.status().message() << "\n";
      return 1;
    }
    out << *converted << "\n";
  }
  out << std::flush;
  return 0;
}

int RunTokenizeCommand(int argc, char** argv) {
  std::ios::sync_with_stdio(false);
  return RunTokenizeCommand(argc, argv, std::cin, std::cout, std::cerr);
}

}  // namespace lensgrid
