#include "worker/model/config.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/json_limits.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace lensgrid {
namespace {

absl::Status FieldError(absl::string_view source, absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": field \"", field, "\" ", what));
}

// Reads a positive integer from the first of `names` that is present.
absl::StatusOr<int64_t> PositiveInt(const nlohmann::json& j,
                                    std::initializer_list<const char*> names,
                                    absl::string_view source) {
  for (const char* name : names) {
    auto it = j.find(name);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_number_integer() || it->get<int64_t>() <= 0) {
      return FieldError(source, name, absl::StrCat("must be a positive integer, got ", it->dump()));
    }
    return it->get<int64_t>();
  }
  return FieldError(source, *names.begin(), "is missing");
}

}  // namespace

absl::string_view ActivationName(Activation act) {
  switch (act) {
    case Activation::kGeluNew:
      return "gelu_new";
    case Activation::kGelu:
      return "gelu";
    case Activation::kRelu:
      return "relu";
  }
  return "gelu_new";
}

absl::StatusOr<HookedTransformerConfig> ParseHfConfig(absl::string_view json_text,
                                                      absl::string_view source) {
  LG_ASSIGN_OR_RETURN(nlohmann::json j, ParseJsonBounded(json_text, source));
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  }
  if (auto it = j.find("model_type");
      it != j.end() && it->is_string() && it->get<std::string>() != "gpt2") {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": model_type \"", it->get<std::string>(),
                     "\" is not supported (only GPT-2-family \"gpt2\")"));
  }
  HookedTransformerConfig cfg;
  auto n_layer = PositiveInt(j, {"n_layer", "num_hidden_layers"}, source);
  auto n_head = PositiveInt(j, {"n_head", "num_attention_heads"}, source);
  auto n_embd = PositiveInt(j, {"n_embd", "hidden_size"}, source);
  auto n_pos = PositiveInt(j, {"n_positions", "n_ctx"}, source);
  auto vocab = PositiveInt(j, {"vocab_size"}, source);
  for (const auto* s : {&n_layer, &n_head, &n_embd, &n_pos, &vocab}) {
    if (!s->ok()) return s->status();
  }
  cfg.n_layers = *n_layer;
  cfg.n_heads = *n_head;
  cfg.d_model = *n_embd;
  cfg.n_ctx = *n_pos;
  cfg.d_vocab = *vocab;
  if (cfg.d_model % cfg.n_heads != 0) {
    return FieldError(
        source, "n_embd",
        absl::StrCat("(", cfg.d_model, ") is not divisible by n_head (", cfg.n_heads, ")"));
  }
  cfg.d_head = cfg.d_model / cfg.n_heads;
  cfg.d_mlp = 4 * cfg.d_model;
  if (auto it = j.find("n_inner"); it != j.end() && !it->is_null()) {
    auto inner = PositiveInt(j, {"n_inner"}, source);
    if (!inner.ok()) return inner.status();
    cfg.d_mlp = *inner;
  }
  if (auto it = j.find("layer_norm_epsilon"); it != j.end()) {
    if (!it->is_number() || it->get<double>() <= 0) {
      return FieldError(source, "layer_norm_epsilon", "must be a positive number");
    }
    cfg.eps = it->get<double>();
  }
  if (auto it = j.find("activation_function"); it != j.end()) {
    std::string act = it->is_string() ? it->get<std::string>() : it->dump();
    if (act == "gelu_new" || act == "gelu_pytorch_tanh") {
      cfg.act_fn = Activation::kGeluNew;
    } else if (act == "gelu") {
      cfg.act_fn = Activation::kGelu;
    } else if (act == "relu") {
      cfg.act_fn = Activation::kRelu;
    } else {
      return FieldError(source, "activation_function",
                        absl::StrCat("\"", act, "\" is not supported (gelu_new, gelu, relu)"));
    }
  }
  for (auto [field, target] : {std::pair{"bos_token_id", &cfg.bos_token_id},
                               std::pair{"eos_token_id", &cfg.eos_token_id}}) {
    auto it = j.find(field);
    if (it == j.end() || it->is_null()) {
      *target = cfg.d_vocab - 1;
      continue;
    }
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() >= cfg.d_vocab) {
      return FieldError(source, field,
                        absl::StrCat("must be a token id below vocab_size ", cfg.d_vocab));
    }
    *target = it->get<int64_t>();
  }
  if (auto it = j.find("lensgrid_attn_only"); it != j.end() && it->is_boolean()) {
    cfg.attn_only = it->get<bool>();
  }
  return cfg;
}

absl::StatusOr<HookedTransformerConfig> LoadModelConfig(const std::string& model_dir) {
  std::string path = model_dir + "/config.json";
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read ", path, " (a model dir needs config.json)"));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseHfConfig(ss.str(), path);
}

absl::StatusOr<HookedTransformerConfig> ModelConfigPreset(absl::string_view name) {
  HookedTransformerConfig cfg;
  if (name == "gpt2" || name == "gpt2-small") {
    return cfg;
  }
  struct Size {
    const char* name;
    int64_t layers, heads, d_model;
  };
  for (const Size& s : {Size{"gpt2-medium", 24, 16, 1024}, Size{"gpt2-large", 36, 20, 1280},
                        Size{"gpt2-xl", 48, 25, 1600}}) {
    if (name == s.name) {
      cfg.n_layers = s.layers;
      cfg.n_heads = s.heads;
      cfg.d_model = s.d_model;
      cfg.d_head = s.d_model / s.heads;
      cfg.d_mlp = 4 * s.d_model;
      return cfg;
    }
  }
  return absl::NotFoundError(
      absl::StrCat("unknown model preset \"", name,
                   "\" (known: gpt2, gpt2-small, gpt2-medium, gpt2-large, gpt2-xl)"));
}

std::string ModelConfigToHfJson(const HookedTransformerConfig& cfg) {
  nlohmann::ordered_json j;
  j["model_type"] = "gpt2";
  j["architectures"] = {"GPT2LMHeadModel"};
  j["n_layer"] = cfg.n_layers;
  j["n_head"] = cfg.n_heads;
  j["n_embd"] = cfg.d_model;
  j["n_inner"] = cfg.d_mlp;
  j["n_positions"] = cfg.n_ctx;
  j["n_ctx"] = cfg.n_ctx;
  j["vocab_size"] = cfg.d_vocab;
  j["layer_norm_epsilon"] = cfg.eps;
  j["activation_function"] = std::string(ActivationName(cfg.act_fn));
  j["bos_token_id"] = cfg.bos_token_id;
  j["eos_token_id"] = cfg.eos_token_id;
  if (cfg.attn_only) j["lensgrid_attn_only"] = true;
  return j.dump(2) + "\n";
}

}  // namespace lensgrid
