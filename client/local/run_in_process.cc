#include "client/local/run_in_process.h"

#include <torch/torch.h>

#include <memory>
#include <ostream>

#include "absl/strings/str_cat.h"
#include "client/local/local_worker.h"
#include "client/local/torch_convert.h"
#include "client/program_json.h"
#include "common/status_macros.h"
#include "worker/model/cpu_threads.h"
#include "worker/model/hooked_transformer.h"
#include "worker/model/tokenizer/tokenizer.h"

namespace lensgrid {
namespace {

// A run with hook programs: the worker's own core in this process, with the
// request a remote run sends (client/run_remote.h), so both run the same code.
absl::StatusOr<RunData> RunProgramsInThisProcess(const RunFlags& flags) {
  RemoteRunRequest request;
  request.cache_regexes = flags.cache_regexes;
  request.stop_at_layer = flags.stop_at_layer;
  LG_ASSIGN_OR_RETURN(request.programs, ReadProgramsJson(flags.program_file));
  LG_ASSIGN_OR_RETURN(LocalWorker worker,
                      OpenLocalWorker(flags.model_dir, flags.device, flags.no_processing));
  std::vector<int64_t> ids;
  if (!flags.prompt.empty()) {
    v1::TokenizeRequest tokenize;
    tokenize.add_texts(flags.prompt);
    tokenize.set_prepend_bos(!flags.no_bos);
    LG_ASSIGN_OR_RETURN(v1::TokenizeResponse tokens, worker.calls.tokenize(tokenize));
    ids.assign(tokens.tokens(0).ids().begin(), tokens.tokens(0).ids().end());
  } else {
    LG_ASSIGN_OR_RETURN(ids, ParseTokenList(flags.tokens));
  }
  LG_ASSIGN_OR_RETURN(RunReply reply,
                      worker.run_with_interventions(ProgramRunRequest(request, ids)));
  LG_ASSIGN_OR_RETURN(RunData data, RunDataFromReply(worker.calls.info, flags.model_dir,
                                                     reply.header, std::move(reply.tensors)));
  if (worker.calls.info.has_tokenizer()) {
    auto detokenize = worker.calls.detokenize;
    data.str_tokens =
        [detokenize](const std::vector<int64_t>& ids) -> absl::StatusOr<std::vector<std::string>> {
      v1::DetokenizeRequest detok;
      detok.mutable_ids()->Add(ids.begin(), ids.end());
      LG_ASSIGN_OR_RETURN(v1::DetokenizeResponse response, detokenize(detok));
      return std::vector<std::string>(response.str_tokens().begin(), response.str_tokens().end());
    };
  }
  return data;
}

}  // namespace

absl::StatusOr<RunData> RunInThisProcess(const RunFlags& flags, std::ostream& out) {
  ConfigureCpuThreads(flags.threads);
  if (!flags.program_file.empty()) return RunProgramsInThisProcess(flags);
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
  if (result.logits.defined()) {
    LG_ASSIGN_OR_RETURN(data.logits, TorchToWire("logits", result.logits.to(torch::kFloat32)));
  }
  if (result.loss.defined()) data.loss = result.loss.item<double>();
  for (const auto& [name, t] : cache.entries()) {
    LG_ASSIGN_OR_RETURN(WireTensor wire, TorchToWire(name, t));
    data.cache.push_back(std::move(wire));
  }
  if (tokenizer.ok()) {
    std::shared_ptr<Tokenizer> tok = *tokenizer;
    data.str_tokens = [tok](const std::vector<int64_t>& ids) { return tok->ToStrTokens(ids); };
  }
  return data;
}

}  // namespace lensgrid
