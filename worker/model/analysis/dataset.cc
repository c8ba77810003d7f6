#include "worker/model/analysis/dataset.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/json_limits.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "worker/model/analysis/ioi_templates.h"

namespace lensgrid {
namespace {

using Rng = std::mt19937_64;

int64_t Uniform(Rng& rng, int64_t lo, int64_t hi) {  // [lo, hi)
  return lo + static_cast<int64_t>(rng() % static_cast<uint64_t>(hi - lo));
}

std::vector<int64_t> WithBos(const HookedTransformerConfig& cfg, std::vector<int64_t> ids) {
  ids.insert(ids.begin(), cfg.bos_token_id);
  return ids;
}

// The words of `candidates` that are one token each (with their leading space).
std::vector<std::pair<std::string, int64_t>> SingleTokenWords(
    const Tokenizer& tok, const std::vector<std::string>& candidates) {
  std::vector<std::pair<std::string, int64_t>> out;
  for (const auto& w : candidates) {
    auto id = tok.ToSingleToken(w);
    if (id.ok()) out.emplace_back(w, *id);
  }
  return out;
}

absl::Status NeedTokenizer(const Tokenizer* tok, const std::string& dataset) {
  if (tok != nullptr) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("dataset \"", dataset, "\" is text: it needs tokenizer files"));
}

absl::Status NeedWords(const std::vector<std::pair<std::string, int64_t>>& words, size_t n,
                       const std::string& what) {
  if (words.size() >= n) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("the tokenizer has only ", words.size(), " single-token ", what, "; need ", n));
}

absl::StatusOr<Dataset> Induction(const DatasetSpec& spec, const HookedTransformerConfig& cfg) {
  if (spec.seq_len < 2 || spec.seq_len > (cfg.n_ctx - 1) / 2) {  // no 2 x seq_len: it overflows
    return absl::InvalidArgumentError(absl::StrCat("induction: seq_len ", spec.seq_len,
                                                   " needs 1 + 2 x seq_len <= n_positions (",
                                                   cfg.n_ctx, ") and seq_len >= 2"));
  }
  Rng rng(spec.seed);
  Dataset ds{"induction", {}};
  auto token = [&] {
    int64_t t;
    do t = Uniform(rng, 0, cfg.d_vocab);
    while (t == cfg.bos_token_id);
    return t;
  };
  for (int64_t i = 0; i < spec.n_prompts; ++i) {
    std::vector<int64_t> half(spec.seq_len), fresh(spec.seq_len);
    for (auto& t : half) t = token();
    for (auto& t : fresh) t = token();
    Prompt p;
    p.tokens = {cfg.bos_token_id};
    p.tokens.insert(p.tokens.end(), half.begin(), half.end());
    p.tokens.insert(p.tokens.end(), half.begin(), half.end() - 1);
    // Another repeated sequence: every position's token differs, so every edge that carries a
    // token (the induction head's query, its key through the previous-token head, its value)
    // differs between the runs; the corrupted run does induction on other tokens.
    p.corrupted_tokens = {cfg.bos_token_id};
    p.corrupted_tokens.insert(p.corrupted_tokens.end(), fresh.begin(), fresh.end());
    p.corrupted_tokens.insert(p.corrupted_tokens.end(), fresh.begin(), fresh.end() - 1);
    p.answers = {half.back()};
    int64_t wrong;
    do wrong = token();
    while (wrong == half.back());
    p.wrongs = {wrong};
    p.loss_start = spec.seq_len + 1;
    p.origin = absl::StrCat("induction #", i);
    ds.prompts.push_back(std::move(p));
  }
  return ds;
}

absl::StatusOr<Dataset> Ioi(const DatasetSpec& spec, const HookedTransformerConfig& cfg,
                            const Tokenizer* tok) {
  LG_RETURN_IF_ERROR(NeedTokenizer(tok, "ioi"));
  // Templates and words: analysis/ioi_templates.h (shared with training).
  auto names = SingleTokenWords(*tok, IoiNames());
  auto places = SingleTokenWords(*tok, IoiPlaces());
  auto objects = SingleTokenWords(*tok, IoiObjects());
  LG_RETURN_IF_ERROR(NeedWords(names, 5, "names"));
  LG_RETURN_IF_ERROR(NeedWords(places, 1, "places"));
  LG_RETURN_IF_ERROR(NeedWords(objects, 1, "objects"));
  Rng rng(spec.seed);
  Dataset ds{"ioi", {}};
  const auto& templates = IoiTemplates();
  for (int64_t i = 0; i < spec.n_prompts; ++i) {
    std::string t = templates[Uniform(rng, 0, templates.size())];
    if (rng() % 2 == 1) t = absl::StrReplaceAll(t, {{"[B] and [A]", "[A] and [B]"}});  // ABBA
    t = t.substr(0, t.rfind(" [A]"));
    std::vector<size_t> pick;  // five distinct names: A, B, and the corrupted C, D, E
    while (pick.size() < 5) {
      size_t n = Uniform(rng, 0, names.size());
      if (std::find(pick.begin(), pick.end(), n) == pick.end()) pick.push_back(n);
    }
    const auto& place = places[Uniform(rng, 0, places.size())].first;
    const auto& object = objects[Uniform(rng, 0, objects.size())].first;
    const auto& a = names[pick[0]];
    const auto& b = names[pick[1]];
    Prompt p;
    p.text = FillIoiTemplate(t, a.first, b.first, b.first, place, object);
    p.tokens = WithBos(cfg, tok->Encode(p.text));
    p.corrupted_tokens =
        WithBos(cfg, tok->Encode(FillIoiTemplate(t, names[pick[2]].first, names[pick[3]].first,
                                                 names[pick[4]].first, place, object)));
    p.answers = {a.second};
    p.wrongs = {b.second};
    p.origin = absl::StrCat("ioi #", i);
    ds.prompts.push_back(std::move(p));
  }
  return ds;
}

absl::StatusOr<Dataset> GenderBias(const DatasetSpec& spec, const HookedTransformerConfig& cfg,
                                   const Tokenizer* tok) {
  LG_RETURN_IF_ERROR(NeedTokenizer(tok, "gender-bias"));
  static const std::vector<std::string> kTemplates = {
      "The {} said that",         "The {} yelled that",
      "The {} whispered that",    "The {} wanted that",
      "The {} desired that",      "The {} wished that",
      "The {} ate because",       "The {} ran because",
      "The {} drove because",     "The {} slept because",
      "The {} cried because",     "The {} laughed because",
      "The {} went home because", "The {} stayed up because",
      "The {} was fired because", "The {} was promoted because",
      "The {} yelled because"};
  auto male = SingleTokenWords(
      *tok, {" mechanic", " carpenter", " engineer", " surgeon", " pilot", " plumber", " farmer",
             " guard", " driver", " builder", " soldier", " sheriff", " banker", " lawyer"});
  auto female =
      SingleTokenWords(*tok, {" nurse", " secretary", " receptionist", " librarian", " hairdresser",
                              " housekeeper", " dancer", " cashier", " maid", " nanny"});
  LG_RETURN_IF_ERROR(NeedWords(male, 1, "male-stereotyped professions"));
  LG_RETURN_IF_ERROR(NeedWords(female, 1, "female-stereotyped professions"));
  LG_ASSIGN_OR_RETURN(int64_t he, tok->ToSingleToken(" he"));
  LG_ASSIGN_OR_RETURN(int64_t she, tok->ToSingleToken(" she"));
  Rng rng(spec.seed);
  Dataset ds{"gender-bias", {}};
  for (int64_t i = 0; i < spec.n_prompts; ++i) {
    bool is_male = rng() % 2 == 0;
    const auto& pool = is_male ? male : female;
    const std::string& job = pool[Uniform(rng, 0, pool.size())].first;
    const std::string& t = kTemplates[Uniform(rng, 0, kTemplates.size())];
    Prompt p;
    p.text = absl::StrReplaceAll(t, {{" {}", job}});
    p.tokens = WithBos(cfg, tok->Encode(p.text));
    p.corrupted_tokens = WithBos(cfg, tok->Encode(absl::StrReplaceAll(t, {{" {}", " person"}})));
    p.answers = {is_male ? he : she};
    p.wrongs = {is_male ? she : he};
    p.origin = absl::StrCat("gender-bias #", i);
    ds.prompts.push_back(std::move(p));
  }
  return ds;
}

absl::StatusOr<Dataset> GreaterThan(const DatasetSpec& spec, const HookedTransformerConfig& cfg,
                                    const Tokenizer* tok) {
  LG_RETURN_IF_ERROR(NeedTokenizer(tok, "greater-than"));
  static const std::vector<std::string> kNouns = {
      "war",    "expedition", "drought", "famine",    "reign",      "dynasty", "journey", "siege",
      "strike", "trial",      "plague",  "rebellion", "occupation", "voyage",  "campaign"};
  std::vector<int64_t> year_token(100, -1);  // "00".."99"
  for (int yy = 0; yy < 100; ++yy) {
    auto id = tok->ToSingleToken(absl::StrCat(yy / 10, yy % 10));
    if (id.ok()) year_token[yy] = *id;
  }
  auto text = [](const std::string& noun, int yy) {
    return absl::StrCat("The ", noun, " lasted from the year 17", yy / 10, yy % 10,
                        " to the year 17");
  };
  Rng rng(spec.seed);
  Dataset ds{"greater-than", {}};
  for (int64_t i = 0, tries = 0; i < spec.n_prompts; ++tries) {
    if (tries > 100 * spec.n_prompts + 1000) {
      return absl::FailedPreconditionError(
          "greater-than: the tokenizer does not split \"17YY\" as \"17\" + \"YY\"");
    }
    const std::string& noun = kNouns[Uniform(rng, 0, kNouns.size())];
    int yy = static_cast<int>(Uniform(rng, 2, 99));
    if (year_token[yy] < 0) continue;
    Prompt p;
    p.text = text(noun, yy);
    p.tokens = WithBos(cfg, tok->Encode(p.text));
    p.corrupted_tokens = WithBos(cfg, tok->Encode(text(noun, 1)));
    // The year's own "YY" token must appear, so that 17YY is "17" + "YY".
    if (p.tokens.size() != p.corrupted_tokens.size() ||
        std::find(p.tokens.begin(), p.tokens.end(), year_token[yy]) == p.tokens.end()) {
      continue;
    }
    for (int y = 0; y < 100; ++y) {
      if (year_token[y] < 0) continue;
      (y > yy ? p.answers : p.wrongs).push_back(year_token[y]);
    }
    p.origin = absl::StrCat("greater-than #", i);
    ds.prompts.push_back(std::move(p));
    ++i;
  }
  return ds;
}

// A JSONL field that is text (tokenized) or ids.
absl::StatusOr<std::vector<int64_t>> TokensField(const nlohmann::json& j, const char* text_key,
                                                 const char* ids_key,
                                                 const HookedTransformerConfig& cfg,
                                                 const Tokenizer* tok, bool* present) {
  *present = true;
  if (auto it = j.find(ids_key); it != j.end()) {
    if (!it->is_array() || it->empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", ids_key, "\" must be a non-empty array of ids"));
    }
    std::vector<int64_t> ids;
    for (const auto& v : *it) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= cfg.d_vocab) {
        return absl::InvalidArgumentError(absl::StrCat(
            "\"", ids_key, "\" has ", v.dump(), ", not a token id in [0, ", cfg.d_vocab, ")"));
      }
      ids.push_back(v.get<int64_t>());
    }
    return ids;
  }
  if (auto it = j.find(text_key); it != j.end()) {
    if (!it->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("\"", text_key, "\" must be a string"));
    }
    if (tok == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "\"", text_key, "\" is text: it needs tokenizer files (or give \"", ids_key, "\")"));
    }
    return WithBos(cfg, tok->Encode(it->get<std::string>()));
  }
  *present = false;
  return std::vector<int64_t>{};
}

absl::StatusOr<int64_t> SingleTokenField(const nlohmann::json& j, const char* key,
                                         const HookedTransformerConfig& cfg, const Tokenizer* tok) {
  auto it = j.find(key);
  if (it == j.end()) return absl::InvalidArgumentError(absl::StrCat("missing \"", key, "\""));
  if (it->is_number_integer()) {
    int64_t id = it->get<int64_t>();
    if (id < 0 || id >= cfg.d_vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", key, "\" id ", id, " is outside the vocabulary"));
    }
    return id;
  }
  if (!it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat("\"", key, "\" must be text or a token id"));
  }
  if (tok == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("\"", key, "\" is text: it needs tokenizer files"));
  }
  auto id = tok->ToSingleToken(it->get<std::string>());
  if (!id.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("\"", key, "\": ", id.status().message()));
  }
  return *id;
}

// "answer": one token (text or id), or "answers": a non-empty array of them.
absl::StatusOr<std::vector<int64_t>> TokenSetField(const nlohmann::json& j, const char* one,
                                                   const char* many,
                                                   const HookedTransformerConfig& cfg,
                                                   const Tokenizer* tok) {
  auto it = j.find(many);
  if (it == j.end()) {
    LG_ASSIGN_OR_RETURN(int64_t id, SingleTokenField(j, one, cfg, tok));
    return std::vector<int64_t>{id};
  }
  if (!it->is_array() || it->empty()) {
    return absl::InvalidArgumentError(absl::StrCat("\"", many, "\" must be a non-empty array"));
  }
  std::vector<int64_t> ids;
  for (const auto& v : *it) {
    nlohmann::json wrapper = {{one, v}};
    LG_ASSIGN_OR_RETURN(int64_t id, SingleTokenField(wrapper, one, cfg, tok));
    ids.push_back(id);
  }
  return ids;
}

absl::StatusOr<Prompt> ParseJsonlPrompt(const std::string& line, const HookedTransformerConfig& cfg,
                                        const Tokenizer* tok) {
  absl::StatusOr<nlohmann::json> parsed = ParseJsonBounded(line, "the line");
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a JSON object (", parsed.status().message(), ")"));
  }
  const nlohmann::json& j = *parsed;
  if (!j.is_object()) {
    return absl::InvalidArgumentError("not a JSON object");
  }
  Prompt p;
  bool present = false;
  LG_ASSIGN_OR_RETURN(p.tokens, TokensField(j, "prompt", "tokens", cfg, tok, &present));
  if (!present) return absl::InvalidArgumentError("needs \"prompt\" (text) or \"tokens\" (ids)");
  LG_ASSIGN_OR_RETURN(p.corrupted_tokens,
                      TokensField(j, "corrupted", "corrupted_tokens", cfg, tok, &present));
  LG_ASSIGN_OR_RETURN(p.answers, TokenSetField(j, "answer", "answers", cfg, tok));
  LG_ASSIGN_OR_RETURN(p.wrongs, TokenSetField(j, "wrong", "wrongs", cfg, tok));
  if (auto it = j.find("loss_start"); it != j.end()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 1 ||
        it->get<int64_t>() >= static_cast<int64_t>(p.tokens.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"loss_start\" must be an integer in [1, ", p.tokens.size(), ")"));
    }
    p.loss_start = it->get<int64_t>();
  }
  if (auto it = j.find("prompt"); it != j.end() && it->is_string()) p.text = it->get<std::string>();
  return p;
}

}  // namespace

bool Dataset::has_corrupted() const {
  return !prompts.empty() && std::all_of(prompts.begin(), prompts.end(), [](const Prompt& p) {
    return !p.corrupted_tokens.empty();
  });
}

int64_t Dataset::max_length() const {
  int64_t n = pad_length;
  for (const auto& p : prompts) n = std::max<int64_t>(n, p.tokens.size());
  return n;
}

absl::StatusOr<Dataset> ParseJsonlDataset(const std::string& text, const std::string& source,
                                          const HookedTransformerConfig& cfg,
                                          const Tokenizer* tok) {
  Dataset ds{source, {}};
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    auto prompt = ParseJsonlPrompt(std::string(line), cfg, tok);
    if (!prompt.ok()) {
      return absl::Status(prompt.status().code(),
                          absl::StrCat(source, ":", line_no, ": ", prompt.status().message()));
    }
    prompt->origin = absl::StrCat(source, ":", line_no);
    ds.prompts.push_back(std::move(*prompt));
  }
  return ds;
}

absl::StatusOr<Dataset> MakeDataset(const DatasetSpec& spec, const HookedTransformerConfig& cfg,
                                    const Tokenizer* tokenizer) {
  if (spec.n_prompts <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("n_prompts must be positive, got ", spec.n_prompts));
  }
  absl::StatusOr<Dataset> ds;
  if (spec.name == "induction") {
    ds = Induction(spec, cfg);
  } else if (spec.name == "ioi") {
    ds = Ioi(spec, cfg, tokenizer);
  } else if (spec.name == "gender-bias") {
    ds = GenderBias(spec, cfg, tokenizer);
  } else if (spec.name == "greater-than") {
    ds = GreaterThan(spec, cfg, tokenizer);
  } else if (absl::EndsWith(spec.name, ".jsonl")) {
    std::ifstream in(spec.name);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read dataset file ", spec.name));
    std::stringstream ss;
    ss << in.rdbuf();
    ds = ParseJsonlDataset(ss.str(), spec.name, cfg, tokenizer);
    if (ds.ok() && static_cast<int64_t>(ds->prompts.size()) > spec.n_prompts) {
      ds->prompts.resize(spec.n_prompts);
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown dataset \"", spec.name,
                     "\" (built-in: induction, ioi, gender-bias, greater-than; or a FILE.jsonl)"));
  }
  if (!ds.ok()) return ds.status();
  if (ds->prompts.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("dataset ", spec.name, " has no prompts"));
  }
  for (const Prompt& p : ds->prompts) {
    if (static_cast<int64_t>(p.tokens.size()) > cfg.n_ctx ||
        static_cast<int64_t>(p.corrupted_tokens.size()) > cfg.n_ctx) {
      return absl::InvalidArgumentError(absl::StrCat(
          p.origin, ": prompt of ", std::max(p.tokens.size(), p.corrupted_tokens.size()),
          " tokens is longer than the model's n_positions (", cfg.n_ctx, ")"));
    }
  }
  return ds;
}

}  // namespace lensgrid
