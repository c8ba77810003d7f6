#include "client/run_command.h"

#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <iomanip>
#include <ostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/command_status.h"
#include "client/hub/hub_download.h"
#include "client/run_remote.h"
#include "common/status_macros.h"
#include "worker/model/cpu_threads.h"
#include "worker/model/hooked_transformer.h"
#include "worker/model/tensor_io.h"
#include "worker/model/tokenizer/tokenizer.h"

namespace lensgrid {
namespace {

struct RunFlags {
  std::string model_dir;
  std::string prompt;
  std::string tokens;
  bool no_processing = false;
  bool no_bos = false;
  std::vector<std::string> cache_regexes;
  std::optional<int> stop_at_layer;
  std::string output;
  std::string device = "cpu";
  int threads = 0;
  std::string worker;  // HOST:PORT: run there instead of in this process
  bool offline = false;
};

std::string ShapeString(at::IntArrayRef s) {
  return absl::StrCat("[", absl::StrJoin(s, ", "), "]");
}

absl::StatusOr<RunData> RunLocal(const RunFlags& flags, std::ostream& out) {
  ConfigureCpuThreads(flags.threads);
  LoadOptions load;
  if (flags.no_processing) load.processing = ProcessingOptions::None();
  load.device = flags.device;
  LG_ASSIGN_OR_RETURN(auto model, HookedTransformer::FromPretrained(flags.model_dir, load));
  for (const auto& name : model->load_report().unknown_tensors) {
    out << "warning: unused tensor in checkpoint: " << name << "\n";
  }

  // A tokenizer is needed for text, and only nice-to-have for ids.
  absl::StatusOr<std::shared_ptr<Tokenizer>> tokenizer = LoadTokenizerForModel(flags.model_dir);
  RunData data;
  std::vector<int64_t>& ids = data.ids;
  if (!flags.prompt.empty()) {
    if (!tokenizer.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("--prompt needs tokenizer files: ", tokenizer.status().message(),
                       " (or pass ids with --tokens)"));
    }
    if (!flags.no_bos) ids.push_back(model->cfg().bos_token_id);
    std::vector<int64_t> text_ids = (*tokenizer)->Encode(flags.prompt);
    ids.insert(ids.end(), text_ids.begin(), text_ids.end());
  } else {
    LG_ASSIGN_OR_RETURN(ids, ParseTokenList(flags.tokens));
  }

  ForwardInput input;
  input.tokens = torch::tensor(ids, torch::kInt64).unsqueeze(0);
  ForwardOptions options;
  options.return_type = ids.size() >= 2 ? ForwardReturn::kBoth : ForwardReturn::kLogits;
  options.stop_at_layer = flags.stop_at_layer;
  CacheOptions cache_options;
  cache_options.regexes = flags.cache_regexes;
  ActivationCache cache;
  RunOutput result;
  if (flags.cache_regexes.empty()) {
    LG_ASSIGN_OR_RETURN(result, model->Run(input, options));
  } else {
    LG_ASSIGN_OR_RETURN(result, model->RunWithCache(input, options, cache_options, &cache));
  }
  data.model_dir = flags.model_dir;
  data.weights_sha256 = model->load_report().weights_sha256;
  data.processed = model->processed();
  data.n_layers = model->cfg().n_layers;
  data.n_heads = model->cfg().n_heads;
  data.d_model = model->cfg().d_model;
  if (result.logits.defined()) data.logits = result.logits.to(torch::kFloat32);
  data.loss = result.loss;
  for (const auto& [name, t] : cache.entries()) data.cache.emplace_back(name, t);
  if (tokenizer.ok()) {
    std::shared_ptr<Tokenizer> tok = *tokenizer;
    data.str_tokens = [tok](const std::vector<int64_t>& ids) { return tok->ToStrTokens(ids); };
  }
  return data;
}

absl::Status Report(const RunFlags& flags, const RunData& data, std::ostream& out) {
  const std::vector<int64_t>& ids = data.ids;
  out << "model: " << data.model_dir << " (" << data.n_layers << " layers, " << data.n_heads
      << " heads, d_model " << data.d_model << (data.processed ? ", processed" : ", unprocessed")
      << ")\n";
  if (!flags.worker.empty()) out << "worker: " << flags.worker << "\n";
  out << "tokens (" << ids.size() << "): " << absl::StrJoin(ids, ",") << "\n";
  if (data.str_tokens) {
    LG_ASSIGN_OR_RETURN(auto strs, data.str_tokens(ids));
    std::vector<std::string> quoted;
    for (const auto& s : strs) quoted.push_back(QuoteTokenText(s));
    out << "str_tokens: " << absl::StrJoin(quoted, " ") << "\n";
  }
  if (data.loss.defined()) {
    out << "loss: " << std::fixed << std::setprecision(4) << data.loss.item<double>() << "\n";
  } else if (!data.logits.defined()) {
    out << "stopped before layer " << *flags.stop_at_layer << ": no logits or loss\n";
  } else {
    out << "loss: n/a (needs at least 2 tokens)\n";
  }
  if (data.logits.defined()) {
    torch::Tensor last = data.logits[0][-1].to(torch::kCPU);
    torch::Tensor probs = torch::softmax(last.to(torch::kFloat64), -1);
    auto top = probs.topk(std::min<int64_t>(5, probs.size(0)));
    std::vector<int64_t> top_ids;
    for (int64_t i = 0; i < std::get<1>(top).size(0); ++i) {
      top_ids.push_back(std::get<1>(top)[i].item<int64_t>());
    }
    absl::StatusOr<std::vector<std::string>> top_strs =
        data.str_tokens ? data.str_tokens(top_ids)
                        : absl::StatusOr<std::vector<std::string>>(absl::UnavailableError(""));
    out << "top-5 next tokens:\n";
    for (size_t i = 0; i < top_ids.size(); ++i) {
      int64_t id = top_ids[i];
      out << "  " << std::setw(6) << id << "  p=" << std::setprecision(4)
          << std::get<0>(top)[i].item<double>() << "  logit=" << last[id].item<double>();
      if (top_strs.ok()) out << "  " << QuoteTokenText((*top_strs)[i]);
      out << "\n";
    }
  }
  if (!flags.cache_regexes.empty()) {
    out << "cached (" << data.cache.size() << "):\n";
    for (const auto& [name, t] : data.cache) {
      out << "  " << name << " " << ShapeString(t.sizes()) << "\n";
    }
  }
  if (!flags.output.empty()) {
    NamedTensors tensors;
    if (data.logits.defined()) tensors.emplace_back("logits", data.logits);
    for (const auto& [name, t] : data.cache) tensors.emplace_back(name, t);
    LG_RETURN_IF_ERROR(WriteTensorFile(flags.output, tensors,
                                       {{"model_dir", data.model_dir},
                                        {"weights_sha256", data.weights_sha256},
                                        {"processed", data.processed ? "true" : "false"},
                                        {"tokens", absl::StrJoin(ids, ",")}}));
    out << "wrote " << flags.output << " (" << tensors.size() << " tensors)\n";
  }
  return absl::OkStatus();
}

absl::Status Execute(const RunFlags& flags, std::ostream& out) {
  absl::StatusOr<RunData> data;
  if (flags.worker.empty()) {
    data = RunLocal(flags, out);
  } else {
    RemoteRunRequest request;
    request.worker = flags.worker;
    request.model_dir = flags.model_dir;
    request.prompt = flags.prompt;
    if (flags.prompt.empty()) {
      LG_ASSIGN_OR_RETURN(request.tokens, ParseTokenList(flags.tokens));
    }
    request.no_bos = flags.no_bos;
    request.no_processing = flags.no_processing;
    request.cache_regexes = flags.cache_regexes;
    request.stop_at_layer = flags.stop_at_layer;
    data = RunRemote(request);
  }
  LG_RETURN_IF_ERROR(data.status());
  return Report(flags, *data, out);
}

}  // namespace

absl::StatusOr<std::vector<int64_t>> ParseTokenList(const std::string& text) {
  std::vector<int64_t> ids;
  int index = 0;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    absl::string_view trimmed = absl::StripAsciiWhitespace(item);
    int64_t id;
    if (!absl::SimpleAtoi(trimmed, &id) || id < 0) {
      return absl::InvalidArgumentError(absl::StrCat("--tokens item ", index, " (\"", trimmed,
                                                     "\") is not a non-negative integer id"));
    }
    ids.push_back(id);
    ++index;
  }
  if (ids.empty()) return absl::InvalidArgumentError("--tokens is empty");
  return ids;
}

std::string QuoteTokenText(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    switch (c) {
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += absl::StrCat("\\x", absl::Hex(c, absl::kZeroPad2));
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  return out + "\"";
}

int RunRunCommand(int argc, char** argv, std::ostream& out, std::ostream& err) {
  CLI::App app{"Run a model dir once, in this process", "lensgrid run"};
  RunFlags flags;
  auto* model = app.add_option("--model", flags.model_dir,
                               "model dir (config.json, model.safetensors) or name (gpt2, "
                               "ORG/NAME[@REV]: from the Hub's cache, pulled if absent); "
                               "with --worker, optional: checked against the worker's weights");
  app.add_flag("--offline", flags.offline,
               "never download: a model name must be in the cache (also LENSGRID_OFFLINE=1)");
  app.add_option("--worker", flags.worker, "run on the worker at HOST:PORT");
  auto* prompt = app.add_option("--prompt", flags.prompt, "text (BOS is prepended)");
  auto* tokens = app.add_option("--tokens", flags.tokens, "ids, e.g. 5,17,300 (taken as given)");
  prompt->excludes(tokens);
  app.add_flag("--no-processing", flags.no_processing,
               "Hugging Face weights as they are (no fold_ln / centering)");
  app.add_flag("--no-bos", flags.no_bos, "do not prepend BOS to --prompt");
  app.add_option("--cache", flags.cache_regexes, "cache hook names matching REGEX (repeatable)");
  app.add_option("--stop-at-layer", flags.stop_at_layer, "run blocks [0, N) only");
  app.add_option("--output", flags.output, "write logits and cached activations (.safetensors)");
  app.add_option("--device", flags.device, "cpu | cuda | cuda:N");
  app.add_option("--threads", flags.threads, "CPU threads for matmuls (default: all)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e, out, err);
  }
  if (flags.worker.empty() && model->count() == 0) {
    err << "lensgrid run: give --model DIR (or --worker HOST:PORT)\n";
    return 2;
  }
  if (flags.prompt.empty() && flags.tokens.empty()) {
    err << "lensgrid run: give --prompt TEXT or --tokens IDS\n";
    return 2;
  }
  if (absl::Status s = hub::ResolveModelFlag(&flags.model_dir, flags.offline, &err); !s.ok()) {
    return ReportCommandStatus("run", s, err);
  }
  return ReportCommandStatus("run", Execute(flags, out), err);
}

}  // namespace lensgrid
