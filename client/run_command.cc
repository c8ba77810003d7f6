#include "client/run_command.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <numeric>
#include <ostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/command_status.h"
#include "client/hub/hub_download.h"
#include "client/program_json.h"
#include "client/run_remote.h"
#include "client/wire_values.h"
#include "common/auth_flags.h"
#include "common/safetensors.h"
#include "common/status_macros.h"

namespace lensgrid {
namespace {

std::string ShapeString(const std::vector<int64_t>& s) {
  return absl::StrCat("[", absl::StrJoin(s, ", "), "]");
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
  if (data.loss.has_value()) {
    out << "loss: " << std::fixed << std::setprecision(4) << *data.loss << "\n";
  } else if (!data.logits.has_value()) {
    out << "stopped before layer " << *flags.stop_at_layer << ": no logits or loss\n";
  } else {
    out << "loss: n/a (needs at least 2 tokens)\n";
  }
  if (data.logits.has_value()) {
    const WireTensor& logits = *data.logits;
    if (logits.shape.size() != 3 || logits.shape[1] < 1 || logits.shape[2] < 1) {
      return absl::InternalError(
          absl::StrCat("logits have shape ", ShapeString(logits.shape), ", not [1, pos, vocab]"));
    }
    LG_ASSIGN_OR_RETURN(std::vector<double> values, WireToDoubles(logits));
    // The last position of the first row, and its softmax in double precision.
    const int64_t vocab = logits.shape[2];
    const std::vector<double> last(values.begin() + (logits.shape[1] - 1) * vocab,
                                   values.begin() + logits.shape[1] * vocab);
    const double max = *std::max_element(last.begin(), last.end());
    double sum = 0;
    for (double x : last) sum += std::exp(x - max);
    std::vector<int64_t> top_ids(last.size());
    std::iota(top_ids.begin(), top_ids.end(), 0);
    const size_t k = std::min<size_t>(5, top_ids.size());
    std::partial_sort(top_ids.begin(), top_ids.begin() + k, top_ids.end(),
                      [&last](int64_t a, int64_t b) {
                        return last[a] > last[b] || (last[a] == last[b] && a < b);
                      });
    top_ids.resize(k);
    absl::StatusOr<std::vector<std::string>> top_strs =
        data.str_tokens ? data.str_tokens(top_ids)
                        : absl::StatusOr<std::vector<std::string>>(absl::UnavailableError(""));
    out << "top-5 next tokens:\n";
    for (size_t i = 0; i < top_ids.size(); ++i) {
      int64_t id = top_ids[i];
      out << "  " << std::setw(6) << id << "  p=" << std::setprecision(4)
          << std::exp(last[id] - max) / sum << "  logit=" << last[id];
      if (top_strs.ok()) out << "  " << QuoteTokenText((*top_strs)[i]);
      out << "\n";
    }
  }
  if (!flags.cache_regexes.empty()) {
    out << "cached (" << data.cache.size() << "):\n";
    for (const WireTensor& t : data.cache) {
      out << "  " << t.name << " " << ShapeString(t.shape) << "\n";
    }
  }
  if (!data.saved.empty()) {
    out << "saved (" << data.saved.size() << "):\n";
    for (const WireTensor& t : data.saved) {
      out << "  " << t.name.substr(std::strlen("saved:")) << " " << ShapeString(t.shape);
      absl::StatusOr<std::vector<double>> values = WireToDoubles(t);
      if (values.ok() && values->size() <= 8) out << " = " << absl::StrJoin(*values, ", ");
      out << "\n";
    }
  }
  if (!flags.output.empty()) {
    std::vector<SafetensorsTensorView> tensors;
    auto add = [&tensors](const std::string& name, const WireTensor& t) {
      tensors.push_back({name, t.dtype, t.shape, t.data.data(), t.data.size()});
    };
    if (data.logits.has_value()) add("logits", *data.logits);
    for (const WireTensor& t : data.cache) add(t.name, t);
    for (const WireTensor& t : data.saved) add(t.name, t);
    LG_RETURN_IF_ERROR(WriteSafetensors(flags.output, tensors,
                                        {{"model_dir", data.model_dir},
                                         {"weights_sha256", data.weights_sha256},
                                         {"processed", data.processed ? "true" : "false"},
                                         {"tokens", absl::StrJoin(ids, ",")}}));
    out << "wrote " << flags.output << " (" << tensors.size() << " tensors)\n";
  }
  return absl::OkStatus();
}

absl::Status Execute(const RunFlags& flags, const RunInProcess& in_process, std::ostream& out) {
  absl::StatusOr<RunData> data;
  if (flags.worker.empty()) {
    data = in_process(flags, out);
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
    request.transport = flags.transport;
    if (!flags.program_file.empty()) {
      LG_ASSIGN_OR_RETURN(request.programs, ReadProgramsJson(flags.program_file));
    }
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

int RunRunCommand(int argc, char** argv, std::ostream& out, std::ostream& err,
                  const RunInProcess& in_process) {
  CLI::App app{"Run a model dir once, in this process", "lensgrid run"};
  RunFlags flags;
  auto* model = app.add_option(
      "--model", flags.model_dir,
      "model dir (config.json, model.safetensors or a sharded checkpoint) or name (gpt2, "
      "ORG/NAME[@REV]: from the Hub's cache, pulled if absent); "
      "with --worker, optional: checked against the worker's weights");
  app.add_flag("--offline", flags.offline,
               "never download: a model name must be in the cache (also LENSGRID_OFFLINE=1)");
  app.add_option("--worker", flags.worker, "run on the worker at HOST:PORT");
  AddClientTransportFlags(&app, &flags.transport);
  auto* prompt = app.add_option("--prompt", flags.prompt, "text (BOS is prepended)");
  auto* tokens = app.add_option("--tokens", flags.tokens, "ids, e.g. 5,17,300 (taken as given)");
  prompt->excludes(tokens);
  app.add_flag("--no-processing", flags.no_processing,
               "Hugging Face weights as they are (no fold_ln / centering)");
  app.add_flag("--no-bos", flags.no_bos, "do not prepend BOS to --prompt");
  app.add_option("--cache", flags.cache_regexes, "cache hook names matching REGEX (repeatable)");
  app.add_option("--stop-at-layer", flags.stop_at_layer, "run blocks [0, N) only");
  app.add_option("--output", flags.output, "write logits and cached activations (.safetensors)");
  app.add_option("--program", flags.program_file,
                 "hook programs to run, as JSON (HookProgram, a list of them, or "
                 "{\"programs\": [...]}; proto/lensgrid/v1/program.proto)");
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
  if (flags.worker.empty() && !in_process) {
    err << "lensgrid run: a run without --worker runs in lensgrid-local (the executable with "
           "LibTorch, beside lensgrid)\n";
    return 2;
  }
  if (absl::Status s = hub::ResolveModelFlag(&flags.model_dir, flags.offline, &err); !s.ok()) {
    return ReportCommandStatus("run", s, err);
  }
  return ReportCommandStatus("run", Execute(flags, in_process, out), err);
}

}  // namespace lensgrid
