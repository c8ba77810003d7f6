#include "client/attention_command.h"

#include <CLI/CLI.hpp>
#include <fstream>
#include <memory>
#include <ostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/command_status.h"
#include "client/hub/hub_download.h"
#include "client/report.h"
#include "client/run_command.h"
#include "client/worker_views.h"
#include "common/auth_flags.h"
#include "common/status_macros.h"

namespace lensgrid {
namespace {

absl::StatusOr<WorkerCalls> ConnectWorker(const AttentionFlags& flags) {
  LG_ASSIGN_OR_RETURN(std::shared_ptr<WorkerClient> client,
                      WorkerClient::Connect(flags.worker, {.transport = flags.transport}));
  LG_RETURN_IF_ERROR(client->WaitUntilReady(absl::Seconds(30)));
  WorkerCalls calls;
  LG_ASSIGN_OR_RETURN(calls.info, client->GetModelInfo());
  if (calls.info.processed() == flags.no_processing) {
    return absl::FailedPreconditionError(
        absl::StrCat("the worker at ", flags.worker, " serves ",
                     calls.info.processed() ? "processed" : "unprocessed", " weights; ",
                     flags.no_processing ? "drop" : "add", " --no-processing"));
  }
  calls.tokenize = [client](const v1::TokenizeRequest& r) { return client->Tokenize(r); };
  calls.detokenize = [client](const v1::DetokenizeRequest& r) { return client->Detokenize(r); };
  calls.run_with_cache = [client](const v1::RunWithCacheRequest& r) {
    return client->RunWithCache(r);
  };
  return calls;
}

absl::StatusOr<HeadList> Heads(const AttentionFlags& flags, int layer, int n_heads) {
  HeadList heads;
  if (flags.heads.empty()) {
    for (int h = 0; h < n_heads; ++h) heads.emplace_back(layer, h);
    return heads;
  }
  for (absl::string_view item : absl::StrSplit(flags.heads, ',')) {
    int h;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(item), &h) || h < -n_heads || h >= n_heads) {
      return absl::InvalidArgumentError(
          absl::StrCat("--heads: \"", item, "\" is not a head in [0, ", n_heads, ")"));
    }
    heads.emplace_back(layer, h < 0 ? h + n_heads : h);
  }
  return heads;
}

}  // namespace

absl::Status WriteAttentionPage(const AttentionFlags& flags, const WorkerCalls& worker,
                                std::ostream& out) {
  const v1::ModelConfig& cfg = worker.info.config();
  const int n_layers = static_cast<int>(cfg.n_layers());
  const int layer = flags.layer < 0 ? flags.layer + n_layers : flags.layer;
  if (layer < 0 || layer >= n_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("--layer ", flags.layer, ": the model has ", n_layers, " layers"));
  }
  LG_ASSIGN_OR_RETURN(HeadList heads, Heads(flags, layer, static_cast<int>(cfg.n_heads())));
  std::vector<int64_t> ids;
  if (!flags.prompt.empty()) {
    v1::TokenizeRequest tokenize;
    tokenize.add_texts(flags.prompt);
    tokenize.set_prepend_bos(!flags.no_bos);
    LG_ASSIGN_OR_RETURN(v1::TokenizeResponse tokens, worker.tokenize(tokenize));
    ids.assign(tokens.tokens(0).ids().begin(), tokens.tokens(0).ids().end());
  } else {
    LG_ASSIGN_OR_RETURN(ids, ParseTokenList(flags.tokens));
  }
  v1::InlinePrompt prompt;
  prompt.mutable_tokens()->Add(ids.begin(), ids.end());
  LG_ASSIGN_OR_RETURN(RunReply reply, worker.run_with_cache(PatternRequest(prompt, heads, "")));
  std::vector<std::string> str_tokens;
  if (worker.info.has_tokenizer()) {
    v1::DetokenizeRequest detok;
    detok.mutable_ids()->Add(ids.begin(), ids.end());
    LG_ASSIGN_OR_RETURN(v1::DetokenizeResponse response, worker.detokenize(detok));
    str_tokens.assign(response.str_tokens().begin(), response.str_tokens().end());
  }
  ReportInput page;
  LG_ASSIGN_OR_RETURN(page.attention,
                      AttentionViewsFromTensors(reply.tensors, heads, ids, str_tokens));
  page.title = absl::StrCat("lensgrid attention: layer ", layer);
  page.result = {{"model",
                  {{"dir", worker.info.model_dir()},
                   {"weights_sha256", worker.info.weights_sha256()},
                   {"processed", worker.info.processed()}}},
                 {"layer", layer},
                 {"tokens", ids.size()}};
  std::ofstream file(flags.output, std::ios::binary | std::ios::trunc);
  file << RenderReportHtml(page);
  file.close();
  if (!file) return absl::InternalError(absl::StrCat("cannot write ", flags.output));
  out << "wrote " << flags.output << " (" << heads.size() << " heads, "
      << std::min(ids.size(), kMaxAttentionTokens) << " tokens)\n";
  return absl::OkStatus();
}

int RunAttentionCommand(int argc, char** argv, std::ostream& out, std::ostream& err,
                        const OpenWorkerInProcess& in_process) {
  CLI::App app{"One layer's attention patterns as an HTML page", "lensgrid attention"};
  AttentionFlags flags;
  auto* model = app.add_option("--model", flags.model_dir,
                               "model dir or name (loaded in this process); with --worker, unused");
  app.add_flag("--offline", flags.offline, "never download a model name");
  app.add_option("--worker", flags.worker, "ask the worker at HOST:PORT");
  AddClientTransportFlags(&app, &flags.transport);
  auto* prompt = app.add_option("--prompt", flags.prompt, "text (BOS is prepended)");
  auto* tokens = app.add_option("--tokens", flags.tokens, "ids, e.g. 5,17,300 (taken as given)");
  prompt->excludes(tokens);
  app.add_option("--layer", flags.layer, "the layer (negative from the end)")->required();
  app.add_option("--heads", flags.heads, "heads to show, e.g. 0,3 (default: all)");
  app.add_option("--output", flags.output, "the page to write (.html)")->required();
  app.add_flag("--no-bos", flags.no_bos, "do not prepend BOS to --prompt");
  app.add_flag("--no-processing", flags.no_processing, "Hugging Face weights as they are");
  app.add_option("--device", flags.device, "cpu | cuda | cuda:N (in this process)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e, out, err);
  }
  if (flags.prompt.empty() && flags.tokens.empty()) {
    err << "lensgrid attention: give --prompt TEXT or --tokens IDS\n";
    return 2;
  }
  if (flags.worker.empty() && model->count() == 0) {
    err << "lensgrid attention: give --model DIR (or --worker HOST:PORT)\n";
    return 2;
  }
  if (flags.worker.empty() && !in_process) {
    err << "lensgrid attention: without --worker it runs in lensgrid-local (the executable with "
           "LibTorch, beside lensgrid)\n";
    return 2;
  }
  if (flags.worker.empty()) {
    if (absl::Status s = hub::ResolveModelFlag(&flags.model_dir, flags.offline, &err); !s.ok()) {
      return ReportCommandStatus("attention", s, err);
    }
  }
  absl::StatusOr<WorkerCalls> worker =
      flags.worker.empty() ? in_process(flags) : ConnectWorker(flags);
  if (!worker.ok()) return ReportCommandStatus("attention", worker.status(), err);
  return ReportCommandStatus("attention", WriteAttentionPage(flags, *worker, out), err);
}

}  // namespace lensgrid
